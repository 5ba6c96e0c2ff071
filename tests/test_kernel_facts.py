# SPDX-License-Identifier: GPL-2.0-or-later
"""
The one home of what lpdebug keeps on a Program (lpdebug.kernel): every
cached fact lives under one key and :func:`lpdebug.kernel.invalidate` drops
them all in one call (gdb calls it between commands, target.load_debug_info
after loading more debug info), while the program state (segments added,
warnings) survives it. Checked on the bundled real capture, and on synthetic
kernels for the facts a real one cannot change under us (a type appearing, a
module symbol appearing).
"""

import shutil

import pytest

import lpdebug
from lpdebug import backtrace, errors, ftrace, kernel, sample, target
from lpdebug.symbols import Symbolizer
from synthetic import MockKernel
from test_symbols import TEXT, kernel_with_module


@pytest.mark.fixtures
def test_one_cache_one_invalidation_on_the_sample():
    prog = sample.open_sample()
    lpdebug.triage(prog)
    ours = {key for key in prog.cache if isinstance(key, str) and key.startswith("lpdebug")}
    assert ours == {kernel._FACTS_KEY, kernel._STATE_KEY}, sorted(prog.cache)
    facts = prog.cache[kernel._FACTS_KEY]
    # The facts the analyses share: the Symbolizer, the backtrace context that
    # holds it, the ftrace flag tables and the type facts.
    assert ("lpdebug.symbols", "Symbolizer") in facts
    assert ("lpdebug.backtrace", "context") in facts
    assert ("lpdebug.ftrace", "record_flag_bits") in facts
    old_symbolizer = Symbolizer(prog)
    old_context = backtrace._context(prog, None)
    assert old_context.symbolizer is old_symbolizer

    kernel.invalidate(prog)
    assert kernel._FACTS_KEY not in prog.cache
    assert kernel._STATE_KEY in prog.cache  # the warnings and segments stay

    new_symbolizer = Symbolizer(prog)
    assert new_symbolizer is not old_symbolizer
    # The stale Symbolizer bug: the backtrace context followed the invalidation.
    assert backtrace._context(prog, None).symbolizer is new_symbolizer
    assert ftrace.record_flag_bits(prog) == facts[("lpdebug.ftrace", "record_flag_bits")]


@pytest.mark.fixtures
def test_drgn_refuses_another_kernels_vmlinux_and_both_ids_are_named():
    paths = sample.fixture_paths(sample.sample_dir())
    other = shutil.which("true")  # any ELF file with another build ID
    expected = target.file_build_id(paths["vmlinux"])
    actual = target.file_build_id(other)
    assert expected and actual and actual != expected
    with pytest.raises(errors.BuildIdMismatch) as info:
        target.open_vmcore(paths["vmcore"], [other], default_debug_info=False)
    assert info.value.expected == expected and info.value.actual == actual


@pytest.mark.synthetic
def test_invalidate_recomputes_type_facts_synthetic():
    mk = MockKernel()
    assert not kernel.has_type(mk.prog, "struct klp_patch")
    assert not kernel.has_livepatch(mk.prog)
    mk.struct("klp_patch", [("int", "enabled")])
    assert not kernel.has_livepatch(mk.prog)  # kept until invalidated
    kernel.invalidate(mk.prog)
    assert kernel.has_type(mk.prog, "struct klp_patch")
    assert kernel.has_livepatch(mk.prog)


@pytest.mark.synthetic
def test_backtrace_context_never_outlives_its_symbolizer_synthetic():
    mk = kernel_with_module()
    mk.symbol("func_a", TEXT, 0x40)
    ctx = backtrace._context(mk.prog, None)
    assert ctx.symbolizer is Symbolizer(mk.prog)
    assert backtrace._context(mk.prog, None) is ctx
    mk.symbol("func_late", TEXT + 0x400, 0x40)
    kernel.invalidate(mk.prog)
    ctx = backtrace._context(mk.prog, None)
    assert ctx.symbolizer is Symbolizer(mk.prog)
    assert ctx.symbolizer.lookup(TEXT + 0x404).name == "func_late"


@pytest.mark.synthetic
def test_unknown_mmu_is_not_kept_synthetic():
    # cur_cpu_spec unreadable at first (as on a hash-MMU kernel before the
    # linear map is served): the answer is unknown, and asked again later.
    mk = MockKernel()
    assert kernel.mmu(mk.prog) is None
    mk.struct("cpu_spec", [("unsigned long", "cpu_features"), ("unsigned int", "mmu_features")])
    spec = mk.new("struct cpu_spec", mmu_features=kernel.MMU_FTR_TYPE_RADIX)
    mk.write_int(mk.variable("cur_cpu_spec", "struct cpu_spec *"), spec)
    assert kernel.mmu(mk.prog) == "radix"
