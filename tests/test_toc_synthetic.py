# SPDX-License-Identifier: GPL-2.0-or-later
"""
Synthetic tests of module TOC recovery: mock kernels with the struct layouts
of other kernel versions (sect_attrs names before 5.8, mod->arch.toc before
4.19, PC-relative kernels without TOCs), and a module whose text disagrees
with its sections, which no testbed kernel has.
"""

from __future__ import annotations

import struct

import drgn
import pytest

from lpdebug.model import DiagnosticKind
from lpdebug.toc import VMLINUX, ModuleToc, TocMap, module_toc, module_tocs, prologue_toc
from synthetic import MockKernel, define_list_head

pytestmark = pytest.mark.synthetic


def _kernel(*, arch_members, new_attr_names=True, nsect=3):
    mk = MockKernel(arena_size=1 << 18)
    define_list_head(mk)
    mk.struct("attribute", [("char *", "name")])
    mk.struct("bin_attribute", [("struct attribute", "attr"), ("unsigned long", "size")])
    mk.struct("module_attribute", [("struct attribute", "attr")])
    if new_attr_names:
        mk.struct("module_sect_attr", [("struct bin_attribute", "battr"),
                                       ("unsigned long", "address")])
    else:
        mk.struct("module_sect_attr", [("struct module_attribute", "mattr"), ("char *", "name"),
                                       ("unsigned long", "address")])
    mk.struct("module_sect_attrs", [("unsigned int", "nsections"),
                                    (f"struct module_sect_attr [{nsect}]", "attrs")])
    mk.struct("mod_arch_specific", arch_members)
    # include/uapi/linux/elf.h Elf64_Sym; mod_kallsyms as in 5.2 and later (typetab)
    mk.struct("elf64_sym", [("unsigned int", "st_name"), ("unsigned char", "st_info"),
                            ("unsigned char", "st_other"), ("unsigned short", "st_shndx"),
                            ("unsigned long", "st_value"), ("unsigned long", "st_size")])
    mk.struct("mod_kallsyms", [("struct elf64_sym *", "symtab"), ("unsigned int", "num_symtab"),
                               ("char *", "strtab"), ("char *", "typetab")])
    mk.struct("module", [("struct list_head", "list"), ("char [56]", "name"),
                         ("struct module_sect_attrs *", "sect_attrs"),
                         ("struct mod_arch_specific", "arch"),
                         ("struct mod_kallsyms *", "kallsyms")])
    head = mk.variable("modules", "struct list_head")
    mk.list_init(head)
    return mk, head


ARCH_612 = [("unsigned int", "stubs_section"), ("unsigned int", "toc_section"),
            ("bool", "toc_fixed"), ("unsigned long", "tramp")]


def _module(mk, head, name, sections, *, new_attr_names=True):
    mod = mk.alloc("struct module")
    mk.write(mod + drgn.offsetof(mk.type("struct module"), "name"), name.encode() + b"\0")
    attrs = mk.new("struct module_sect_attrs", nsections=len(sections))
    attr_size = drgn.sizeof(mk.type("struct module_sect_attr"))
    first = attrs + drgn.offsetof(mk.type("struct module_sect_attrs"), "attrs")
    for i, (section, address) in enumerate(sections):
        member = "battr.attr.name" if new_attr_names else "name"
        mk.set(first + i * attr_size, "struct module_sect_attr", member, mk.string(section))
        mk.set(first + i * attr_size, "struct module_sect_attr", "address", address)
    mk.set(mod, "struct module", "sect_attrs", attrs)
    mk.list_add_tail(head, mod)
    return mod


def _obj(mk, mod):
    return drgn.Object(mk.prog, mk.type("struct module *"), mod)


def test_synthetic_toc_from_the_toc_section_masked_plus_0x8000():
    mk, head = _kernel(arch_members=ARCH_612)
    mod = _module(mk, head, "m", [(".text", 0xC008000000010000), (".toc", 0xC008000000018A38),
                                  (".stubs", 0xC008000000017000)])
    toc = module_toc(_obj(mk, mod))
    assert (toc.module, toc.toc, toc.source) == ("m", 0xC008000000020A00, ".toc")


def test_synthetic_toc_from_stubs_without_toc_and_old_attribute_names():
    mk, head = _kernel(arch_members=ARCH_612, new_attr_names=False, nsect=2)
    mod = _module(mk, head, "m", [(".text", 0xC008000000010000), (".stubs", 0xC0080000000170C8)],
                  new_attr_names=False)
    toc = module_toc(_obj(mk, mod))
    assert (toc.toc, toc.source) == (0xC00800000001F000, ".stubs")


