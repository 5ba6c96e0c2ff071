# SPDX-License-Identifier: GPL-2.0-or-later
"""
Synthetic tests of lpdebug.symbols: the alias rules (kallsyms' for vmlinux,
symtab order for modules), module ranges without symbols, label symbols of
size 0, and caching. Against a real kernel the Symbolizer is checked through
every tracefs enabled_functions line (tests/test_ftrace_testbed.py).
"""

import drgn
import pytest

from lpdebug.kernel import invalidate
from lpdebug.symbols import Symbolizer
from synthetic import MockKernel, define_list_head

pytestmark = pytest.mark.synthetic

TEXT = 0xC000000000010000
MOD = 0xC008000000100000
WEAK, LOCAL, GLOBAL = drgn.SymbolBinding.WEAK, drgn.SymbolBinding.LOCAL, drgn.SymbolBinding.GLOBAL


def kernel_with_module():
    mk = MockKernel()
    define_list_head(mk)
    mk.struct("module_memory", [("void *", "base"), ("unsigned int", "size")])
    mk.struct("module", [("struct list_head", "list"), ("char [56]", "name"), ("struct module_memory [2]", "mem")])
    mk.constant("MOD_MEM_NUM_TYPES", "int", 2)
    head = mk.variable("modules", "struct list_head")
    mk.list_init(head)
    mod = mk.new("struct module")
    mk.write(mod + 16, b"lpd_victim\0")
    mk.set(mod, "struct module", "mem[0].base", MOD)
    mk.set(mod, "struct module", "mem[0].size", 0x1000)
    mk.list_add_tail(head, mod)
    mk.symbol("_text", 0xC000000000000000, 0, kind=drgn.SymbolKind.UNKNOWN)
    mk.symbol("_end", 0xC000000001000000, 0, kind=drgn.SymbolKind.UNKNOWN)
    return mk


def test_vmlinux_aliases_follow_kallsyms_synthetic():
    mk = kernel_with_module()
    # A __weak function and its .localalias: kallsyms sorts weak symbols last.
    mk.symbol("elfcorehdr_read", TEXT, 0x40, binding=WEAK)
    mk.symbol("elfcorehdr_read.localalias", TEXT, 0x40, binding=LOCAL)
    # A linker-script name and fewer leading underscores.
    mk.symbol("__start_mcount_loc", TEXT + 0x100, 0, kind=drgn.SymbolKind.UNKNOWN)
    mk.symbol("__func_b", TEXT + 0x100, 0x20)
    mk.symbol("_func_b", TEXT + 0x100, 0x20)
    sym = Symbolizer(mk.prog)
    assert sym.name_of(TEXT + 4) == "elfcorehdr_read.localalias"
    assert sym.name_of(TEXT + 0x104) == "_func_b"
    info = sym.lookup(TEXT + 0x104)
    assert (info.address, info.offset, info.size, info.module) == (TEXT + 0x100, 4, 0x20, None)


def test_module_aliases_keep_the_local_symbol_synthetic():
    mk = kernel_with_module()
    # module_init() makes init_module a global alias of the static init function.
    mk.symbol("init_module", MOD + 0x80, 0x40, binding=GLOBAL)
    mk.symbol("lpd_victim_init", MOD + 0x80, 0x40, binding=LOCAL)
    sym = Symbolizer(mk.prog)
    assert sym.lookup(MOD + 0x90).name == "lpd_victim_init"
    assert sym.lookup(MOD + 0x90).module == "lpd_victim"


def test_module_ranges_and_label_symbols_synthetic():
    mk = kernel_with_module()
    mk.symbol("lpd_victim_work", MOD + 0x100, 0x30)
    mk.symbol("livepatch_handler", TEXT + 0x200, 0, kind=drgn.SymbolKind.UNKNOWN)  # an assembly label
    mk.symbol("next_func", TEXT + 0x264, 0x10)
    sym = Symbolizer(mk.prog)
    # Module memory without a symbol (stubs, freed init text) still has its module.
    assert sym.lookup(MOD + 0x10) is None and sym.module_of(MOD + 0x10) == "lpd_victim"
    # Past a sized symbol's end but inside the module, before the next symbol: kallsyms would
    # name it after that symbol; lpdebug does not (code of an overridden weak function).
    assert sym.lookup(MOD + 0x200) is None and sym.module_of(MOD + 0x200) == "lpd_victim"
    assert sym.nearest(MOD + 0x200).name == "lpd_victim_work"
    assert sym.describe(MOD + 0x200) == "lpd_victim_work+0x100 (past end) [lpd_victim]"
    # A return address right at the end (after a final call) still belongs to it.
    assert sym.lookup(MOD + 0x130).name == "lpd_victim_work"
    assert sym.module_of(MOD + 0x2000) is None  # past the module's memory
    # A size-0 label covers up to the next symbol, as kallsyms reports it.
    info = sym.lookup(TEXT + 0x230)
    assert (info.name, info.offset, info.size) == ("livepatch_handler", 0x30, 0x64)
    assert sym.describe(TEXT + 0x230) == "livepatch_handler+0x30"
    assert sym.describe(MOD + 0x104) == "lpd_victim_work+0x4 [lpd_victim]"
    # Outside vmlinux and every module: nothing, whatever symbol precedes it.
    assert sym.lookup(0xC000000010000000) is None


def test_nearest_each_answers_as_nearest_does_synthetic():
    mk = kernel_with_module()
    mk.symbol("lpd_victim_work", MOD + 0x100, 0x30)
    mk.symbol("livepatch_handler", TEXT + 0x200, 0, kind=drgn.SymbolKind.UNKNOWN)
    mk.symbol("next_func", TEXT + 0x264, 0x10)
    mk.symbol("last_func", 0xC000000000FFFF00, 0)  # a label up to the image's end
    sym = Symbolizer(mk.prog)
    # Every case of nearest(): before any symbol, inside a sized symbol, at its end, past it,
    # a size-0 label, module memory without a symbol, past the module, outside every image.
    addrs = [0x10, TEXT - 4, TEXT + 0x200, TEXT + 0x230, TEXT + 0x264, TEXT + 0x274, TEXT + 0x300,
             0xC000000000FFFF10, 0xC000000010000000, MOD + 0x10, MOD + 0x104, MOD + 0x130,
             MOD + 0x200, MOD + 0x2000]
    for order in (sorted(addrs), sorted(addrs, reverse=True), addrs[::3] + addrs[1::3] + addrs[2::3]):
        assert sym.nearest_each(order) == [sym.nearest(a) for a in order]
    assert any(sym.nearest(a) is None for a in addrs) and any(sym.nearest(a) for a in addrs)


def test_built_once_per_program_and_invalidated_synthetic():
    mk = kernel_with_module()
    mk.symbol("func_a", TEXT, 0x40)
    first = Symbolizer(mk.prog)
    assert Symbolizer(mk.prog) is first
    mk.symbol("func_late", TEXT + 0x400, 0x40)
    assert first.name_of(TEXT + 0x404) is None  # stale table until invalidated
    assert first.nearest(TEXT + 0x404).name == "func_a"
    invalidate(mk.prog)
    assert Symbolizer(mk.prog).name_of(TEXT + 0x404) == "func_late"


def test_unreadable_module_list_is_reported_synthetic():
    mk = kernel_with_module()
    from synthetic import FAULT_ADDRESS

    mk.write_int(mk.prog["modules"].address_, FAULT_ADDRESS)
    sym = Symbolizer(mk.prog)
    assert any("unreadable" in e for e in sym.errors)
    assert sym.module_of(MOD + 0x10) is None
