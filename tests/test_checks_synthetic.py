# SPDX-License-Identifier: GPL-2.0-or-later
"""
Synthetic tests of the findings rules (a)-(d): model objects made up here
(the checks never read a target), for states no testbed kernel reaches:
wrong TOCs in livepatch stacks of every call shape, unidentifiable
replacements, exempt and non-exempt crashed CPUs, corrupt shadow stacks.
"""

from __future__ import annotations

import pytest

from lpdebug.checks import (all_findings, check_crashed_cpus, check_frames,
                            check_livepatch_stack, check_shadow_stacks, check_tocs, cpu_exemption)
from lpdebug.model import (CpuStop, Diagnostic, DiagnosticKind, Frame, KlpFunc, KlpObject, KlpPatch, LivepatchStack,
                           LivepatchStackEntry, LivepatchState, TaskTrace)
from lpdebug.toc import VMLINUX, ModuleToc, TocMap

pytestmark = pytest.mark.synthetic

KTOC, VICTIM_TOC, PATCH_TOC = 0xC000000001500000, 0xC00800000006E600, 0xC00800000003B900
MAGIC = 0x57AC6E9D

TOCS = TocMap({VMLINUX: ModuleToc(VMLINUX, KTOC, "paca"),
               "victim": ModuleToc("victim", VICTIM_TOC, ".toc"),
               "patch": ModuleToc("patch", PATCH_TOC, ".toc")})


def _frame(index, pc, image, *, sp=None, offset=0x10, restore=False, slot=None, lp=None,
           symbol="f"):
    sp = sp if sp is not None else 0x1000 + 0x40 * index
    return Frame(index=index, pc=pc, sp=sp, symbol=symbol, offset=offset,
                 module=None if image == VMLINUX else image, source="livepatch" if lp is not None
                 else "unwound", raw_pc=pc, toc_restore=restore, toc_slot=slot,
                 image=image, toc_slot_address=sp + 24 if slot is not None else None,
                 livepatch_entry=lp)


def _trace(frames, *, entries=(), **kw):
    lp = LivepatchStack(base=0x100, sp=0x100 + 24 * len(entries), entries=list(entries))
    return TaskTrace(pid=48, comm="t", state="D", patch_state=-1, address=0x5000,
                     frames=frames, livepatch_stack=lp, **kw)


def _entry(toc, lr, magic=MAGIC):
    return LivepatchStackEntry(address=0x100, toc=toc, lr=lr, real_lr=lr, magic=magic,
                               magic_ok=magic == MAGIC)


def _state(new_addr=0xC008000000031018, old_module="victim", new_size=0x40):
    func = KlpFunc(address=1, name="victim_work", sympos=1, old_addr=0xC008000000064000,
                   new_addr=new_addr, new_symbol="victim_work_patch", new_module="patch",
                   old_module=old_module, old_size=0x40, new_size=new_size, patched=True,
                   transition=False, nop=False)
    obj = KlpObject(address=2, name=old_module, loaded=True, patched=True, dynamic=False,
                    funcs=[func])
    return LivepatchState(patches=[KlpPatch(address=3, name="p", module="patch", enabled=True,
                                            transition=False, replace=False, forced=False,
                                            objects=[obj])])


# --- (a) ------------------------------------------------------------------------


def test_synthetic_frame_rule_flags_a_wrong_slot_and_only_that():
    good = _frame(1, 0xC008000000064070, "victim", restore=True, slot=VICTIM_TOC)
    bad = _frame(2, 0xC008000000064090, "victim", restore=True, slot=KTOC)
    no_restore = _frame(3, 0xC0080000000640A0, "victim", slot=None)
    (f,) = check_frames(_trace([good, bad, no_restore]), TOCS)
    assert (f.kind, f.pid, f.frame, f.address, f.slot) == (
        "frame_toc_mismatch", 48, 2, bad.pc, bad.sp + 24)
    assert (f.expected_toc, f.expected_module, f.actual_toc, f.actual_module) == (
        VICTIM_TOC, "victim", KTOC, VMLINUX)


