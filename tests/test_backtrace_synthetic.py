# SPDX-License-Identifier: GPL-2.0-or-later
"""
Synthetic tests of true-backtrace resolution and frame annotation: plain
values and mock kernels for what no testbed kernel shows (ELFv1 big-endian
TOC save slots, a livepatch caller whose saved LR was hooked by the graph
tracer, stacks that disagree with their shadow stacks, faulting reads).
"""

from __future__ import annotations

import pytest

from lpdebug.backtrace import cpu_stop, frame_at, resolve_return_addresses
from lpdebug.checks import cpu_exemption
from lpdebug.model import DiagnosticKind, FgraphEntry, LivepatchStackEntry
from synthetic import ARENA_BASE, FAULT_ADDRESS, MockKernel

pytestmark = pytest.mark.synthetic

RTH = 0xC00000000003C3C8
LPH = 0xC00000000003C354  # livepatch_handler
LPH_RET = LPH + 0x30


def _in_lph(pc):
    return LPH <= pc < LPH + 0x64


def _fg(*pairs):
    return [FgraphEntry(index=i, ret=r, func=0, retp=p, address=0x9000 + 32 * i)
            for i, (r, p) in enumerate(pairs)]


def _lp(lr, toc=0x7000):
    return LivepatchStackEntry(address=0x8000, toc=toc, lr=lr, real_lr=lr, magic=0x57AC6E9D,
                               magic_ok=True)


def test_synthetic_fgraph_and_livepatch_resolution_in_stack_order():
    # __switch_to <- [__schedule hooked] <- C (replacement, caller hooked)
    # <- A hidden by livepatch_handler, whose saved LR was hooked too <- kthread
    physical = [(0x100, 0x1000, False), (RTH, 0x1100, False), (0x300, 0x1200, False),
                (RTH, 0x1300, False), (0x500, 0x1400, False)]
    ret_stack = _fg((0xA0A0, 0x1300), (LPH_RET, 0x1300), (0x200, 0x1100))
    lp = [_lp(RTH)]
    errors = []
    resolved = resolve_return_addresses(physical, ret_stack, lp, RTH, _in_lph, True, errors)
    assert errors == []
    assert [(r.pc, r.source) for r in resolved] == [
        (0x100, "unwound"), (0x200, "fgraph"), (0x300, "unwound"), (0xA0A0, "livepatch"),
        (0x500, "unwound")]
    assert resolved[1].fgraph_entry == 0x9000 + 64
    assert resolved[3].livepatch_entry == 0 and lp[0].real_lr == 0xA0A0


def test_synthetic_kth_livepatch_frame_takes_kth_entry_from_the_top():
    physical = [(0x100, 0x1000, False), (LPH_RET, 0x1100, False), (0x300, 0x1200, False),
                (LPH_RET, 0x1300, False)]
    lp = [_lp(0xBBB0), _lp(0xAAA0)]  # oldest first
    resolved = resolve_return_addresses(physical, [], lp, RTH, _in_lph, True, [])
    assert [(r.pc, r.livepatch_entry) for r in resolved[1::2]] == [(0xAAA0, 1), (0xBBB0, 0)]


def test_synthetic_unmatched_shadow_entries_are_reported_and_no_frame_invented():
    physical = [(0x100, 0x1000, False), (RTH, 0x1100, False), (LPH_RET, 0x1200, False)]
    errors = []
    resolved = resolve_return_addresses(physical, _fg((0x200, 0x9999)), [], RTH, _in_lph,
                                        True, errors)
    assert len(resolved) == 3
    assert resolved[1].pc == RTH and resolved[2].pc == LPH_RET
    assert "no ret_stack entry for retp 0x1100" in errors[0].message
    assert "no entry left" in errors[1].message
    assert [(e.stage, e.kind, e.address) for e in errors] == [
        ("tasks", DiagnosticKind.CORRUPT, 0x1100), ("tasks", DiagnosticKind.CORRUPT, 0x1200)]


def test_synthetic_leftover_livepatch_entries_are_reported():
    errors = []
    resolve_return_addresses([(0x100, 0x1000, False)], [], [_lp(0xAAA0)], RTH, _in_lph, True,
                             errors)
    assert "match no frame" in errors[0].message and errors[0].kind is DiagnosticKind.CORRUPT


