"""
lpdebug.live on synthetic programs: a task whose task_struct the test
rewrites while it is being read (no real kernel can be made to switch a
task at exactly the moment a reader is between two words), stages that fail
differently or identically on each read, findings a second read does or does
not reproduce. The real thing, a churning guest, is tests/test_live_churn.py.
"""

import drgn
import pytest

from lpdebug import checks, live, model
from lpdebug.model import Diagnostic, DiagnosticKind
from lpdebug.toc import TocMap
from synthetic import MockKernel

pytestmark = pytest.mark.synthetic


def _kernel_with_task(on_cpu=0):
    mk = MockKernel()
    mk.struct("thread_struct", [("unsigned long", "ksp")])
    mk.struct("task_struct", [
        ("int", "pid"), ("unsigned long", "nvcsw"), ("unsigned long", "nivcsw"),
        ("int", "on_cpu"), ("int", "curr_ret_stack"), ("struct thread_struct", "thread"),
    ])
    address = mk.new("struct task_struct", pid=42, nvcsw=7, nivcsw=1, on_cpu=on_cpu,
                     curr_ret_stack=0)
    mk.set(address, "struct task_struct", "thread.ksp", 0xC000000002A0FD00)
    task = drgn.Object(mk.prog, "struct task_struct *", address)
    return mk, task, address


def _trace(address, pc=0xC0000000000178DC):
    trace = model.TaskTrace(pid=42, comm="lpd_lp_victim", state="S", patch_state=1,
                            address=address)
    trace.frames.append(model.Frame(index=0, pc=pc, sp=0xC000000002A0FD00, symbol="__switch_to",
                                    offset=0x2F4, module=None, source="unwound", raw_pc=pc))
    return trace


def test_synthetic_task_that_switches_during_every_read_is_marked_not_checked():
    mk, task, address = _kernel_with_task()
    reads = []

    def walk(t):
        reads.append(1)
        # the task wakes and sleeps again while its stack is read
        mk.set(address, "struct task_struct", "nvcsw", 7 + len(reads))
        return _trace(address)

    trace, diagnostic = live.settled_trace(task, walk)
    assert len(reads) == live.ATTEMPTS
    assert trace.changed_while_reading
    assert diagnostic.kind is DiagnosticKind.CHANGED_WHILE_READING
    assert diagnostic.stage == "tasks" and diagnostic.address == address
    assert "nvcsw" in diagnostic.message and "pid 42" in diagnostic.message
    # what a torn read holds is never checked
    tocs = TocMap()
    bad = _trace(address)
    bad.ret_stack_diagnostics.append(Diagnostic(
        "tasks", DiagnosticKind.CORRUPT, None,
        "ret_stack inconsistent: curr_ret_stack 9 is outside the stack"))
    bad.changed_while_reading = True
    assert checks.all_findings(None, [bad], tocs, None) == []
    bad.changed_while_reading = False
    assert [f.kind for f in checks.all_findings(None, [bad], tocs, None)] == ["ret_stack_inconsistent"]


def test_synthetic_task_that_switched_once_is_read_again_and_kept():
    mk, task, address = _kernel_with_task()
    reads = []

    def walk(t):
        reads.append(1)
        if len(reads) == 1:
            mk.set(address, "struct task_struct", "thread.ksp", 0xC000000002A0FC00)
        return _trace(address)

    trace, diagnostic = live.settled_trace(task, walk)
    assert diagnostic is None and not trace.changed_while_reading
    assert len(reads) == 2


def test_synthetic_task_on_a_cpu_must_read_the_same_twice():
    mk, task, address = _kernel_with_task(on_cpu=1)
    pcs = iter([0x100, 0x100])
    trace, diagnostic = live.settled_trace(task, lambda t: _trace(address, next(pcs)))
    assert diagnostic is None

    pcs = iter(range(0x100, 0x200, 4))
    trace, diagnostic = live.settled_trace(task, lambda t: _trace(address, next(pcs)))
    assert diagnostic is not None and trace.changed_while_reading
    assert "read differently twice" in diagnostic.message


def test_synthetic_exited_task_is_a_stamp_of_none():
    mk, task, address = _kernel_with_task()
    assert live.task_stamp(task) == (7, 1, 0xC000000002A0FD00, 0, 0, None)
    gone = drgn.Object(mk.prog, "struct task_struct *", 0xC0000000DEAD0000)
    assert live.task_stamp(gone) is None


class _Part:
    def __init__(self, diagnostics):
        self.diagnostics = list(diagnostics)


def _stage(reads):
    it = iter(reads)
    return live.settled_stage(lambda: _Part(next(it)), lambda p: list(p.diagnostics),
                              lambda p: p.diagnostics.clear(), "livepatch", 0xC000000001F00000)


def _walk_broke(kind, address, message):
    return Diagnostic("livepatch", kind, address, message)