def test_synthetic_frame_rule_for_an_interrupted_frame_running_on_its_slot():
    frame = _frame(0, 0xC008000000064080, "victim", slot=0xC00000DEADB00000)
    frame.interrupted, frame.toc_restored_before_pc = True, True
    regs = {"nip": frame.pc, "r1": frame.sp, "r2": 0xC00000DEADB00000, "link": 0, "msr": 0}
    (f,) = check_frames(_trace([frame], cpu_registers=regs), TOCS)
    assert f.kind == "frame_toc_mismatch" and f.actual_module is None
    # r2 no longer equal to the slot: nothing proves the CPU runs on it.
    regs["r2"] = VICTIM_TOC
    assert check_frames(_trace([frame], cpu_registers=regs), TOCS) == []


# --- (b) ------------------------------------------------------------------------


def _lp_trace(entry_toc, *, caller_image="victim", restore=False, new_pc=0xC008000000031048):
    replacement = _frame(0, new_pc, "patch", offset=0x30)
    caller = _frame(1, 0xC008000000064154, caller_image, restore=restore,
                    slot=VICTIM_TOC if restore else None, lp=0)
    return _trace([replacement, caller], entries=[_entry(entry_toc, caller.pc)])


def test_synthetic_livepatch_rule_accepts_the_old_functions_toc():
    assert check_livepatch_stack(_lp_trace(VICTIM_TOC), TOCS, _state()) == []


def test_synthetic_livepatch_rule_flags_another_toc():
    (f,) = check_livepatch_stack(_lp_trace(VICTIM_TOC + 0x10000), TOCS, _state())
    assert (f.kind, f.frame, f.slot, f.address) == (
        "livepatch_stack_toc_mismatch", 1, 0x100, 0xC008000000064000)
    assert (f.expected_toc, f.expected_module, f.actual_toc, f.actual_module) == (
        VICTIM_TOC, "victim", VICTIM_TOC + 0x10000, None)


def test_synthetic_livepatch_rule_cross_module_call_into_vmlinux():
    trace = _lp_trace(KTOC, restore=True)
    assert check_livepatch_stack(trace, TOCS, _state(old_module=None)) == []
    (f,) = check_livepatch_stack(_lp_trace(VICTIM_TOC, restore=True), TOCS,
                                 _state(old_module=None))
    assert f.kind == "livepatch_stack_toc_mismatch" and f.expected_module == VMLINUX


def test_synthetic_livepatch_local_call_from_another_module_is_an_lr_mismatch():
    # The real LR is no TOC restore (a local call), yet it is in vmlinux while
    # the old function is in the victim module.
    kinds = [f.kind for f in check_livepatch_stack(
        _lp_trace(VICTIM_TOC, caller_image=VMLINUX), TOCS, _state())]
    assert kinds == ["livepatch_stack_lr_mismatch"]


def test_synthetic_livepatch_replacement_found_by_function_start_without_size():
    trace = _lp_trace(VICTIM_TOC + 8)
    assert [f.kind for f in check_livepatch_stack(trace, TOCS, _state(new_size=0))] == [
        "livepatch_stack_toc_mismatch"]


def test_synthetic_unidentified_replacement_applies_the_weaker_check():
    no_state = None
    local_ok = check_livepatch_stack(_lp_trace(VICTIM_TOC), TOCS, no_state)
    assert [f.kind for f in local_ok] == ["livepatch_stack_unidentified"]
    assert local_ok[0].severity == "info"
    local_bad = check_livepatch_stack(_lp_trace(KTOC), TOCS, no_state)
    assert [f.kind for f in local_bad] == ["livepatch_stack_unidentified",
                                           "livepatch_stack_toc_mismatch"]
    assert local_bad[1].expected_toc == VICTIM_TOC
    cross_ok = check_livepatch_stack(_lp_trace(KTOC, restore=True), TOCS, no_state)
    assert [f.kind for f in cross_ok] == ["livepatch_stack_unidentified"]
    cross_bad = check_livepatch_stack(_lp_trace(0x1234, restore=True), TOCS, no_state)
    assert [f.kind for f in cross_bad] == ["livepatch_stack_unidentified",
                                           "livepatch_stack_toc_mismatch"]


def test_synthetic_replacement_of_functions_in_two_images_is_unidentified():
    state = _state()
    other = _state(old_module=None).patches[0]
    state.patches.append(other)
    kinds = [f.kind for f in check_livepatch_stack(_lp_trace(VICTIM_TOC), TOCS, state)]
    assert kinds == ["livepatch_stack_unidentified"]


# --- (c) ------------------------------------------------------------------------


