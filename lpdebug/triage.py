# SPDX-License-Identifier: GPL-2.0-or-later
"""
One call that runs every walker and check over a kernel, and the JSON encoding
of its result.

:func:`triage` is what a support engineer's single command runs: kernel
identity, livepatch state, ftrace ops and records, every task's true backtrace
and shadow stacks, the module TOCs, all findings and the livepatch transition's
blocking tasks. A part that fails becomes one line in ``errors`` and the rest
of the report goes on.

:func:`to_json` encodes a :class:`~lpdebug.model.TriageResult` with the schema
``lpdebug.triage/1`` documented in ``docs/triage-schema.md`` (machine-readable:
``docs/triage.schema.json``). The encoding is deterministic: the same kernel
state gives the same bytes, whichever dump it was read from.
"""

from __future__ import annotations

import json
import sys
import types
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .model import (
    Diagnostic,
    DiagnosticKind,
    FgraphEntry,
    Finding,
    Frame,
    FtraceOps,
    FtraceRecord,
    FtraceState,
    KernelInfo,
    KlpFunc,
    KlpObject,
    KlpPatch,
    KlpTransition,
    LivepatchStackEntry,
    LivepatchState,
    TaskTrace,
    TriageResult,
)

__all__ = (
    "SCHEMA",
    "Progress",
    "triage",
    "task_traces",
    "toc_check",
    "to_json",
    "dumps",
    "findings_sort_key",
    "filtered_diagnostics",
)

SCHEMA = "lpdebug.triage/1"

# progress(stage, done, total): called as a long walk advances, so a front end
# can draw a bar. ``total`` is 0 when it is not known.
Progress = Callable[[str, int, int], None]


