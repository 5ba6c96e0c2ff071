"""
A kernel that moves while it is read: live targets that keep running.

A vmcore, a guest paused with QMP ``stop`` and a kernel held by gdb do not
change under the reader. The running kernel (``/proc/kcore``) and a QEMU guest
read while its vCPUs run do: a task may wake and rewrite its stack, its
``ret_stack`` and its livepatch stack between two reads; a module may go away
while its list node is followed. What was read then mixes two moments, and
checking it would report corruption, or a TOC that "does not belong", that no
single moment of the kernel ever had.

So on a moving target nothing is checked that was not read twice alike:

- a task is read between two *stamps* (its context-switch counts, saved
  kernel SP, ``curr_ret_stack`` and ``livepatch_sp``); a task whose stamp
  moved, or that sits on a CPU and reads differently twice, is read again,
  and after :data:`ATTEMPTS` tries its trace is kept for the report but marked
  ``changed_while_reading`` and left out of the checks, with a
  :class:`~lpdebug.model.Diagnostic` of kind ``changed_while_reading``
  naming its ``task_struct``;
- a finding is kept only when a second, fresh read (the task, the livepatch
  state and the module TOCs read again) reproduces it; one that does not is a
  ``changed_while_reading`` diagnostic at the word it was about;
- a stage whose walk failed (a list node freed under the walker) is read
  again; only a failure that repeats identically is reported as it is.

:func:`is_moving` decides which targets this applies to; the target openers
say so with :func:`mark_target`.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, TypeVar

import drgn

from .kernel import has_member, program_state, thread_info_in_task
from .model import Diagnostic, DiagnosticKind, Finding, TaskTrace

__all__ = (
    "ATTEMPTS",
    "mark_target",
    "is_live_target",
    "is_moving",
    "TaskStamp",
    "task_stamp",
    "settled_trace",
    "settled_stage",
    "reverify_findings",
    "TORN_READ_ERRORS",
    "note_changed",
    "noted_changes",
    "module_in_flux",
    "torn_module_list",
)

# Reads of one task (or one stage) before it is given up as changing; three
# reads of a sleeping task take milliseconds, a task woken every 300 ms (the
# churn testbed's) is caught between two wakeups on the first or second.
ATTEMPTS = 3

# Set by the target openers in lpdebug.kernel.program_state (fixed for the
# Program's life: a paused session pauses before it opens and resumes after
# it is closed).
_MOVING_KEY = "moving"

_T = TypeVar("_T")


def mark_target(prog: drgn.Program, *, moving: bool) -> None:
    """Record whether ``prog`` reads a kernel that runs while it is read."""
    program_state(prog)[_MOVING_KEY] = moving


def is_live_target(prog: drgn.Program) -> bool:
    """
    Whether ``prog`` reads a kernel that runs, now or once a pause ends (a
    QEMU guest, gdb's target, ``/proc/kcore``), as opposed to a dump.
    """
    if isinstance(getattr(prog, "cache", None), dict) and _MOVING_KEY in program_state(prog):
        return True
    flags = getattr(prog, "flags", None)
    return isinstance(flags, drgn.ProgramFlags) and bool(flags & drgn.ProgramFlags.IS_LIVE)


def is_moving(prog: drgn.Program) -> bool:
    """
    Whether the kernel behind ``prog`` may change between two reads: what a
    target opener recorded with :func:`mark_target`, else drgn's own
    ``IS_LIVE`` flag (``/proc/kcore``).
    """
    marked = program_state(prog).get(_MOVING_KEY) if isinstance(getattr(prog, "cache", None), dict) else None
    if marked is not None:
        return bool(marked)
    flags = getattr(prog, "flags", None)
    return isinstance(flags, drgn.ProgramFlags) and bool(flags & drgn.ProgramFlags.IS_LIVE)


# What drgn raises when a structure it walks changes under it: a pointer freed
# (FaultError), or a count or size read half-written, which drgn 0.3.0 then
# tries to allocate (MemoryError) or cannot represent (OverflowError). On a
# dump the same errors mean damaged input.
TORN_READ_ERRORS = (MemoryError, OverflowError, drgn.FaultError)

# In program_state: changed_while_reading diagnostics met outside a triage
# stage (while the target was opened, its module list walked by drgn).
_CHANGED_KEY = "changed_while_reading"


def note_changed(prog: drgn.Program, diagnostic: Diagnostic) -> None:
    """Keep ``diagnostic`` for the report: :func:`lpdebug.report.triage` lists it."""
    program_state(prog).setdefault(_CHANGED_KEY, []).append(diagnostic)


def noted_changes(prog: drgn.Program) -> List[Diagnostic]:
    """The diagnostics :func:`note_changed` kept (a program of tests' fakes has none)."""
    if not isinstance(getattr(prog, "cache", None), dict):
        return []
    return list(program_state(prog).get(_CHANGED_KEY, []))


# enum module_state (include/linux/module.h, 5.10 to 6.12): MODULE_STATE_LIVE = 0
_MODULE_STATE_LIVE = 0


def module_in_flux(prog: drgn.Program) -> Optional[int]:
    """
    The address of a ``struct module`` that is being loaded or unloaded
    (``state`` not ``MODULE_STATE_LIVE``: COMING, GOING or UNFORMED), read
    with lpdebug's bounded walker; else the ``modules`` list head's; None
    when neither can be read.
    """
    from .kernel import walk_list

    try:
        head = prog["modules"]
    except (LookupError, drgn.FaultError):
        return None
    try:
        for mod in walk_list(head, "struct module", "list", [], "modules", stage="debug_info"):
            if mod.state.value_() != _MODULE_STATE_LIVE:
                return mod.value_()
    except Exception:  # noqa: BLE001 (only labels a diagnostic: the head says where instead)
        pass
    return head.address_


def torn_module_list(prog: drgn.Program, error: BaseException, what: str) -> Diagnostic:
    """
    The ``changed_while_reading`` diagnostic of a walk of the module list
    (``what`` it was for) that failed with ``error`` every time it was tried
    on a kernel that runs: a module was being loaded or unloaded. Noted for
    the report (:func:`note_changed`) and returned.
    """
    address = module_in_flux(prog)
    where = f" (struct module {address:#x})" if address is not None else ""
    detail = " ".join(str(error).split())
    diagnostic = Diagnostic(
        stage="debug_info", kind=DiagnosticKind.CHANGED_WHILE_READING, address=address,
        message=(f"the module list changed while drgn walked it for {what}: a module was being "
                 f"loaded or unloaded{where} ({type(error).__name__}"
                 f"{': ' + detail if detail else ''}); the modules read before are used"))
    note_changed(prog, diagnostic)
    return diagnostic


# --- one task ----------------------------------------------------------------

# (nvcsw, nivcsw, thread.ksp, on_cpu, curr_ret_stack, livepatch_sp); None
# where the kernel has no such field.
TaskStamp = Tuple[Optional[int], ...]


def _member(obj: drgn.Object, type_name: str, member: str) -> Optional[int]:
    if not has_member(obj.prog_, type_name, member):
        return None
    return getattr(obj, member).value_()


def task_stamp(task: drgn.Object) -> Optional[TaskStamp]:
    """
    What changes whenever ``task`` (``struct task_struct *``) runs: its
    voluntary and involuntary context-switch counts, its saved kernel SP
    (``thread.ksp``), ``on_cpu``, the top of its fgraph shadow stack
    (``curr_ret_stack``) and its livepatch stack pointer. None when the
    task_struct cannot be read (the task exited and its memory went away).
    """
    prog = task.prog_
    try:
        livepatch_sp = None
        if thread_info_in_task(prog) and has_member(prog, "struct thread_info", "livepatch_sp"):
            livepatch_sp = task.thread_info.livepatch_sp.value_()
        return (
            _member(task, "struct task_struct", "nvcsw"),
            _member(task, "struct task_struct", "nivcsw"),
            task.thread.ksp.value_() if has_member(prog, "struct thread_struct", "ksp") else None,
            _member(task, "struct task_struct", "on_cpu"),
            _member(task, "struct task_struct", "curr_ret_stack"),
            livepatch_sp,
        )
    except (drgn.FaultError, LookupError):
        return None


_STAMP_FIELDS = ("nvcsw", "nivcsw", "thread.ksp", "on_cpu", "curr_ret_stack", "livepatch_sp")


def _stamp_change(before: Optional[TaskStamp], after: Optional[TaskStamp]) -> str:
    if before is None or after is None:
        return "its task_struct could not be read (it exited)"
    moved = [f"{name} {a:#x} -> {b:#x}" if name in ("thread.ksp", "livepatch_sp")
             else f"{name} {a} -> {b}"
             for name, a, b in zip(_STAMP_FIELDS, before, after) if a != b]
    return ", ".join(moved) if moved else "it ran on a CPU and read differently twice"


def _on_cpu(stamp: TaskStamp) -> bool:
    return bool(stamp[3])


def settled_trace(task: drgn.Object, walk: Callable[[drgn.Object], TaskTrace],
                  attempts: int = ATTEMPTS) -> Tuple[TaskTrace, Optional[Diagnostic]]:
    """
    ``walk(task)`` read while ``task`` stood still: the stamp before equals
    the stamp after, and a task on a CPU also read the same twice. Returns the
    trace and None, or, when every attempt saw the task move, the last trace
    with ``changed_while_reading`` set and the diagnostic that says so.
    ``walk`` exceptions propagate (the caller reports them).
    """
    address = task.value_()
    trace: Optional[TaskTrace] = None
    why = ""
    for _ in range(max(1, attempts)):
        before = task_stamp(task)
        trace = walk(task)
        after = task_stamp(task)
        if before is not None and before == after:
            if not _on_cpu(after):
                return trace, None
            again = walk(task)
            if again == trace and task_stamp(task) == after:
                return trace, None
            why = _stamp_change(after, task_stamp(task))
            trace = again
        else:
            why = _stamp_change(before, after)
    assert trace is not None
    trace.changed_while_reading = True
    return trace, Diagnostic(
        stage="tasks", kind=DiagnosticKind.CHANGED_WHILE_READING, address=address,
        message=(f"pid {trace.pid} ({trace.comm}), task_struct {address:#x}, ran while it was "
                 f"read {attempts} times ({why}): its frames and shadow stacks are shown, "
                 "not checked"))


# --- one stage ---------------------------------------------------------------


def settled_stage(run: Callable[[], _T], errors_of: Callable[[_T], Sequence[Any]],
                  clear: Callable[[_T], None], stage: str, address: Optional[int] = None,
                  attempts: int = ATTEMPTS) -> Tuple[_T, List[Diagnostic]]:
    """
    ``run()`` again while its result has errors (``errors_of(result)``), up to
    ``attempts`` reads. The first read without errors wins. When every read
    had errors and they differ between reads, the kernel changed under the
    walk: ``clear(result)`` takes the last read's errors out of it and they
    come back as ``changed_while_reading`` diagnostics of ``stage`` at the
    address a diagnostic names, else ``address`` (the root of the walk); a
    diagnostic that every read had alike comes back as it is. Errors that
    repeat identically are left in the result: they are the kernel's, not
    the reader's timing.
    """
    result = run()
    seen = [errors_of(result)]
    while seen[-1] and len(seen) < max(1, attempts):
        result = run()
        seen.append(errors_of(result))
    if not seen[-1] or all(errs == seen[0] for errs in seen):
        return result, []
    clear(result)
    torn = " (read {} times, failing differently each time: the kernel changed under the walk)"
    # A diagnostic every read had alike is the kernel's, even when the rest moved.
    return result, [error if isinstance(error, Diagnostic) and all(error in errs for errs in seen)
                    else Diagnostic(stage=stage, kind=DiagnosticKind.CHANGED_WHILE_READING,
                                    address=_error_address(error, address),
                                    message=_error_message(error) + torn.format(len(seen)))
                    for error in seen[-1]]


def _error_address(error: Any, address: Optional[int]) -> Optional[int]:
    # a Diagnostic names where its walk broke; a plain message only the walk's root
    own = getattr(error, "address", None)
    return own if own is not None else address


def _error_message(error: Any) -> str:
    if isinstance(error, Diagnostic):
        return f"{error.kind.value.replace('_', ' ')}: {error.message}"
    return str(error)


# --- findings ----------------------------------------------------------------


def _finding_key(f: Finding) -> Tuple[Any, ...]:
    return (f.kind, f.pid, f.address, f.expected_toc, f.actual_toc, f.slot)


def reverify_findings(findings: Iterable[Finding],
                      reread: Callable[[Optional[int]], List[Finding]],
                      task_addresses: Optional[Dict[int, int]] = None,
                      ) -> Tuple[List[Finding], List[Diagnostic]]:
    """
    Keep the findings that a fresh read reproduces. ``reread(pid)`` reads
    the task ``pid`` again (``None``: the task-less checks, module TOCs) and
    returns the findings of that read. A finding it does not reproduce
    becomes a ``changed_while_reading`` diagnostic at its slot, else its
    address, else its task's ``task_struct`` (``task_addresses``: pid ->
    address).
    """
    task_addresses = task_addresses or {}
    kept: List[Finding] = []
    diagnostics: List[Diagnostic] = []
    again: Dict[Optional[int], set] = {}
    for finding in findings:
        if finding.pid not in again:
            again[finding.pid] = {_finding_key(f) for f in reread(finding.pid)}
        if _finding_key(finding) in again[finding.pid]:
            kept.append(finding)
            continue
        where = next((a for a in (finding.slot, finding.address,
                                   task_addresses.get(finding.pid) if finding.pid is not None
                                   else None) if a is not None), None)
        diagnostics.append(Diagnostic(
            stage="checks", kind=DiagnosticKind.CHANGED_WHILE_READING, address=where,
            message=f"{finding.kind} not reproduced by a second read, not reported: "
                    f"{finding.message}"))
    return kept, diagnostics
