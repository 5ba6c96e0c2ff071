# SPDX-License-Identifier: GPL-2.0-or-later
"""
One call that runs every walker and check over a kernel, and what its result
says about the report's completeness.

:func:`triage` is what a support engineer's single command runs: kernel
identity, livepatch state, ftrace ops and records, every task's true backtrace
and shadow stacks, the module TOCs, all findings and the livepatch transition's
blocking tasks. A stage that raises becomes a typed
:class:`~lpdebug.model.Diagnostic` (``stage_failed``, or ``unreadable`` for a
fault) and the rest of the report goes on; the walkers' own diagnostics are
gathered into ``TriageResult.diagnostics`` too.

:func:`exit_status` is the one rule every front end applies to a result: 0
clean, 1 findings, 3 incomplete (any diagnostic; it wins over findings).

The JSON encoding (schema ``lpdebug.triage/2``) is :mod:`lpdebug.schema`.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

from .diagnostics import all_diagnostics, from_exception
from .model import (
    FINDINGS_ORDER,
    Diagnostic,
    DiagnosticKind,
    Finding,
    FtraceState,
    KernelInfo,
    KernelLog,
    LivepatchState,
    TaskCensus,
    TaskTrace,
    TriageResult,
    sort_key,
)
from .notable import NotableRecordFilter
from .summary import summarize

__all__ = (
    "EXIT_CLEAN",
    "EXIT_FINDINGS",
    "EXIT_ERROR",
    "EXIT_INCOMPLETE",
    "STAGES",
    "Progress",
    "exit_status",
    "exit_status_of",
    "triage",
    "task_traces",
    "toc_check",
    "findings_sort_key",
    "filtered_diagnostics",
)

# Exit statuses, shared by every front end (README, lpdebug --help, docs/triage-schema.md).
EXIT_CLEAN = 0  # the report is complete and has no findings
EXIT_FINDINGS = 1  # the report is complete and has findings
EXIT_ERROR = 2  # a front end could not start: bad arguments, a target it cannot open
EXIT_INCOMPLETE = 3  # something could not be checked (any diagnostic); wins over findings

# The stages of triage(), in the order they run; each names its diagnostics.
STAGES = ("kernel", "livepatch", "ftrace", "tasks", "tocs", "transition", "checks", "kernel_log")

# progress(stage, done, total): called as a long walk advances, so a front end
# can draw a bar. ``total`` is 0 when it is not known.
Progress = Callable[[str, int, int], None]


def exit_status_of(findings: int, diagnostics: int) -> int:
    """The exit status for a report with this many findings and diagnostics."""
    if diagnostics:
        return EXIT_INCOMPLETE
    return EXIT_FINDINGS if findings else EXIT_CLEAN


def exit_status(result: TriageResult) -> int:
    """0 clean, 1 findings, 3 incomplete: any diagnostic, anywhere in ``result`` (wins over 1)."""
    return exit_status_of(len(result.findings), sum(1 for _ in all_diagnostics(result)))


def _guarded(diagnostics: List[Diagnostic], stage: str, what: str, fn: Callable[[], Any],
             default: Any, address: Optional[int] = None) -> Any:
    # One part failing must not cost the rest of the report, and a report must
    # say what is missing from it: the exception becomes a diagnostic.
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 (any failure of a part is reported, not raised)
        diagnostics.append(from_exception(stage, what, e, address))
        return default


# --- the parts ----------------------------------------------------------------


def _kernel_info(prog: Any, diagnostics: List[Diagnostic]) -> KernelInfo:
    from . import kernel

    fallback = KernelInfo(release="unknown", arch="unknown", page_size=0, mmu=None)
    return _guarded(diagnostics, "kernel", "kernel identity", lambda: kernel.kernel_info(prog),
                    fallback)


_P = TypeVar("_P")


def _settled(prog: Any, stage: str, read: Callable[[List[Diagnostic]], _P],
             part_diagnostics: Callable[[_P], List[Diagnostic]], diagnostics: List[Diagnostic],
             address: Optional[int] = None) -> _P:
    # read(diagnostics) once on a dump; on a kernel that moves, again while it
    # fails (lpdebug.live.settled_stage): a walk torn by a concurrent change is
    # a changed_while_reading diagnostic, not a fault of the kernel's.
    from . import live

    if not live.is_moving(prog):
        return read(diagnostics)

    def run() -> Tuple[_P, List[Diagnostic]]:
        own: List[Diagnostic] = []
        return read(own), own

    def clear(result: Tuple[_P, List[Diagnostic]]) -> None:
        del part_diagnostics(result[0])[:]
        del result[1][:]

    (value, own), torn = live.settled_stage(
        run, lambda r: list(part_diagnostics(r[0])) + list(r[1]), clear, stage, address)
    diagnostics.extend(own)
    diagnostics.extend(torn)
    return value


def _object_address(prog: Any, name: str) -> Optional[int]:
    try:
        return prog[name].address_
    except Exception:  # noqa: BLE001 (only labels a diagnostic)
        return None


def _livepatch_state(prog: Any, diagnostics: List[Diagnostic]) -> LivepatchState:
    from . import livepatch

    def read(diags: List[Diagnostic]) -> LivepatchState:
        state = _guarded(diags, "livepatch", "livepatch state",
                         lambda: livepatch.livepatch_state(prog), LivepatchState())
        # Patches that klp_ops or /sys/kernel/livepatch show but klp_patches did not give.
        diags.extend(_guarded(diags, "livepatch", "the livepatch cross-check",
                              lambda: livepatch.missing_patches(prog, state), []))
        return state

    return _settled(prog, "livepatch", read, lambda state: state.diagnostics, diagnostics,
                    _object_address(prog, "klp_patches"))


def _ftrace_state(prog: Any, diagnostics: List[Diagnostic]) -> Tuple[FtraceState, Any]:
    # The ops and the records as read; FtraceRecords are built once the report
    # knows which it shows (_ftrace_records).
    from . import ftrace

    return _settled(
        prog, "ftrace",
        lambda diags: _guarded(diags, "ftrace", "ftrace state",
                               lambda: ftrace.read_ftrace_state(prog),
                               (FtraceState(), ftrace.RecordTable([], []))),
        lambda state_table: state_table[0].diagnostics, diagnostics,
        _object_address(prog, "ftrace_ops_list"))


def _ftrace_records(prog: Any, result: TriageResult, table: Any, all_records: bool,
                    diagnostics: List[Diagnostic]) -> None:
    # Every record with all_records; otherwise only the notable ones are built
    # and named: with function_graph on, tens of thousands are enabled.
    from . import ftrace

    def build() -> List[Any]:
        keep = None
        if not all_records:
            keep = NotableRecordFilter(result.ftrace.ops, result.livepatch, result.findings,
                                         ftrace.record_flag_bits(prog))
        records = ftrace.build_records(prog, table, all_records, ops=result.ftrace.ops, keep=keep)
        return records if all_records else sorted(records, key=lambda r: r.ip)

    if table.ips:
        result.ftrace.records = _guarded(diagnostics, "ftrace", "ftrace records", build, [])
    if not all_records:
        result.ftrace.selection = "notable"


def _enumerate_tasks(prog: Any, progress: Optional[Progress],
                     diagnostics: List[Diagnostic]) -> Tuple[List[TaskTrace], Optional[TaskCensus]]:
    from . import tasks

    found = _settled(
        prog, "tasks",
        lambda diags: _guarded(diags, "tasks", "the task enumeration",
                               lambda: tasks.find_tasks(prog), None),
        lambda found: found.diagnostics if found is not None else [], diagnostics,
        _object_address(prog, "init_task"))
    if found is None:
        return [], None
    diagnostics.extend(found.diagnostics)
    traced = _guarded(diagnostics, "tasks", "the task traces",
                      lambda: tasks.task_traces(prog, found, progress), None)
    if traced is None:
        return [], found.census
    traces, trace_diagnostics = traced
    diagnostics.extend(trace_diagnostics)
    traces.sort(key=_TASK_ORDER)
    return traces, found.census


def task_traces(prog: Any, *, progress: Optional[Progress] = None,
                diagnostics: Optional[List[Diagnostic]] = None) -> List[TaskTrace]:
    """
    Every task's true backtrace with its shadow stacks, sorted by pid: the
    tasks of every source :mod:`lpdebug.tasks` knows (the pid IDR, the task
    list, the runqueues, the crash notes), each CPU's idle task included. A
    task whose trace raises keeps its row; what could not be enumerated or
    traced goes to ``diagnostics``.
    """
    traces, _ = _enumerate_tasks(prog, progress, diagnostics if diagnostics is not None else [])
    return traces


_TASK_ORDER = sort_key(("pid", "address"))


def _toc_map(prog: Any, diagnostics: List[Diagnostic]) -> Any:
    from . import toc

    return _guarded(diagnostics, "tocs", "module TOCs", lambda: toc.module_tocs(prog), None)


# Task-less findings (crashed CPUs, module prologues) first, then by task and
# frame: the order a reader walks the report in (TriageResult.findings' order).
findings_sort_key = sort_key(FINDINGS_ORDER)


def _findings(prog: Any, result: TriageResult, tocs: Any,
              diagnostics: List[Diagnostic]) -> List[Finding]:
    from . import checks, live

    found: List[Finding] = _guarded(
        diagnostics, "checks", "the checks",
        lambda: list(checks.all_findings(prog, result.tasks, tocs, result.livepatch)),
        [],
    )
    if found and live.is_moving(prog):
        # A transition's findings rest on its duration and its blocking tasks, read
        # settled already: only the findings about words read once are read again.
        timed = checks.check_transition(result.livepatch)
        words = [f for f in found if f not in timed]
        found = [f for f in found if f in timed] + _guarded(
            diagnostics, "checks", "the second read of the findings",
            lambda: _reproduced(prog, words, tocs, result.tasks, diagnostics), words)
    return sorted(found, key=findings_sort_key)


def _reproduced(prog: Any, found: List[Finding], tocs: Any, traces: List[TaskTrace],
                diagnostics: List[Diagnostic]) -> List[Finding]:
    # A live kernel's finding stands only if a fresh read of everything it
    # rests on (the task, the livepatch state, the module TOCs) has it too.
    from drgn.helpers.linux.pid import find_task

    from . import checks, live, livepatch, toc
    from .backtrace import true_backtrace

    fresh: Dict[str, Any] = {}

    def tocs_again() -> Any:
        if "tocs" not in fresh:
            fresh["tocs"] = toc.module_tocs(prog) if tocs is not None else None
        return fresh["tocs"]

    def state_again() -> Any:
        if "state" not in fresh:
            fresh["state"] = livepatch.livepatch_state(prog)
        return fresh["state"]

    def reread(pid: Optional[int]) -> List[Finding]:
        if pid is None:
            again = tocs_again()
            return checks.check_tocs(again) if again is not None else []
        task = find_task(prog, pid)
        if not task:
            return []
        trace, torn = live.settled_trace(task, true_backtrace)
        if torn is not None:
            return []
        again = tocs_again()
        if again is None:
            return checks.check_livepatch_stack_structure(trace) + checks.check_shadow_stacks(trace)
        return checks.check_task(trace, again, state_again())

    kept, torn = live.reverify_findings(found, reread, {t.pid: t.address for t in traces})
    diagnostics.extend(torn)
    return kept


def _blocking_tasks(result: TriageResult, diagnostics: List[Diagnostic]) -> None:
    from . import livepatch

    transition = result.livepatch.transition
    if transition.patch is None:
        return
    blocking = _guarded(
        diagnostics, "transition", "the tasks blocking the transition",
        lambda: list(livepatch.blocking_tasks(result.livepatch, result.tasks)),
        [],
    )
    transition.blocking = sorted(blocking, key=lambda b: (b.pid, b.comm))


def _gather(result: TriageResult, stage_diagnostics: Sequence[Diagnostic]) -> None:
    # What a stage put on the result itself, the stages' own failures, then every part's,
    # in the order of the report (all_diagnostics lists each diagnostic once).
    result.diagnostics = list(result.diagnostics) + list(stage_diagnostics)
    result.diagnostics = list(all_diagnostics(result))


def _coverage(prog: Any, result: TriageResult) -> None:
    # After every other stage and after the diagnostics are gathered: which
    # modules the findings, frames and livepatch state involve, what a module
    # without names left unchecked, and what the other stages could not read.
    import drgn

    from . import coverage, debuginfo

    if not isinstance(prog, drgn.Program):
        return  # a stand-in for a program (the tests' fakes) has no modules to cover
    found = _guarded(result.diagnostics, "coverage", "debug info coverage",
                     lambda: debuginfo.coverage(prog), None)
    if found is None:
        return
    coverage.mark_usage(found, result)
    result.diagnostics.extend(coverage.missing_debug_info_diagnostics(found, result))
    result.diagnostics.extend(coverage.damaged_file_diagnostics(found))
    coverage.count_diagnostics(found, result)
    result.coverage = found


def toc_check(prog: Any, *, progress: Optional[Progress] = None) -> TriageResult:
    """
    The TOC part of :func:`triage` alone: module TOCs, every task's trace and
    the findings, without walking ftrace records.
    """
    diagnostics: List[Diagnostic] = []
    result = TriageResult(
        kernel=_kernel_info(prog, diagnostics),
        livepatch=_livepatch_state(prog, diagnostics),
        ftrace=FtraceState(),
    )
    result.tasks, result.census = _enumerate_tasks(prog, progress, diagnostics)
    tocs = _toc_map(prog, diagnostics)
    result.tocs = tocs
    result.findings = _findings(prog, result, tocs, diagnostics)
    _gather(result, diagnostics)
    _coverage(prog, result)
    return result


def triage(prog: Any, *, all_records: bool = False,
           progress: Optional[Progress] = None) -> TriageResult:
    """
    Run every walker and check over ``prog`` and return one
    :class:`~lpdebug.model.TriageResult`. Never raises for what it reads: a
    stage that fails becomes a ``stage_failed`` (or ``unreadable``) diagnostic
    naming it, and ``result.diagnostics`` lists every diagnostic of the
    report; :func:`exit_status` turns them into "incomplete".

    :param all_records: report every dyn_ftrace record, not only the enabled
        or otherwise non-default ones.
    :param progress: ``progress(stage, done, total)``, called as the walk of
        the tasks advances.
    """
    diagnostics: List[Diagnostic] = []
    filtered_marks: List[Tuple[str, int]] = []

    def mark(name: str) -> None:
        # which stage read a page the dump's filter excluded (see filtered_diagnostics)
        filtered_marks.append((name, _filtered_count(prog)))

    def stage(name: str) -> None:
        mark(name)
        if progress is not None:
            progress(name, 0, 0)

    stage("kernel")
    result = TriageResult(
        kernel=_kernel_info(prog, diagnostics),
        livepatch=LivepatchState(),
        ftrace=FtraceState(),
    )
    stage("livepatch")
    result.livepatch = _livepatch_state(prog, diagnostics)
    stage("ftrace")
    result.ftrace, record_table = _ftrace_state(prog, diagnostics)
    mark("tasks")
    result.tasks, result.census = _enumerate_tasks(prog, progress, diagnostics)
    stage("tocs")
    tocs = _toc_map(prog, diagnostics)
    result.tocs = tocs
    stage("transition")
    # The blocking tasks come first: the transition_blocked finding carries them.
    _blocking_tasks(result, diagnostics)
    stage("checks")
    result.findings = _findings(prog, result, tocs, diagnostics)
    _ftrace_records(prog, result, record_table, all_records, diagnostics)
    stage("kernel_log")
    log_lines = _kernel_log_lines(prog, result, diagnostics)
    diagnostics.extend(filtered_diagnostics(prog, filtered_marks))
    # What changed under the walks that drgn made while the target was opened.
    from . import live

    diagnostics.extend(live.noted_changes(prog))
    _gather(result, diagnostics)
    _coverage(prog, result)
    result.summary = summarize(result, log_lines)
    return result


# Lines of the kernel log a report carries: what a ticket asks for.
KERNEL_LOG_TAIL = 50


def _kernel_log_lines(prog: Any, result: TriageResult,
                      diagnostics: List[Diagnostic]) -> List[str]:
    # The whole log: the summary looks for the oops, which may lie before the tail.
    from . import kernel

    try:
        lines = kernel.kernel_log(prog)
    except Exception as e:  # noqa: BLE001 (a log that cannot be read is reported, not raised)
        diagnostic = from_exception("kernel_log", "the kernel log", e)
        diagnostics.append(diagnostic)
        result.kernel_log = KernelLog(error=diagnostic.message)
        return []
    result.kernel_log = KernelLog(tail=lines[-KERNEL_LOG_TAIL:], total_lines=len(lines))
    return lines


def _filtered_count(prog: Any) -> int:
    from . import dumpfile

    return len(dumpfile.filtered_reads(prog))


def filtered_diagnostics(prog: Any, marks: Sequence[Tuple[str, int]] = ()) -> List[Diagnostic]:
    """
    One ``filtered`` diagnostic per run of consecutive pages the dump's filter
    excluded and the report tried to read. ``marks`` are ``(stage, number of
    filtered pages read when it started)``: a page belongs to the stage that
    read it first ("target" for reads made while opening the dump).
    """
    from . import dumpfile

    dump = dumpfile.dump_file(prog)
    reads = dumpfile.filtered_reads(prog)
    if dump is None or not reads:
        return []
    why = dumpfile.excluded_by(prog)

    def stage_of(order: int) -> str:
        name = "target"
        for stage, start in marks:
            if start <= order:
                name = stage
        return name

    diagnostics: List[Diagnostic] = []
    run: List[Any] = []

    def flush() -> None:
        if not run:
            return
        pages = len(run)
        what = "page" if pages == 1 else f"{pages} pages"
        diagnostics.append(Diagnostic(
            stage=stage_of(run[0].order),
            kind=DiagnosticKind.FILTERED,
            address=run[0].address,
            message=(f"{what} at {run[0].address:#x} (physical {run[0].physical:#x}) excluded from the"
                     f" dump by {why}: what the report says about that memory is unknown"),
        ))
        run.clear()

    for read in reads:
        if run and not (read.physical == run[-1].physical + dump.page_size
                        and stage_of(read.order) == stage_of(run[-1].order)):
            flush()
        run.append(read)
    flush()
    return diagnostics