def _describe_exception(what: str, e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{what}: {type(e).__name__}" + (f": {text}" if text else "")


def _guarded(errors: List[str], what: str, fn: Callable[[], Any], default: Any) -> Any:
    # One part failing must not cost the rest of the report, and a report must
    # say what is missing from it: the exception becomes an error line.
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 (any failure of a part is reported, not raised)
        errors.append(_describe_exception(what, e))
        return default


# --- the parts ----------------------------------------------------------------


def _kernel_info(prog: Any, errors: List[str]) -> KernelInfo:
    from . import kernel

    fallback = KernelInfo(release="unknown", arch="unknown", page_size=0, mmu=None)
    return _guarded(errors, "kernel identity", lambda: kernel.kernel_info(prog), fallback)


def _settled(prog: Any, stage: str, read: Callable[[List[str]], Any],
             part_errors: Callable[[Any], List[str]], errors: List[str],
             diagnostics: List[Diagnostic], address: Optional[int] = None) -> Any:
    # read(errors) once on a dump; on a kernel that moves, again while it
    # fails (lpdebug.live.settled_stage): a walk torn by a concurrent change
    # is a diagnostic, not an error of the kernel's.
    from . import live

    if not live.is_moving(prog):
        return read(errors)

    def run() -> Tuple[Any, List[str]]:
        own: List[str] = []
        return read(own), own

    def clear(result: Tuple[Any, List[str]]) -> None:
        del part_errors(result[0])[:]
        del result[1][:]

    (value, own), torn = live.settled_stage(
        run, lambda r: list(part_errors(r[0])) + list(r[1]), clear, stage, address)
    errors.extend(own)
    diagnostics.extend(torn)
    return value


def _object_address(prog: Any, name: str) -> Optional[int]:
    try:
        return prog[name].address_
    except Exception:  # noqa: BLE001 (only labels a diagnostic)
        return None


def _livepatch_state(prog: Any, errors: List[str],
                     diagnostics: Optional[List[Diagnostic]] = None) -> LivepatchState:
    from . import livepatch

    return _settled(
        prog, "livepatch",
        lambda errs: _guarded(errs, "livepatch state", lambda: livepatch.livepatch_state(prog),
                              LivepatchState()),
        lambda state: state.errors, errors, [] if diagnostics is None else diagnostics,
        _object_address(prog, "klp_patches"))


def _ftrace_state(prog: Any, all_records: bool, errors: List[str],
                  diagnostics: Optional[List[Diagnostic]] = None) -> FtraceState:
    from . import ftrace

    return _settled(
        prog, "ftrace",
        lambda errs: _guarded(errs, "ftrace",
                              lambda: ftrace.ftrace_state(prog, all_records=all_records),
                              FtraceState()),
        lambda state: state.errors, errors, [] if diagnostics is None else diagnostics,
        _object_address(prog, "ftrace_ops_list"))


def _task_sort_key(trace: TaskTrace) -> Tuple[int, int]:
    return (trace.pid, trace.address)


def task_traces(prog: Any, *, progress: Optional[Progress] = None,
                errors: Optional[List[str]] = None,
                diagnostics: Optional[List[Diagnostic]] = None) -> List[TaskTrace]:
    """
    Every task's true backtrace with its shadow stacks, sorted by pid. On a
    kernel that moves while it is read (:func:`lpdebug.live.is_moving`), each
    task is read until it stands still (:func:`lpdebug.live.settled_trace`);
    one that never does is marked and named in ``diagnostics``.
    """
    from drgn.helpers.linux.pid import for_each_task

    from . import live

    if errors is None:
        errors = []
    if diagnostics is None:
        diagnostics = []
    moving = live.is_moving(prog)
    tasks = _settled(prog, "tasks",
                     lambda errs: _guarded(errs, "task list", lambda: list(for_each_task(prog)), []),
                     lambda _: [], errors, diagnostics, _object_address(prog, "init_task"))
    tasks += _guarded(errors, "idle tasks", lambda: _other_idle_tasks(prog, tasks), [])
    traces: List[TaskTrace] = []
    for done, task in enumerate(tasks):
        if progress is not None:
            progress("tasks", done, len(tasks))
        if moving:
            trace = _moving_task_trace(task, errors, diagnostics)
        else:
            trace = _guarded(errors, f"task at {_address_of(task)}", lambda: _walk_task(task),
                             None)
        if trace is not None:
            traces.append(trace)
    if progress is not None:
        progress("tasks", len(tasks), len(tasks))
    traces.sort(key=_task_sort_key)
    return traces


def _walk_task(task: Any) -> TaskTrace:
    from .backtrace import true_backtrace

    return true_backtrace(task)


def _moving_task_trace(task: Any, errors: List[str],
                       diagnostics: List[Diagnostic]) -> Optional[TaskTrace]:
    # A task that exits while it is read fails half way: that is the kernel
    # moving (its task_struct is gone or reused), not an error of the kernel.
    from . import live
    from .model import DiagnosticKind

    failure: Optional[Exception] = None
    for _ in range(live.ATTEMPTS):
        try:
            trace, torn = live.settled_trace(task, _walk_task)
        except Exception as e:  # noqa: BLE001 (reported below, as errors or as a diagnostic)
            failure = e
            continue
        if torn is not None:
            diagnostics.append(torn)
        return trace
    assert failure is not None
    if live.task_stamp(task) is None or not _still_listed(task):
        diagnostics.append(Diagnostic(
            stage="tasks", kind=DiagnosticKind.CHANGED_WHILE_READING, address=task.value_(),
            message=f"task_struct {_address_of(task)} exited while it was read "
                    f"({_describe_exception('read', failure)})"))
        return None
    errors.append(_describe_exception(f"task at {_address_of(task)}", failure))
    return None


def _still_listed(task: Any) -> bool:
    from drgn.helpers.linux.pid import find_task

    try:
        found = find_task(task.prog_, task.pid.value_())
        return bool(found) and found.value_() == task.value_()
    except Exception:  # noqa: BLE001 (an unreadable task is not listed)
        return False


def _other_idle_tasks(prog: Any, tasks: List[Any]) -> List[Any]:
    # The task list holds only CPU 0's idle task (init_task). A dump of a
    # crash holds every CPU's registers, and a CPU stopped while idle (or
    # crashed in an interrupt taken while idle) runs its own idle task: walk
    # those too, so every CPU's registers are checked.
    from drgn.helpers.linux.sched import idle_task

    from .crash_notes import crashed_cpus

    seen = {t.value_() for t in tasks}
    idle = []
    for cpu in sorted(crashed_cpus(prog)):
        task = idle_task(prog, cpu)
        if task.value_() not in seen:
            seen.add(task.value_())
            idle.append(task)
    return idle


def _address_of(task: Any) -> str:
    try:
        return f"{task.value_():#x}"
    except Exception:  # noqa: BLE001 (only used to label an error)
        return "?"


def _toc_map(prog: Any, errors: List[str]) -> Any:
    from . import toc

    return _guarded(errors, "module TOCs", lambda: toc.module_tocs(prog), None)


def findings_sort_key(f: Finding) -> Tuple[Any, ...]:
    # Task-less findings (crashed CPUs, module prologues) first, then by task
    # and frame: the order a reader walks the report in.
    return (
        f.pid is not None,
        f.pid if f.pid is not None else -1,
        f.frame is not None,
        f.frame if f.frame is not None else -1,
        f.kind,
        f.address if f.address is not None else -1,
        f.message,
    )


def _findings(prog: Any, result: TriageResult, tocs: Any, errors: List[str]) -> List[Finding]:
    from . import checks, live

    found: List[Finding] = _guarded(
        errors,
        "checks",
        lambda: list(checks.all_findings(prog, result.tasks, tocs, result.livepatch)),
        [],
    )
    if found and live.is_moving(prog):
        found = _guarded(errors, "checks (second read)",
                         lambda: _reproduced(prog, found, tocs, result.tasks,
                                             result.diagnostics), found)
    return sorted(found, key=findings_sort_key)


def _reproduced(prog: Any, found: List[Finding], tocs: Any, tasks: List[TaskTrace],
                diagnostics: List[Diagnostic]) -> List[Finding]:
    # A live kernel's finding stands only if a fresh read of everything it
    # rests on (the task, the livepatch state, the module TOCs) has it too.
    from drgn.helpers.linux.pid import find_task

    from . import checks, live, livepatch, toc

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
        trace, torn = live.settled_trace(task, _walk_task)
        if torn is not None:
            return []
        again = tocs_again()
        if again is None:
            return checks.check_livepatch_stack_structure(trace) + checks.check_shadow_stacks(trace)
        return checks.check_task(trace, again, state_again())

    kept, torn = live.reverify_findings(found, reread, {t.pid: t.address for t in tasks})
    diagnostics.extend(torn)
    return kept


def _blocking_tasks(result: TriageResult, errors: List[str]) -> None:
    from . import livepatch

    transition = result.livepatch.transition
    if transition.patch is None:
        return
    blocking = _guarded(
        errors,
        "transition blocking tasks",
        lambda: list(livepatch.blocking_tasks(result.livepatch, result.tasks)),
        [],
    )
    transition.blocking = sorted(blocking, key=lambda b: (b.pid, b.comm))


def toc_check(prog: Any, *, progress: Optional[Progress] = None) -> TriageResult:
    """
    The TOC part of :func:`triage` alone: module TOCs, every task's trace and
    the findings, without walking ftrace records.
    """
    errors: List[str] = []
    diagnostics: List[Diagnostic] = []
    result = TriageResult(
        kernel=_kernel_info(prog, errors),
        livepatch=_livepatch_state(prog, errors, diagnostics),
        ftrace=FtraceState(),
        diagnostics=diagnostics,
    )
    result.tasks = task_traces(prog, progress=progress, errors=errors, diagnostics=diagnostics)
    tocs = _toc_map(prog, errors)
    result.findings = _findings(prog, result, tocs, errors)
    result.errors = errors
    result.tocs = tocs
    return result


def triage(prog: Any, *, all_records: bool = False,
           progress: Optional[Progress] = None) -> TriageResult:
    """
    Run every walker and check over ``prog`` and return one
    :class:`~lpdebug.model.TriageResult`.

    :param all_records: report every dyn_ftrace record, not only the enabled
        or otherwise non-default ones.
    :param progress: ``progress(stage, done, total)``, called as the walk of
        the tasks advances.
    """
    errors: List[str] = []
    filtered_marks: List[Tuple[str, int]] = []

    def mark(name: str) -> None:
        # which stage read a page the dump's filter excluded (see filtered_diagnostics)
        filtered_marks.append((name, _filtered_count(prog)))

    def stage(name: str) -> None:
        mark(name)
        if progress is not None:
            progress(name, 0, 0)

    diagnostics: List[Diagnostic] = []
    stage("kernel")
    result = TriageResult(
        kernel=_kernel_info(prog, errors),
        livepatch=LivepatchState(),
        ftrace=FtraceState(),
        diagnostics=diagnostics,
    )
    stage("livepatch")
    result.livepatch = _livepatch_state(prog, errors, diagnostics)
    stage("ftrace")
    result.ftrace = _ftrace_state(prog, all_records, errors, diagnostics)
    mark("tasks")
    result.tasks = task_traces(prog, progress=progress, errors=errors, diagnostics=diagnostics)
    stage("tocs")
    tocs = _toc_map(prog, errors)
    stage("checks")
    result.findings = _findings(prog, result, tocs, errors)
    _blocking_tasks(result, errors)
    result.errors = errors
    result.tocs = tocs
    result.diagnostics.extend(filtered_diagnostics(prog, filtered_marks))
    return result


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


# --- JSON ---------------------------------------------------------------------


def _kernel_json(k: KernelInfo) -> Dict[str, Any]:
    return {
        "release": k.release,
        "arch": k.arch,
        "page_size": k.page_size,
        "mmu": k.mmu,
        "elf_abi": k.elf_abi,
        "build_id": k.build_id,
        "livepatch": k.livepatch,
        "fgraph_layout": k.fgraph_layout,
        "errors": list(k.errors),
    }


def _func_json(f: KlpFunc) -> Dict[str, Any]:
    return {
        "name": f.name,
        "sympos": f.sympos,
        "old_addr": f.old_addr,
        "new_addr": f.new_addr,
        "new_symbol": f.new_symbol,
        "patched": f.patched,
        "transition": f.transition,
        "nop": f.nop,
        "address": f.address,
        "old_module": f.old_module,
        "new_module": f.new_module,
        "old_size": f.old_size,
        "new_size": f.new_size,
    }


def _object_json(o: KlpObject) -> Dict[str, Any]:
    return {
        "name": o.name,
        "loaded": o.loaded,
        "funcs": [_func_json(f) for f in o.funcs],
        "address": o.address,
        "patched": o.patched,
        "dynamic": o.dynamic,
    }


def _patch_json(p: KlpPatch) -> Dict[str, Any]:
    return {
        "name": p.name,
        "enabled": p.enabled,
        "transition": p.transition,
        "replace": p.replace,
        # Objects and funcs keep the patch's own order: it is the order the
        # kernel applies them in and the order sysfs lists them in.
        "objects": [_object_json(o) for o in p.objects],
        "address": p.address,
        "module": p.module,
        "forced": p.forced,
        "states": [{"id": s.id, "version": s.version, "data": s.data} for s in p.states],
    }


def _transition_json(t: KlpTransition) -> Dict[str, Any]:
    return {
        "patch": t.patch,
        "target_state": t.target_state,
        "blocking": [
            {"pid": b.pid, "comm": b.comm, "function": b.function,
             "patch_state": b.patch_state, "frame": b.frame}
            for b in sorted(t.blocking, key=lambda b: (b.pid, b.comm))
        ],
    }


def _livepatch_json(lp: LivepatchState) -> Dict[str, Any]:
    return {
        # klp_patches order is the stacking order: meaningful, kept.
        "patches": [_patch_json(p) for p in lp.patches],
        "transition": _transition_json(lp.transition),
        "ops": [
            {"address": o.address, "old_addr": o.old_addr, "old_symbol": o.old_symbol,
             "func_stack": list(o.func_stack), "active": o.active}
            for o in sorted(lp.ops, key=lambda o: (o.old_addr, o.address))
        ],
        "shadow_count": lp.shadow_count,
        "errors": list(lp.errors),
    }


def _pairs_sorted(ips: Sequence[int], names: Sequence[Optional[str]]) -> List[Tuple[int, Optional[str]]]:
    padded = list(names) + [None] * (len(ips) - len(names))
    return sorted(zip(ips, padded), key=lambda p: p[0])


def _ops_json(o: FtraceOps) -> Dict[str, Any]:
    filt = _pairs_sorted(o.filter, o.filter_symbols)
    notrace = _pairs_sorted(o.notrace, o.notrace_symbols)
    return {
        "address": o.address,
        "func": o.func,
        "func_symbol": o.func_symbol,
        "owner": o.owner,
        "flags": list(o.flags),
        "flags_raw": o.flags_raw,
        "filter": [ip for ip, _ in filt],
        "filter_symbols": [name for _, name in filt],
        "notrace": [ip for ip, _ in notrace],
        "notrace_symbols": [name for _, name in notrace],
        "trampoline": o.trampoline,
        "trampoline_size": o.trampoline_size,
    }


def _record_json(r: FtraceRecord) -> Dict[str, Any]:
    return {
        "ip": r.ip,
        "symbol": r.symbol,
        "module": r.module,
        "flags": list(r.flags),
        "flags_raw": r.flags_raw,
        "refcount": r.refcount,
        "ops": sorted(r.ops),
    }


def _ftrace_json(ft: FtraceState) -> Dict[str, Any]:
    return {
        # ftrace_ops_list order is the order the kernel calls them in: kept.
        "ops": [_ops_json(o) for o in ft.ops],
        "records": [_record_json(r) for r in sorted(ft.records, key=lambda r: r.ip)],
        "total_records": ft.total_records,
        "errors": list(ft.errors),
    }


def _frame_json(f: Frame) -> Dict[str, Any]:
    return {
        "pc": f.pc,
        "symbol": f.symbol,
        "module": f.module,
        "sp": f.sp,
        "source": f.source,
        "index": f.index,
        "offset": f.offset,
        "raw_pc": f.raw_pc,
        "toc_restore": f.toc_restore,
        "toc_slot": f.toc_slot,
        "interrupted": getattr(f, "interrupted", False),
        "fgraph_entry": getattr(f, "fgraph_entry", None),
        "livepatch_entry": getattr(f, "livepatch_entry", None),
    }


def _lp_entry_json(e: LivepatchStackEntry) -> Dict[str, Any]:
    return {
        "toc": e.toc,
        "lr": e.lr,
        "real_lr": e.real_lr,
        "magic_ok": e.magic_ok,
        "address": e.address,
        "magic": e.magic,
    }


def _ret_json(e: FgraphEntry) -> Dict[str, Any]:
    return {"ret": e.ret, "func": e.func, "retp": e.retp, "index": e.index,
            "address": e.address}


def _livepatch_stack_info(lps: Any) -> Optional[Dict[str, Any]]:
    if lps is None:
        return None
    return {
        "base": lps.base,
        "sp": lps.sp,
        "depth": len(lps.entries),
        "stack_start": getattr(lps, "stack_start", None),
        "stack_end": getattr(lps, "stack_end", None),
        "task_sp": getattr(lps, "task_sp", None),
        "bounds_error": getattr(lps, "bounds_error", None),
        "errors": list(lps.errors),
    }


def _task_json(t: TaskTrace) -> Dict[str, Any]:
    lps = t.livepatch_stack
    registers = getattr(t, "cpu_registers", None)
    return {
        "pid": t.pid,
        "comm": t.comm,
        "state": t.state,
        "patch_state": t.patch_state,
        "frames": [_frame_json(f) for f in t.frames],
        "livepatch_stack": [_lp_entry_json(e) for e in lps.entries] if lps else [],
        "ret_stack": [_ret_json(e) for e in t.ret_stack],
        "address": t.address,
        "on_cpu": t.on_cpu,
        "crashed": getattr(t, "crashed", False),
        "cpu_registers": dict(sorted(registers.items())) if registers else None,
        "livepatch_stack_info": _livepatch_stack_info(lps),
        "ret_stack_errors": list(getattr(t, "ret_stack_errors", [])),
        "errors": list(t.errors),
        "changed_while_reading": t.changed_while_reading,
    }


def _tocs_json(tocs: Any) -> Dict[str, Any]:
    if tocs is None:
        return {"images": [], "errors": []}
    images = []
    for e in sorted(tocs, key=lambda e: e.module):
        images.append({
            "module": e.module,
            "toc": e.toc,
            "source": e.source,
            "reason": e.reason,
            "section_address": e.section_address,
            "prologue_toc": e.prologue_toc,
            "prologue_function": e.prologue_function,
            "prologue_address": e.prologue_address,
            "prologues_checked": e.prologues_checked,
            "prologue_mismatches": [
                {"function": fn, "address": gep, "toc": toc}
                for fn, gep, toc in sorted(e.prologue_mismatches, key=lambda m: m[1])
            ],
            "prologue_note": e.prologue_note,
        })
    return {"images": images, "errors": list(getattr(tocs, "errors", []))}


def _finding_json(f: Finding) -> Dict[str, Any]:
    return {
        "kind": f.kind,
        "severity": f.severity,
        "pid": f.pid,
        "frame": f.frame,
        "address": f.address,
        "expected_toc": f.expected_toc,
        "expected_module": f.expected_module,
        "actual_toc": f.actual_toc,
        "actual_module": f.actual_module,
        "message": f.message,
    }


def to_json(result: TriageResult) -> Dict[str, Any]:
    """The ``lpdebug.triage/1`` document for ``result`` (JSON-ready dict)."""
    return {
        "schema": SCHEMA,
        "kernel": _kernel_json(result.kernel),
        "livepatch": _livepatch_json(result.livepatch),
        "ftrace": _ftrace_json(result.ftrace),
        "tasks": [_task_json(t) for t in sorted(result.tasks, key=_task_sort_key)],
        "findings": [_finding_json(f) for f in sorted(result.findings, key=findings_sort_key)],
        "tocs": _tocs_json(result.tocs),
        "errors": list(result.errors),
        "diagnostics": [
            {"stage": d.stage, "kind": d.kind.value, "address": d.address, "message": d.message}
            for d in result.diagnostics
        ],
    }


def dumps(result: TriageResult, *, indent: Optional[int] = 1) -> str:
    """:func:`to_json` as text: sorted keys, so equal results give equal bytes."""
    return json.dumps(to_json(result), indent=indent, sort_keys=True) + "\n"


class _CallableModule(types.ModuleType):
    # ``lpdebug.triage`` names both this module and its main function: calling
    # the module runs triage(), so ``lpdebug.triage(prog)`` and
    # ``lpdebug.triage.to_json(...)`` both work however it was imported.
    def __call__(self, prog: Any, **kwargs: Any) -> TriageResult:
        return triage(prog, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