def test_synthetic_old_kernels_keep_the_toc_in_arch_toc():
    mk, head = _kernel(arch_members=[("unsigned int", "stubs_section"),
                                     ("unsigned int", "toc_section"), ("unsigned long", "toc")])
    mod = _module(mk, head, "m", [(".toc", 0xC008000000018A38)])
    mk.set(mod, "struct module", "arch.toc", 0xC008000000020A38)
    toc = module_toc(_obj(mk, mod))
    assert (toc.toc, toc.source) == (0xC008000000020A38, "arch.toc")


def test_synthetic_pcrel_kernel_modules_have_no_toc():
    mk, head = _kernel(arch_members=[("unsigned int", "stubs_section"),
                                     ("unsigned int", "got_section"),
                                     ("unsigned int", "pcpu_section")])
    mod = _module(mk, head, "m", [(".stubs", 0xC008000000017000)])
    toc = module_toc(_obj(mk, mod))
    assert toc.toc is None and "PC-relative" in toc.reason


def test_synthetic_module_without_toc_or_stubs_section():
    mk, head = _kernel(arch_members=ARCH_612, nsect=1)
    mod = _module(mk, head, "m", [(".text", 0xC008000000010000)])
    toc = module_toc(_obj(mk, mod))
    assert toc.toc is None and "neither" in toc.reason


def _prologue(mk, gep, toc):
    delta = toc - gep
    lo = delta & 0xFFFF
    hi = ((delta - (lo - 0x10000 if lo & 0x8000 else lo)) >> 16) & 0xFFFF
    mk.write_int(gep, 0x3C4C0000 | hi, 4)
    mk.write_int(gep + 4, 0x38420000 | lo, 4)


@pytest.mark.parametrize("toc_delta", [0x18A38, 0x19000 - 0x10, -0x2468, 0x8000])
def test_synthetic_prologue_decoding_with_sign_extension(toc_delta):
    mk = MockKernel()
    gep = mk.alloc(16)
    _prologue(mk, gep, gep + toc_delta)
    assert prologue_toc(mk.prog, gep) == gep + toc_delta


def test_synthetic_no_prologue_is_none():
    mk = MockKernel()
    gep = mk.alloc(16)
    mk.write_int(gep, 0x7C0802A6, 4)  # mflr r0
    assert prologue_toc(mk.prog, gep) is None


def _symtab(mk, functions):
    strtab = b"\0" + b"".join(n.encode() + b"\0" for n, _ in functions)
    str_address = mk.alloc(len(strtab), align=8)
    mk.write(str_address, strtab)
    sym_address = mk.alloc(24 * len(functions), align=8)
    offset = 1
    for i, (name, address) in enumerate(functions):
        mk.write(sym_address + 24 * i, struct.pack("<IBBHQQ", offset, 2, 0, 1, address, 0x40))
        offset += len(name) + 1
    return mk.new("struct mod_kallsyms", symtab=sym_address, num_symtab=len(functions),
                  strtab=str_address)


def test_synthetic_prologue_cross_check_reports_disagreement():
    mk, head = _kernel(arch_members=ARCH_612, nsect=1)
    text = mk.alloc(0x100)
    toc_section = mk.alloc(0x100, align=256)
    mod = _module(mk, head, "m", [(".toc", toc_section)])
    _prologue(mk, text, toc_section + 0x8000)
    _prologue(mk, text + 0x40, toc_section + 0x8000 + 0x100)  # a text that disagrees
    mk.set(mod, "struct module", "kallsyms", _symtab(mk, [("good", text), ("bad", text + 0x40)]))
    tocs = module_tocs(mk.prog)
    entry = tocs.tocs["m"]
    assert entry.toc == toc_section + 0x8000 and entry.prologues_checked == 2
    assert entry.prologue_function == "good"
    assert entry.prologue_mismatches == [("bad", text + 0x40, toc_section + 0x8100)]
    assert tocs.tocs[VMLINUX].toc is None and tocs.tocs[VMLINUX].reason


def test_synthetic_toc_map_both_ways():
    tocs = TocMap({VMLINUX: ModuleToc(VMLINUX, 0x1000, "paca"), "m": ModuleToc("m", 0x2000, ".toc"),
                   "pcrel": ModuleToc("pcrel", None, None, reason="none")})
    assert tocs.toc_of(None) == 0x1000 and tocs.toc_of("m") == 0x2000
    assert tocs.toc_of("pcrel") is None and tocs.toc_of("absent") is None
    assert tocs.toc_owner(0x2000) == "m" and tocs.toc_owner(0x3000) is None
    assert tocs.toc_owner(None) is None


def test_synthetic_non_ppc64_target_has_no_tocs():
    mk = MockKernel(arch=drgn.Architecture.X86_64)
    tocs = module_tocs(mk.prog)
    assert list(tocs) == [] and "not ppc64" in tocs.diagnostics[0].message
    assert tocs.diagnostics[0].kind is DiagnosticKind.UNSUPPORTED