def test_synthetic_stage_failing_differently_each_read_is_changed_while_reading():
    part, diagnostics = _stage([
        [_walk_broke(DiagnosticKind.UNREADABLE, 0x1, "klp_patches: unreadable list node")],
        [_walk_broke(DiagnosticKind.CYCLE, 0x2, "klp_patches: cycle")],
        [_walk_broke(DiagnosticKind.CORRUPT, None, "klp_patches: NULL link after 3 entries")]])
    assert part.diagnostics == []
    assert [d.kind for d in diagnostics] == [DiagnosticKind.CHANGED_WHILE_READING]
    # where the last walk broke is unknown: the walk's root is named
    assert diagnostics[0].address == 0xC000000001F00000 and "NULL link" in diagnostics[0].message
    assert diagnostics[0].message.startswith("corrupt: ")


def test_synthetic_stage_torn_where_the_walk_broke():
    part, diagnostics = _stage([
        [_walk_broke(DiagnosticKind.CYCLE, 0x2, "klp_patches: cycle")],
        [_walk_broke(DiagnosticKind.UNREADABLE, 0x1, "klp_patches: unreadable list node")],
        [_walk_broke(DiagnosticKind.UNREADABLE, 0x3, "klp_patches: unreadable list node")]])
    assert [(d.kind, d.address) for d in diagnostics] == [
        (DiagnosticKind.CHANGED_WHILE_READING, 0x3)]


def test_synthetic_stage_failing_the_same_each_read_keeps_its_diagnostics():
    cycle = _walk_broke(DiagnosticKind.CYCLE, 0x2, "klp_patches: cycle")
    part, diagnostics = _stage([[cycle]] * live.ATTEMPTS)
    assert part.diagnostics == [cycle] and diagnostics == []


def test_synthetic_stage_read_again_until_clean():
    part, diagnostics = _stage([[_walk_broke(DiagnosticKind.CYCLE, 0x2, "klp_patches: cycle")], []])
    assert part.diagnostics == [] and diagnostics == []


def _finding(pid, slot, kind="frame_toc_mismatch"):
    return model.Finding(kind=kind, severity="error", pid=pid, frame=3, address=0x10,
                         expected_toc=0x20, expected_module="lpd_victim", actual_toc=0x30,
                         actual_module="vmlinux", message="m", slot=slot)


def test_synthetic_findings_kept_only_when_a_second_read_has_them():
    real, torn = _finding(1, 0xA0), _finding(2, 0xB0)
    asked = []

    def reread(pid):
        asked.append(pid)
        return [_finding(1, 0xA0)] if pid == 1 else []

    no_address = _finding(3, None)
    no_address.address = None
    kept, diagnostics = live.reverify_findings([real, torn, no_address], reread,
                                               {3: 0xC000000002A30000})
    assert kept == [real]
    assert [(d.kind, d.address) for d in diagnostics] == [
        (DiagnosticKind.CHANGED_WHILE_READING, 0xB0),
        (DiagnosticKind.CHANGED_WHILE_READING, 0xC000000002A30000)]
    assert asked == [1, 2, 3]


def test_synthetic_moving_is_what_the_opener_said():
    mk = MockKernel()
    assert not live.is_moving(mk.prog)
    live.mark_target(mk.prog, moving=True)
    assert live.is_moving(mk.prog)
    live.mark_target(mk.prog, moving=False)
    assert not live.is_moving(mk.prog)
    assert live.is_live_target(mk.prog)  # a paused guest runs again after the read


def test_synthetic_dump_is_not_a_live_target():
    assert not live.is_live_target(MockKernel().prog)


def _report_stage(moving, reads):
    # report's wrapper around a stage (livepatch, ftrace, the task enumeration): a walk that
    # fails differently on every read of a moving kernel is the kernel moving, on a dump it is
    # the kernel's own state, reported as it is
    from lpdebug import report

    mk = MockKernel()
    if moving:
        live.mark_target(mk.prog, moving=True)
    it = iter(reads)
    calls = []

    def read(diagnostics):
        calls.append(1)
        part = model.LivepatchState(diagnostics=list(next(it)))
        diagnostics.append(Diagnostic("livepatch", DiagnosticKind.LOST, None, "cross-check"))
        return part

    found = []
    state = report._settled(mk.prog, "livepatch", read, lambda s: s.diagnostics, found,
                            0xC000000001F00000)
    return state, found, len(calls)


def test_synthetic_report_stage_on_a_moving_kernel():
    reads = [[_walk_broke(DiagnosticKind.CYCLE, 0x2, "klp_patches: cycle")],
             [_walk_broke(DiagnosticKind.UNREADABLE, 0x5, "klp_patches: unreadable")],
             [_walk_broke(DiagnosticKind.UNREADABLE, 0x7, "klp_patches: unreadable")]]
    state, found, calls = _report_stage(True, reads)
    assert calls == live.ATTEMPTS and state.diagnostics == []
    # the walk broke differently each time: changed while reading, where the last one broke;
    # the cross-check's diagnostic, alike in every read, is the kernel's and stays as it is
    assert sorted((d.kind.value, d.address) for d in found) == [
        ("changed_while_reading", 0x7), ("lost", None)]


def test_synthetic_report_stage_on_a_dump_reads_once():
    reads = [[_walk_broke(DiagnosticKind.CYCLE, 0x2, "klp_patches: cycle")]]
    state, found, calls = _report_stage(False, reads)
    assert calls == 1
    assert [d.kind for d in state.diagnostics] == [DiagnosticKind.CYCLE]
    assert [d.kind for d in found] == [DiagnosticKind.LOST]