def test_synthetic_interrupted_pc_is_never_replaced():
    resolved = resolve_return_addresses([(RTH, 0x1000, True)], _fg((0x200, 0x1000)), [], RTH,
                                        _in_lph, True, [])
    assert (resolved[0].pc, resolved[0].source) == (RTH, "unwound")


def _text_kernel(little_endian, restore):
    mk = MockKernel(little_endian=little_endian)
    text = mk.alloc(0x100)
    mk.symbol("a_caller", text, 0x100)
    mk.write_int(text + 0x20, restore, 4)
    mk.write_int(text + 0x24, 0x60000000, 4)
    return mk, text


@pytest.mark.parametrize("little_endian, restore, slot_offset", [
    (True, 0xE8410018, 24),   # ELFv2: ld r2,24(r1)
    (False, 0xE8410028, 40),  # ELFv1: ld r2,40(r1)
])
def test_synthetic_toc_slot_offsets_by_abi(little_endian, restore, slot_offset):
    mk, text = _text_kernel(little_endian, restore)
    sp = mk.alloc(0x100)
    mk.write_int(sp + slot_offset, 0xC000000001234000)
    mk.write_int(sp + (64 - slot_offset), 0xBAD)  # the other ABI's slot
    frame = frame_at(mk.prog, 3, text + 0x20, sp)
    assert frame.toc_restore and frame.symbol == "a_caller" and frame.offset == 0x20
    assert frame.toc_slot == 0xC000000001234000 and frame.toc_slot_address == sp + slot_offset
    other = frame_at(mk.prog, 3, text + 0x24, sp)
    assert not other.toc_restore and other.toc_slot is None


def test_synthetic_other_abis_restore_is_not_a_restore():
    mk, text = _text_kernel(False, 0xE8410018)  # ELFv2's instruction in an ELFv1 kernel
    assert not frame_at(mk.prog, 1, text + 0x20, mk.alloc(64)).toc_restore


def test_synthetic_faulting_reads_become_errors():
    mk, text = _text_kernel(True, 0xE8410018)
    errors = []
    frame = frame_at(mk.prog, 2, FAULT_ADDRESS, ARENA_BASE, errors=errors)
    assert not frame.toc_restore and "unreadable" in errors[0].message
    assert (errors[0].kind, errors[0].address) == (DiagnosticKind.UNREADABLE, FAULT_ADDRESS)
    errors = []
    frame = frame_at(mk.prog, 2, text + 0x20, FAULT_ADDRESS, errors=errors)
    assert frame.toc_restore and frame.toc_slot is None and "TOC save slot" in errors[0].message
    assert errors[0].kind is DiagnosticKind.UNREADABLE


def _exemption_kernel():
    mk = MockKernel()
    text = mk.alloc(0x400, align=0x100)
    mk.symbol("_stext", text, 0)
    mk.symbol("_text", text, 0)
    mk.symbol("__end_soft_masked", text + 0x100, 0)
    mk.symbol("ftrace_caller", text + 0x100, 0x40)
    mk.symbol("with_toc", text + 0x200, 0x40)
    mk.write_int(text + 0x200, 0x3C4C0001, 4)  # addis r2,r12,1
    mk.write_int(text + 0x204, 0x38428000, 4)  # addi r2,r2,-0x8000
    mk.write_int(text + 0x210, 0xE8410018, 4)  # ld r2,24(r1)
    mk.write_int(text + 0x214, 0x60000000, 4)
    mk.symbol("without_toc", text + 0x300, 0x40)
    mk.write_int(text + 0x300, 0x7C0802A6, 4)  # mflr r0
    mk.symbol("_end", text + 0x400, 0)
    return mk, text


@pytest.mark.parametrize("offset, msr, reason", [
    (0x214, 1 << 14, "user mode"),
    (0x040, 0, "exception entry/exit"),
    (0x120, 0, "trampoline ftrace_caller"),
    (0x200, 0, "global-entry prologue"),
    (0x204, 0, "global-entry prologue"),
    (0x210, 0, "at a TOC restore"),
    (0x308, 0, "without_toc has no TOC prologue"),
    (0x208, 0, None),
    (0x214, 0, None),
])
def test_synthetic_crashed_cpu_exemptions(offset, msr, reason):
    mk, text = _exemption_kernel()
    got = cpu_exemption(cpu_stop(mk.prog, text + offset, msr))
    if reason is None:
        assert got is None
    else:
        assert got is not None and reason in got