def _stop(nip=0xC008000000064080, **facts):
    base = dict(nip=nip, user_mode=False, exception_code=False, trampoline=None,
                module_stub=False, function="f", function_offset=0x20, elf_abi=2,
                at_toc_restore=False, toc_prologue=True)
    base.update(facts)
    return CpuStop(**base)


def _cpu_trace(r2, nip=0xC008000000064080, image="victim", stop=None):
    return TaskTrace(pid=60, comm="c", state="R", patch_state=-1, address=0x6000, on_cpu=1,
                     cpu_registers={"nip": nip, "r1": 0x2000, "r2": r2, "link": 0, "msr": 0},
                     crashed=True, cpu_image=image, cpu_stop=stop or _stop(nip))


def test_synthetic_crashed_cpu_rule():
    assert check_crashed_cpus([_cpu_trace(VICTIM_TOC)], TOCS) == []
    (f,) = check_crashed_cpus([_cpu_trace(0xC00000DEADB00000)], TOCS)
    assert (f.kind, f.pid, f.address, f.expected_toc, f.expected_module, f.actual_toc) == (
        "crashed_cpu_toc_mismatch", 60, 0xC008000000064080, VICTIM_TOC, "victim",
        0xC00000DEADB00000)
    assert check_crashed_cpus([_cpu_trace(KTOC, stop=_stop(module_stub=True))], TOCS) == []
    assert check_crashed_cpus([_cpu_trace(KTOC, image=None)], TOCS) == []


@pytest.mark.parametrize("facts, reason", [
    (dict(user_mode=True), "user mode"),
    (dict(exception_code=True), "exception entry/exit"),
    (dict(trampoline="ftrace_caller"), "trampoline ftrace_caller"),
    (dict(module_stub=True), "module stub"),
    (dict(at_toc_restore=True), "at a TOC restore"),
    (dict(function_offset=4), "global-entry prologue"),
    (dict(toc_prologue=False), "f has no TOC prologue"),
    (dict(toc_prologue=False, elf_abi=1), None),  # ELFv1 functions take r2 from a descriptor
    (dict(at_toc_restore=None, toc_prologue=False), None),  # unread: nothing exempted
    (dict(toc_prologue=None), None),
    ({}, None),
])
def test_synthetic_cpu_exemption_policy(facts, reason):
    got = cpu_exemption(_stop(**facts))
    assert got == reason if reason is None else reason in got


# --- (d) and prologues ---------------------------------------------------------


def test_synthetic_shadow_stack_findings():
    trace = _trace([], entries=[_entry(VICTIM_TOC, 0x1, magic=0xDEAD)])
    trace.livepatch_stack.bounds_error = Diagnostic(
        "tasks", DiagnosticKind.CORRUPT, 0x20, "livepatch_sp is above the task's stack pointer")
    # the kind decides, never the text: an "unreadable" message of a corrupt stack is no fault
    trace.ret_stack_diagnostics = [
        Diagnostic("tasks", DiagnosticKind.CORRUPT, 0x18, "ret_stack inconsistent: unreadable"),
        Diagnostic("tasks", DiagnosticKind.UNREADABLE, 0x10, "ret_stack at 0x10: fault"),
        Diagnostic("tasks", DiagnosticKind.MISSING_DEBUG_INFO, None, "no struct ftrace_ret_stack")]
    kinds = sorted(f.kind for f in check_livepatch_stack(trace, TOCS, None)
                   + check_shadow_stacks(trace))
    assert kinds == ["livepatch_stack_bad_magic", "livepatch_stack_out_of_bounds",
                     "ret_stack_inconsistent", "unreadable_memory"]


def test_synthetic_prologue_mismatch_finding():
    tocs = TocMap({"m": ModuleToc("m", 0x2000, ".toc", prologue_mismatches=[("f", 0x10, 0x2100)])})
    (f,) = check_tocs(tocs)
    assert (f.kind, f.address, f.expected_toc, f.actual_toc) == (
        "toc_prologue_mismatch", 0x10, 0x2000, 0x2100)


def test_synthetic_all_findings_without_tocs_still_checks_shadow_stacks():
    trace = _trace([], entries=[_entry(VICTIM_TOC, 0x1, magic=0)])
    trace.ret_stack_diagnostics = [Diagnostic("tasks", DiagnosticKind.CORRUPT, None,
                                              "ret_stack inconsistent: x")]
    assert [f.kind for f in all_findings(None, [trace], None, None)] == [
        "livepatch_stack_bad_magic", "ret_stack_inconsistent"]
