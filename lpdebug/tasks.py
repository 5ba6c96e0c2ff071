"""
Every task of a kernel, found through independent sources, and what each
source says about the others.

No one structure is trusted to hold every task: one damaged word in the pid
IDR would otherwise cost the whole task list, with nothing to show for it.
The sources (:class:`~lpdebug.model.TaskSource`):

``pid_idr``
    ``init_pid_ns.idr``: every ``struct pid`` of the initial namespace, and
    the task attached to it as ``PIDTYPE_PID`` (what drgn's
    ``for_each_task`` walks). Holds every task with a pid, not the idle
    tasks (pid 0).
``task_list``
    ``init_task.tasks``, the thread-group leaders (``copy_process()`` links
    each new leader there), and each leader's ``signal->thread_head``, its
    threads (``thread_node``, 3.14+). Holds ``init_task`` (CPU 0's idle task)
    and every task with a pid.
``runqueue``
    Each possible CPU's ``rq->curr`` and ``rq->idle``: every CPU's idle task
    (each is pid 0 and exists once per CPU; only CPU 0's is on the task list)
    and the task each CPU runs.
``crash_notes``
    Each CPU that saved crash registers (kdump's ``crash_notes``): its
    ``paca->__current`` on ppc64, checked against the pid the note holds.

:func:`find_tasks` takes their union, keyed by ``task_struct`` address, and
records which sources gave each task. A source that breaks off, or misses
live tasks that another source holds, becomes a typed
:class:`~lpdebug.model.Diagnostic`; so does a union smaller than the kernel's
own count (``nr_threads``) or an empty one (``lost``). Every walk is bounded:
cycles, duplicate entries and absurd lengths end it with a diagnostic.

:func:`task_traces` then takes each task's true backtrace; a task whose trace
cannot be taken keeps a row with what could be read (pid, comm), and an
unreadable state costs that field only.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import drgn

from .kernel import has_member, has_type
from .model import Diagnostic, DiagnosticKind, MissedTask, TaskCensus, TaskSource, TaskTrace
from .symbols import Symbolizer

__all__ = (
    "FoundTask",
    "FoundTasks",
    "for_each_task_in_pid_idr",
    "for_each_task_in_task_list",
    "for_each_runqueue_task",
    "for_each_crash_notes_task",
    "crashed_task",
    "find_tasks",
    "task_traces",
    "WalkError",
    "PID_MAX_LIMIT",
)

STAGE = "tasks"

# include/linux/threads.h: no kernel has more pids than this (4M on 64-bit).
PID_MAX_LIMIT = 4 * 1024 * 1024
# Threads of one process: bounded by the pids there are.
_THREADS_LIMIT = PID_MAX_LIMIT
# include/linux/sched.h
EXIT_DEAD = 0x10
EXIT_ZOMBIE = 0x20

# An XArray entry that points to a node has its low bits 10 and is above
# the range of sibling/retry entries (include/linux/xarray.h, xa_is_node()).
_XA_NODE_TAG = 2
_XA_INTERNAL_LIMIT = 4096

# What a read of target memory raises: a fault; NotImplementedError for an
# address drgn cannot translate (hash-MMU vmalloc without lpdebug.hash_mmu);
# LookupError (AttributeError through a member access) when translating it
# needs an object the debug info lacks (cur_cpu_spec, with no
# NUMBER(RADIX_MMU) in VMCOREINFO).
_UNREADABLE = (drgn.FaultError, NotImplementedError, LookupError, AttributeError)


class WalkError(Exception):
    """A source's walk broke off: what kind of problem, where, and why, in one line."""

    def __init__(self, kind: DiagnosticKind, address: Optional[int], message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.address = address


def _global(prog: drgn.Program, name: str, type_name: str) -> drgn.Object:
    """A kernel variable, from its debug info, else from the symbol table and ``type_name``."""
    try:
        return prog.object(name)
    except LookupError:
        pass
    try:
        address = prog.symbol(name).address
    except LookupError:
        raise LookupError(f"the kernel has no {name} (neither in debug info nor symbols)") from None
    return drgn.Object(prog, type_name, address=address)


def _address(obj: drgn.Object) -> Optional[int]:
    try:
        return obj.address_ if obj.address_ is not None else obj.value_()
    except Exception:  # noqa: BLE001 (only used to label a diagnostic)
        return None


def _fault_address(e: BaseException) -> Optional[int]:
    return getattr(e, "address", None)


# --- bounded walks --------------------------------------------------------------------


def _bounded_list(head: drgn.Object, type_name: str, member: str, what: str,
                  limit: int) -> Iterator[drgn.Object]:
    """
    ``list_for_each_entry`` over the ``list_head`` ``head`` (object or
    pointer), as ``type_name *``, through :func:`lpdebug.kernel.walk_list`;
    raises :class:`WalkError` where that walk stops (a cycle, a NULL link, an
    unreadable node or more than ``limit`` entries).
    """
    from .kernel import walk_list

    stopped: List[Diagnostic] = []
    yield from walk_list(head, type_name, member, stopped, what, limit, stage=STAGE)
    if stopped:
        raise WalkError(stopped[0].kind, stopped[0].address, stopped[0].message)


def _xa_entries(xa: drgn.Object, what: str, limit: int) -> Iterator[drgn.Object]:
    """
    The non-NULL leaf entries (``void *``) of the XArray ``xa`` (``struct
    xarray *``; IDRs and radix trees are XArrays since 4.20), walked with a
    bound: every node once, each node's ``shift`` below its parent's, at most
    ``limit`` entries. Raises :class:`WalkError` otherwise.
    """
    prog = xa.prog_
    node_type = prog.type("struct xa_node *")
    # XA_CHUNK_SHIFT: the slots array holds 1 << XA_CHUNK_SHIFT entries.
    chunk_shift = (node_type.type.member("slots").type.length or 64).bit_length() - 1
    seen: Set[int] = set()
    count = 0
    node_addr = xa.value_()
    try:
        head = xa.xa_head.read_().value_()
        if (head & 3) != _XA_NODE_TAG:
            if head:  # a single entry, index 0
                yield drgn.Object(prog, "void *", head)
            return
        if head < _XA_INTERNAL_LIMIT:
            return
        # (node address, the shift it must have; None for the root)
        stack: List[Tuple[int, Optional[int]]] = [(head - _XA_NODE_TAG, None)]
        while stack:
            node_addr, want_shift = stack.pop()
            if node_addr in seen:
                raise WalkError(DiagnosticKind.CYCLE, node_addr,
                                f"{what}: node {node_addr:#x} is reached twice")
            seen.add(node_addr)
            # A full tree of ``limit`` entries has about limit / 2**chunk_shift leaf nodes.
            if len(seen) > (limit >> chunk_shift) * 2 + 64:
                raise WalkError(DiagnosticKind.CORRUPT, node_addr,
                                f"{what}: more nodes than {limit} entries can need")
            node = drgn.Object(prog, node_type, node_addr)
            shift = node.shift.value_()
            if (want_shift is not None and shift != want_shift) or shift % chunk_shift or shift > 64:
                raise WalkError(DiagnosticKind.CORRUPT, node_addr,
                                f"{what}: node {node_addr:#x} has shift {shift}"
                                + (f", its parent says {want_shift}" if want_shift is not None else ""))
            slots = [s.value_() for s in node.slots.read_()]
            children = []
            for value in slots:
                if not value:
                    continue
                if (value & 3) == _XA_NODE_TAG:
                    if value < _XA_INTERNAL_LIMIT:
                        continue  # a sibling or retry entry, not a pointer
                    if shift == 0:
                        raise WalkError(DiagnosticKind.CORRUPT, node_addr,
                                        f"{what}: leaf node {node_addr:#x} points to another node")
                    children.append((value - _XA_NODE_TAG, shift - chunk_shift))
                    continue
                count += 1
                if count > limit:
                    raise WalkError(DiagnosticKind.CORRUPT, node_addr,
                                    f"{what}: more than {limit} entries")
                yield drgn.Object(prog, "void *", value)
            # Depth first, lowest index first, like the kernel's own walk.
            stack.extend(reversed(children))
    except _UNREADABLE as e:
        raise WalkError(DiagnosticKind.UNREADABLE, _fault_address(e) or node_addr,
                        f"{what}: unreadable at {node_addr:#x} after {count} entries ({e})") from None


# --- the sources -------------------------------------------------------------------------


def for_each_task_in_pid_idr(prog: drgn.Program) -> Iterator[drgn.Object]:
    """
    Every task (``struct task_struct *``) attached as ``PIDTYPE_PID`` to a
    ``struct pid`` in ``init_pid_ns.idr``. Raises :class:`WalkError` when the
    walk breaks off (after yielding what it read).
    """
    from drgn.helpers.linux.pid import pid_task

    ns = _global(prog, "init_pid_ns", "struct pid_namespace")
    what = f"pid IDR (init_pid_ns.idr at {ns.idr.address_:#x})"
    pidtype_pid = prog.constant("PIDTYPE_PID") if _has_constant(prog, "PIDTYPE_PID") else 0
    if not has_member(prog, "struct idr", "idr_rt") or not has_type(prog, "struct xa_node"):
        # Before 4.20 (f8d5d0cc145c "xarray: Add definition of struct xarray") the IDR is
        # an old-style radix tree: drgn's own walk, bounded by the yield count only.
        from drgn.helpers.linux.idr import idr_for_each

        entries: Iterator[drgn.Object] = (e for _, e in idr_for_each(ns.idr.address_of_()))
    else:
        entries = _xa_entries(ns.idr.idr_rt.address_of_(), what, PID_MAX_LIMIT)
    for count, entry in enumerate(entries):
        if count >= PID_MAX_LIMIT:
            raise WalkError(DiagnosticKind.CORRUPT, ns.idr.address_, f"{what}: more than {PID_MAX_LIMIT} pids")
        pid = drgn.cast("struct pid *", entry)
        try:
            task = pid_task(pid, pidtype_pid)
            if task.value_():
                yield task
        except _UNREADABLE as e:
            raise WalkError(DiagnosticKind.UNREADABLE, _fault_address(e) or pid.value_(),
                            f"{what}: struct pid at {pid.value_():#x} unreadable ({e})") from None


def _has_constant(prog: drgn.Program, name: str) -> bool:
    try:
        prog.constant(name)
        return True
    except LookupError:
        return False


def for_each_task_in_task_list(prog: drgn.Program) -> Iterator[drgn.Object]:
    """
    ``init_task``, every thread-group leader on ``init_task.tasks`` and each
    leader's threads (``signal->thread_head``), as ``struct task_struct *``.
    Raises :class:`WalkError` when a list breaks off.
    """
    init = _global(prog, "init_task", "struct task_struct")
    yield init.address_of_()
    # signal->thread_head / task->thread_node: 3.14 (0c740d0afc3b "introduce for_each_thread()
    # to replace the buggy while_each_thread()"); older kernels only link leaders here.
    threads = has_member(prog, "struct task_struct", "thread_node") and \
        has_member(prog, "struct signal_struct", "thread_head")
    yield from _at_most(_task_list_entries(prog, init, threads), PID_MAX_LIMIT,
                        f"task list (init_task.tasks at {init.tasks.address_:#x})")


def _at_most(entries: Iterator[drgn.Object], limit: int, what: str) -> Iterator[drgn.Object]:
    for count, entry in enumerate(entries):
        if count >= limit:
            raise WalkError(DiagnosticKind.CORRUPT, entry.value_(), f"{what}: more than {limit} tasks")
        yield entry


def _task_list_entries(prog: drgn.Program, init: drgn.Object, threads: bool) -> Iterator[drgn.Object]:
    for leader in _bounded_list(init.tasks, "struct task_struct", "tasks",
                                f"task list (init_task.tasks at {init.tasks.address_:#x})",
                                PID_MAX_LIMIT):
        if not threads:
            yield leader
            continue
        try:
            signal = leader.signal.read_()
        except _UNREADABLE as e:
            raise WalkError(DiagnosticKind.UNREADABLE, _fault_address(e) or leader.value_(),
                            f"task list: task {leader.value_():#x}'s signal unreadable ({e})") from None
        if not signal.value_():
            yield leader
            continue
        yield from _bounded_list(signal.thread_head, "struct task_struct", "thread_node",
                                 f"threads of task {leader.value_():#x} (signal->thread_head)",
                                 _THREADS_LIMIT)


def _possible_cpus(prog: drgn.Program) -> List[int]:
    from drgn.helpers.linux.cpumask import for_each_possible_cpu

    try:
        return list(for_each_possible_cpu(prog))
    except _UNREADABLE as e:
        raise WalkError(DiagnosticKind.UNREADABLE, _fault_address(e),
                        f"runqueues: the possible-CPU mask is unreadable ({e})") from None


def for_each_runqueue_task(prog: drgn.Program) -> Iterator[drgn.Object]:
    """
    Each possible CPU's ``rq->curr`` and ``rq->idle`` (``struct task_struct
    *``). A CPU whose runqueue cannot be read, or holds no idle task, is
    skipped and, once the others are done, raises :class:`WalkError`.
    """
    from drgn.helpers.linux.percpu import per_cpu
    from drgn.helpers.linux.sched import cpu_curr, idle_task

    broken: List[Tuple[int, DiagnosticKind, Optional[int], str]] = []
    for cpu in _possible_cpus(prog):
        given = set()
        for get in (cpu_curr, idle_task):
            try:
                task = get(prog, cpu)
                # An idle CPU runs its idle task: rq->curr == rq->idle.
                if task.value_() and task.value_() not in given:
                    given.add(task.value_())
                    yield task
                elif get is idle_task and not task.value_():
                    # idle_threads_init() gives every possible CPU its idle task at
                    # boot (init_idle() sets rq->idle and rq->curr): NULL is damage,
                    # and that CPU's idle task, found nowhere else, would be lost.
                    try:
                        rq: Optional[int] = per_cpu(prog["runqueues"], cpu).address_
                    except (LookupError, *_UNREADABLE):
                        rq = None
                    broken.append((cpu, DiagnosticKind.CORRUPT, rq,
                                   f"CPU {cpu}'s runqueue has no idle task (rq->idle is NULL): "
                                   "its idle task is missing from this report"))
            except (*_UNREADABLE, ValueError) as e:
                broken.append((cpu, DiagnosticKind.UNREADABLE, _fault_address(e),
                               f"CPU {cpu}'s runqueue is unreadable ({e})"))
    if broken:
        _, kind, address, message = broken[0]
        raise WalkError(kind, address, "runqueues: " + message
                        + (f", and {len(broken) - 1} more" if len(broken) > 1 else ""))


def for_each_crash_notes_task(prog: drgn.Program) -> Iterator[drgn.Object]:
    """
    For each CPU that saved crash registers, the task it ran: its
    ``paca->__current`` (ppc64), which must have the pid its note holds.
    Raises :class:`WalkError` when they disagree or the paca is unreadable.
    """
    from .crash_notes import crashed_cpus

    cpus = crashed_cpus(prog)
    if not cpus or not has_member(prog, "struct paca_struct", "__current"):
        return
    pacas = _global(prog, "paca_ptrs", "struct paca_struct **")
    for cpu, regs in sorted(cpus.items()):
        try:
            task = pacas[cpu].__current.read_()
            pid = task.pid.value_()
        except _UNREADABLE as e:
            raise WalkError(DiagnosticKind.UNREADABLE, _fault_address(e),
                            f"crash notes: CPU {cpu}'s paca is unreadable ({e})") from None
        if pid != regs["pid"]:
            raise WalkError(DiagnosticKind.CORRUPT, task.value_(),
                            f"crash notes: CPU {cpu} saved registers of pid {regs['pid']}, "
                            f"but its paca->__current {task.value_():#x} has pid {pid}")
        yield task


def crashed_task(prog: drgn.Program) -> drgn.Object:
    """
    The task that crashed, as ``struct task_struct *``: the one running on
    the CPU whose crash registers drgn takes for the crash
    (``prog.crashed_thread()``), on a dump whose kernel says a CPU panicked
    or entered crash_kexec() (``panic_cpu``, :func:`lpdebug.crash_notes.panic_cpu`).
    A dump of a kernel that did not crash (QEMU's dump-guest-memory) has CPU
    notes too, but no panic_cpu: then, and when the dump cannot tell, raises
    LookupError saying why.
    """
    from .crash_notes import panic_cpu

    if panic_cpu(prog) is None:
        raise LookupError("no CPU panicked (panic_cpu is unset)")
    try:
        return prog.crashed_thread().object
    except (ValueError, drgn.FaultError) as e:
        raise LookupError(f"the crashed thread cannot be read ({e})") from None


_SOURCES: Tuple[Tuple[TaskSource, Callable[[drgn.Program], Iterator[drgn.Object]]], ...] = (
    (TaskSource.PID_IDR, for_each_task_in_pid_idr),
    (TaskSource.TASK_LIST, for_each_task_in_task_list),
    (TaskSource.RUNQUEUE, for_each_runqueue_task),
    (TaskSource.CRASH_NOTES, for_each_crash_notes_task),
)

_SOURCE_NAMES = {
    TaskSource.PID_IDR: "the pid IDR",
    TaskSource.TASK_LIST: "the task list",
    TaskSource.RUNQUEUE: "the runqueues",
    TaskSource.CRASH_NOTES: "the crash notes",
}


# --- the union -----------------------------------------------------------------------------


@dataclass
class FoundTask:
    """One task of the union: its object, the sources that gave it, and what they agree on."""

    task: drgn.Object  # struct task_struct *
    sources: List[TaskSource] = field(default_factory=list)
    pid: Optional[int] = None  # None when unreadable
    exit_state: int = 0


@dataclass
class FoundTasks:
    tasks: List[FoundTask]  # sorted by (pid, address)
    census: TaskCensus
    diagnostics: List[Diagnostic]


def _live(prog: drgn.Program) -> bool:
    # /proc/kcore, or a QEMU guest read while it runs (lpdebug.live)
    from . import live

    return live.is_moving(prog)


def _read_counter(prog: drgn.Program, name: str, type_name: str,
                  diagnostics: List[Diagnostic]) -> Tuple[Optional[int], Optional[int]]:
    """(value, address) of a kernel counter; a diagnostic when it cannot be read."""
    address = None
    try:
        obj = _global(prog, name, type_name)
        address = obj.address_
        return obj.value_(), address
    except LookupError as e:
        diagnostics.append(Diagnostic(STAGE, DiagnosticKind.MISSING_DEBUG_INFO, None,
                                      f"cannot count the kernel's tasks: {e}"))
    except _UNREADABLE as e:
        diagnostics.append(Diagnostic(STAGE, DiagnosticKind.UNREADABLE, _fault_address(e) or address,
                                      f"{name} is unreadable, so the tasks found cannot be checked"
                                      f" against the kernel's own count ({e})"))
    return None, address


def _expected_sources(found: FoundTask, init_task: Optional[int]) -> Set[TaskSource]:
    """The sources that must hold ``found`` if the kernel is intact."""
    if found.pid is None:
        return set()
    if found.pid != 0:
        return {TaskSource.PID_IDR, TaskSource.TASK_LIST}
    if found.task.value_() == init_task:
        return {TaskSource.TASK_LIST, TaskSource.RUNQUEUE}
    return {TaskSource.RUNQUEUE}


def _comm(task: drgn.Object) -> str:
    try:
        return task.comm.string_().decode(errors="replace")
    except Exception:  # noqa: BLE001 (an unreadable name costs the name only)
        return "?"


def _pids_text(pids: Sequence[int], limit: int = 8) -> str:
    shown = ", ".join(str(p) for p in pids[:limit])
    return shown + (f" and {len(pids) - limit} more" if len(pids) > limit else "")


def find_tasks(prog: drgn.Program) -> FoundTasks:
    """
    Every task of ``prog``: the union of :data:`TaskSource`'s sources, with
    the census of what each gave and a diagnostic for each source that broke
    off or missed live tasks, and for a union smaller than ``nr_threads``.
    """
    diagnostics: List[Diagnostic] = []
    census = TaskCensus()
    by_address: Dict[int, FoundTask] = {}
    failed: Set[TaskSource] = set()
    for source, walk in _SOURCES:
        count = 0
        given: Set[int] = set()
        try:
            for task in walk(prog):
                address = task.value_()
                if address in given:
                    raise WalkError(DiagnosticKind.CYCLE, address,
                                    f"{_SOURCE_NAMES[source]} gives task {address:#x} twice")
                given.add(address)
                found = by_address.get(address)
                if found is None:
                    found = by_address[address] = FoundTask(task)
                if source not in found.sources:
                    found.sources.append(source)
                    count += 1
        except WalkError as e:
            failed.add(source)
            diagnostics.append(Diagnostic(STAGE, e.kind, e.address, f"{e} ({count} tasks read)"))
        except LookupError as e:
            failed.add(source)
            diagnostics.append(Diagnostic(STAGE, DiagnosticKind.MISSING_DEBUG_INFO, None,
                                          f"{_SOURCE_NAMES[source]} cannot be walked: {e}"))
        except Exception as e:  # noqa: BLE001 (one source failing must not cost the others)
            failed.add(source)
            diagnostics.append(Diagnostic(STAGE, DiagnosticKind.STAGE_FAILED, None,
                                          f"{_SOURCE_NAMES[source]} walk failed after {count} tasks:"
                                          f" {type(e).__name__}: {e}"))
        census.found[source.value] = count
    census.failed = [s.value for s, _ in _SOURCES if s in failed]

    unreadable_pids = []
    for found in by_address.values():
        try:
            found.pid = found.task.pid.value_()
            found.exit_state = found.task.exit_state.value_()
        except _UNREADABLE as e:
            unreadable_pids.append((found.task.value_(), e))
    if unreadable_pids:
        address, first_error = unreadable_pids[0]
        diagnostics.append(Diagnostic(
            STAGE, DiagnosticKind.UNREADABLE, _fault_address(first_error) or address,
            f"the pid of {len(unreadable_pids)} task(s) is unreadable (first: task_struct at "
            f"{address:#x}): they are listed, but cannot be checked against the sources"))

    try:
        init_task: Optional[int] = _global(prog, "init_task", "struct task_struct").address_
    except LookupError:
        init_task = None
    _check_sources(prog, by_address, init_task, census, diagnostics)
    _check_counters(prog, by_address, census, diagnostics)

    tasks = sorted(by_address.values(),
                   key=lambda f: (f.pid if f.pid is not None else -1, f.task.value_()))
    census.tasks = len(tasks)
    return FoundTasks(tasks, census, diagnostics)


def _check_sources(prog: drgn.Program, by_address: Dict[int, FoundTask], init_task: Optional[int],
                   census: TaskCensus, diagnostics: List[Diagnostic]) -> None:
    # Per source: the live tasks it should hold and does not. An exiting task
    # (exit_state set) may be unhashed already: __unhash_process() takes it
    # off the IDR and the task list together while it still runs to schedule
    # away, so only the runqueues still show it.
    missed_by: Dict[TaskSource, List[FoundTask]] = {}
    for found in sorted(by_address.values(), key=lambda f: (f.pid or 0, f.task.value_())):
        expected = _expected_sources(found, init_task)
        missing = sorted(expected - set(found.sources), key=lambda s: s.value)
        if not missing:
            continue
        exiting = bool(found.exit_state)
        census.missed.append(MissedTask(
            pid=found.pid if found.pid is not None else -1,
            comm=_comm(found.task),
            address=found.task.value_(),
            found_by=[s.value for s in found.sources],
            missed_by=[s.value for s in missing],
            exiting=exiting,
        ))
        if exiting and not expected.intersection(found.sources):
            continue
        for source in missing:
            missed_by.setdefault(source, []).append(found)
    kind = DiagnosticKind.CHANGED_WHILE_READING if _live(prog) else DiagnosticKind.CORRUPT
    for source, _ in _SOURCES:
        missed = missed_by.get(source)
        # A source that broke off has its own diagnostic; what it missed is in the census.
        if not missed or source.value in census.failed:
            continue
        address = None
        try:
            if source == TaskSource.PID_IDR:
                address = _global(prog, "init_pid_ns", "struct pid_namespace").idr.address_
            elif source == TaskSource.TASK_LIST:
                address = _global(prog, "init_task", "struct task_struct").tasks.address_
        except (LookupError, *_UNREADABLE):
            pass
        pids = [f.pid if f.pid is not None else -1 for f in missed]
        others = sorted({s for f in missed for s in f.sources}, key=lambda s: s.value)
        what = "damaged" if source in (TaskSource.PID_IDR, TaskSource.TASK_LIST) else "inconsistent"
        if kind == DiagnosticKind.CHANGED_WHILE_READING:
            what = "changing (a live kernel)"
        diagnostics.append(Diagnostic(
            STAGE, kind, address,
            f"{_SOURCE_NAMES[source]} is {what}: it misses {len(missed)} task(s) that "
            f"{' and '.join(_SOURCE_NAMES[s] for s in others)} give (pids {_pids_text(pids)})"))


def _check_counters(prog: drgn.Program, by_address: Dict[int, FoundTask], census: TaskCensus,
                    diagnostics: List[Diagnostic]) -> None:
    # copy_process() counts a task in nr_threads when it attaches its pid,
    # idle tasks (pid 0) excepted; __unhash_process() uncounts it when it
    # leaves the IDR and the task list (kernel/fork.c, kernel/exit.c).
    census.counted = sum(
        1 for f in by_address.values()
        if f.pid not in (None, 0)
        and (TaskSource.PID_IDR in f.sources or TaskSource.TASK_LIST in f.sources
             or not f.exit_state & EXIT_DEAD)
    )
    census.nr_threads, nr_threads_at = _read_counter(prog, "nr_threads", "int", diagnostics)
    census.total_forks, forks_at = _read_counter(prog, "total_forks", "unsigned long", [])
    if not by_address:
        diagnostics.append(Diagnostic(STAGE, DiagnosticKind.LOST, None,
                                      "no task found by any source: every task is lost"))
        return
    live = _live(prog)
    if census.nr_threads is not None and census.counted != census.nr_threads:
        fewer = census.counted < census.nr_threads
        kind = (DiagnosticKind.CHANGED_WHILE_READING if live
                else DiagnosticKind.LOST if fewer else DiagnosticKind.CORRUPT)
        diagnostics.append(Diagnostic(
            STAGE, kind, nr_threads_at,
            f"{census.counted} tasks with a pid found, but the kernel counts {census.nr_threads}"
            f" (nr_threads): "
            + (f"{census.nr_threads - census.counted} lost" if fewer
               else f"{census.counted - census.nr_threads} more than it knows of")))
    if census.total_forks is not None and census.counted > census.total_forks and not live:
        diagnostics.append(Diagnostic(
            STAGE, DiagnosticKind.CORRUPT, forks_at,
            f"{census.counted} tasks with a pid found, more than the {census.total_forks} "
            "forks since boot (total_forks)"))


# --- traces ------------------------------------------------------------------------------------


def _stub_trace(found: FoundTask) -> TaskTrace:
    """The row of a task whose trace could not be taken: what can still be read."""
    task = found.task
    patch_state = None
    try:
        if has_member(task.prog_, "struct task_struct", "patch_state"):
            patch_state = task.patch_state.value_()
    except Exception:  # noqa: BLE001 (an unreadable field costs the field only)
        pass
    return TaskTrace(pid=found.pid if found.pid is not None else -1, comm=_comm(task), state="?",
                     patch_state=patch_state, address=task.value_())


def _idle_without_registers(trace: TaskTrace) -> bool:
    return (trace.pid == 0 and trace.on_cpu is not None and trace.cpu_registers is None
            and not trace.frames and len(trace.diagnostics) == 1)


def _reader_itself(prog: drgn.Program, trace: TaskTrace) -> bool:
    # On the running kernel (-k, /proc/kcore) the task list holds the thread running this code. It is
    # on a CPU while it reads, so the kernel saved no registers to unwind it from (drgn: "cannot unwind
    # stack of running task"); its stack is lpdebug's own, not kernel state under study.
    if (trace.pid not in (os.getpid(), threading.get_native_id()) or trace.on_cpu is None or trace.frames
            or len(trace.diagnostics) != 1):
        return False
    local = getattr(drgn.ProgramFlags, "IS_LOCAL", None)
    flags = getattr(prog, "flags", None)
    return (isinstance(flags, drgn.ProgramFlags) and local is not None and bool(flags & local)
            and bool(flags & drgn.ProgramFlags.IS_LIVE))


def task_traces(prog: drgn.Program, found: FoundTasks,
                progress: Optional[Callable[[str, int, int], None]] = None) -> Tuple[List[TaskTrace],
                                                                                    List[Diagnostic]]:
    """
    The true backtrace of every task of ``found`` (see :func:`find_tasks`),
    in its order, each with the sources that gave it, and the diagnostics of
    the tasks that could not be traced in full.
    """
    from .backtrace import true_backtrace

    diagnostics: List[Diagnostic] = []
    traces: List[TaskTrace] = []
    try:
        symbolizer: Optional[Symbolizer] = Symbolizer(prog)
    except Exception:  # noqa: BLE001 (each trace then builds its own, and says what fails)
        symbolizer = None
    total = len(found.tasks)
    no_state: List[TaskTrace] = []
    moving = _live(prog)

    def walk(task: drgn.Object) -> TaskTrace:
        return true_backtrace(task, symbolizer=symbolizer)

    for done, item in enumerate(found.tasks):
        if progress is not None:
            progress("tasks", done, total)
        try:
            if moving:
                moved = _moving_task_trace(item.task, walk, diagnostics)
                if moved is None:
                    continue  # it exited while it was read (a diagnostic says so)
                trace = moved
            else:
                trace = walk(item.task)
            if trace.state == "?":
                no_state.append(trace)
        except Exception as e:  # noqa: BLE001 (one task failing costs that task's trace only)
            trace = _stub_trace(item)
            kind = DiagnosticKind.UNREADABLE if isinstance(e, _UNREADABLE) else DiagnosticKind.STAGE_FAILED
            diagnostics.append(Diagnostic(
                STAGE, kind, _fault_address(e) or item.task.value_(),
                f"task {trace.pid} ({trace.comm}) at {item.task.value_():#x}: no trace: "
                f"{type(e).__name__}: {' '.join(str(e).split())}"))
        trace.sources = [s.value for s in item.sources]
        if _idle_without_registers(trace):
            # An idle task running on its CPU, in a dump that saved no registers for that CPU
            # (a QMP capture of an idle guest), is in the idle loop: there is no stack to
            # unwind. It is listed with its ret_stack, and nothing is missing from the report.
            trace.diagnostics = []
        elif _reader_itself(prog, trace):
            # lpdebug's own reading thread: listed (the kernel counts it), nothing missing
            trace.diagnostics = []
        traces.append(trace)
    if progress is not None:
        progress("tasks", total, total)
    if no_state:
        address = None
        try:
            address = prog.symbol("task_state_array").address
        except Exception:  # noqa: BLE001 (only labels the diagnostic)
            pass
        diagnostics.append(Diagnostic(
            STAGE, DiagnosticKind.UNREADABLE, address,
            f"the state of {len(no_state)} task(s) is unreadable (task_state_array or the "
            f"task's state word): shown as '?' (pids {_pids_text([t.pid for t in no_state])})"))
    return traces, diagnostics


def _moving_task_trace(task: drgn.Object, walk: Callable[[drgn.Object], TaskTrace],
                       diagnostics: List[Diagnostic]) -> Optional[TaskTrace]:
    # A kernel that runs while it is read: the task is read until it stands
    # still (lpdebug.live.settled_trace). A task that exits while it is read
    # fails half way: that is the kernel moving (its task_struct is gone or
    # reused), not an error of the kernel's; None then, with a diagnostic.
    from . import live

    failure: Optional[Exception] = None
    for _ in range(live.ATTEMPTS):
        try:
            trace, torn = live.settled_trace(task, walk)
        except Exception as e:  # noqa: BLE001 (raised below unless the task is gone)
            failure = e
            continue
        if torn is not None:
            diagnostics.append(torn)
        return trace
    assert failure is not None
    if live.task_stamp(task) is None or not _still_listed(task):
        diagnostics.append(Diagnostic(
            STAGE, DiagnosticKind.CHANGED_WHILE_READING, task.value_(),
            f"task_struct {task.value_():#x} exited while it was read "
            f"({type(failure).__name__}: {' '.join(str(failure).split())})"))
        return None
    raise failure


def _still_listed(task: drgn.Object) -> bool:
    from drgn.helpers.linux.pid import find_task

    try:
        found = find_task(task.prog_, task.pid.value_())
        return bool(found) and found.value_() == task.value_()
    except Exception:  # noqa: BLE001 (an unreadable task is not listed)
        return False
