# SPDX-License-Identifier: GPL-2.0-or-later
"""
Text tables for people: each part of the model as a tabulate table, and the
whole triage report.

Every function returns a string (no printing), so the drgn commands, the CLI
and gdb show the same text. ``describe`` arguments name an address
(``symbol+0xoff [module]``); front ends pass
:meth:`lpdebug.symbols.Symbolizer.describe`, and without one an address is
shown as hex.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Optional, Sequence

from tabulate import tabulate

from .model import (
    Coverage,
    Diagnostic,
    FgraphEntry,
    Finding,
    Frame,
    FtraceOps,
    FtraceRecord,
    KernelInfo,
    KernelLog,
    KlpTransition,
    LivepatchStack,
    LivepatchState,
    TaskCensus,
    Summary,
    TaskTrace,
    TocMap,
    TriageResult,
)
from .notable import notable_records

__all__ = (
    "hex_or_dash",
    "coverage_line",
    "render_coverage",
    "render_kernel",
    "render_livepatch",
    "render_transition",
    "render_ftrace_ops",
    "render_records",
    "notable_records",
    "render_backtrace",
    "render_shadow_stacks",
    "render_findings",
    "render_tocs",
    "render_diagnostics",
    "result_line",
    "render_summary",
    "render_census",
    "render_kernel_log",
    "render_triage",
    "SUMMARY_MAX_LINES",
)

Describe = Callable[[int], str]

_TABLE_FORMAT = "simple"


def hex_or_dash(value: Optional[int]) -> str:
    return "-" if value is None else f"{value:#x}"


def _yes(flag: Optional[bool]) -> str:
    if flag is None:
        return "-"
    return "yes" if flag else "no"


def _name(name: Optional[str], module: Optional[str] = None) -> str:
    text = name if name else "?"
    return f"{text} [{module}]" if module else text


def _describe(describe: Optional[Describe], addr: Optional[int]) -> str:
    if addr is None:
        return "-"
    if describe is None:
        return f"{addr:#x}"
    return describe(addr)


def _table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    if not rows:
        return "(none)"
    return tabulate(rows, headers=list(headers), tablefmt=_TABLE_FORMAT,
                    disable_numparse=True)


def _section(title: str, body: str) -> str:
    return f"{title}\n{'-' * len(title)}\n{body}\n"


def diagnostic_line(d: Diagnostic) -> str:
    """One diagnostic as one line: ``[stage] kind at 0xaddress: message``."""
    where = f" at {d.address:#x}" if d.address is not None else ""
    return f"[{d.stage}] {d.kind.value}{where}: {d.message}"


def render_diagnostics(diagnostics: Iterable[Diagnostic], title: str = "Could not check") -> str:
    """What could not be checked, one line each; empty when nothing."""
    lines = [diagnostic_line(d) for d in diagnostics]
    if not lines:
        return ""
    return _section(f"{title} ({len(lines)})", "\n".join(f"  {line}" for line in lines))


def result_line(findings: int, diagnostics: int) -> str:
    """The verdict line: complete or not, and how many findings."""
    found = f"{findings} finding{'' if findings == 1 else 's'}"
    if diagnostics:
        return (f"Result: INCOMPLETE ({diagnostics} thing{'' if diagnostics == 1 else 's'} "
                f"could not be checked, listed below), {found}")
    return f"Result: complete, {found}"


_MISSED_SHOWN = 20
_SOURCE_TITLES = {"pid_idr": "pid IDR", "task_list": "task list", "runqueue": "runqueues",
                  "crash_notes": "crash notes"}


def render_census(census: Optional[TaskCensus]) -> str:
    """How the tasks were found: each source's count, the kernel's own count, the tasks a source missed."""
    if census is None:
        return ""
    found = ", ".join(f"{_SOURCE_TITLES.get(k, k)} {n}" + (" (broke off)" if k in census.failed else "")
                      for k, n in census.found.items())
    lines = [f"{census.tasks} tasks found ({found}); {census.counted} with a pid, the kernel counts "
             + (str(census.nr_threads) if census.nr_threads is not None else "?") + " (nr_threads)"]
    # A source that broke off misses every task after the break: its own line
    # says so. The tasks worth a line are those a source that ran through missed.
    telling = [m for m in census.missed if set(m.missed_by) - set(census.failed)]
    for m in telling[:_MISSED_SHOWN]:
        by = ", ".join(_SOURCE_TITLES.get(s, s) for s in m.found_by) or "-"
        missed = ", ".join(_SOURCE_TITLES.get(s, s) for s in m.missed_by)
        pid = str(m.pid) if m.pid >= 0 else "?"
        lines.append(f"  PID {pid} ({m.comm}) at {m.address:#x}: found by {by} only, not by {missed}"
                     + (" (exiting: already unhashed)" if m.exiting else ""))
    if len(telling) > _MISSED_SHOWN:
        lines.append(f"  ... and {len(telling) - _MISSED_SHOWN} more (the JSON lists them all)")
    if len(census.missed) > len(telling):
        lines.append(f"  {len(census.missed) - len(telling)} task(s) not found by a source that broke off")
    return _section("Tasks", "\n".join(lines))


# --- coverage -----------------------------------------------------------------


def _found_by(how: Optional[str]) -> str:
    return {"given": "given with -s", "search": "found by the debug info search"}.get(how or "", "")


def coverage_line(c: Coverage) -> str:
    """One line: vmlinux's debug info, modules with debug info, filtered and unread parts."""
    with_info = len(c.modules) - len(c.modules_without_debug_info)
    parts = [f"vmlinux {'debug info ' + c.vmlinux_debug_file if c.vmlinux_debug_file else 'without debug info'}",
             f"{with_info} of {len(c.modules)} modules with debug info"]
    if c.modules_without_debug_info:
        kallsyms = [m.name for m in c.modules if m.debug_file is None and m.names_from == "kallsyms"]
        nameless = [m.name for m in c.modules if m.names_from is None]
        missing = "missing: " + ", ".join(c.modules_without_debug_info)
        if kallsyms and not nameless:
            missing += ", named from kallsyms"
        elif nameless:
            missing += "; unnamed: " + ", ".join(nameless)
        parts[-1] += f" ({missing})"
    if c.refused:
        parts.append(f"{len(c.refused)} file(s) refused")
    if c.filtered_pages is not None:
        parts.append(f"{c.filtered_pages} page(s) excluded by the dump filter")
    unread = sum(c.unreadable.values())
    parts.append(f"{unread} part(s) not read" if unread else "everything read")
    return "Coverage: " + "; ".join(parts)


_REFUSED_WHY = {"build_id_mismatch": "build ID differs", "not_loaded": "module not loaded",
                "damaged": "damaged"}


def render_coverage(c: Coverage) -> str:
    """
    The coverage block: vmlinux's build ID and debug info, the modules loaded
    against those with debug info (each missing one by name), refused files,
    pages the dump filter excluded, parts not read, and a warning for each
    module without debug info that the report involves.
    """
    from .coverage import warnings

    with_info = len(c.modules) - len(c.modules_without_debug_info)
    vmlinux = f"build ID {c.vmlinux_build_id or 'unknown'}, "
    vmlinux += (f"debug info {c.vmlinux_debug_file} ({_found_by(c.vmlinux_found_by)})"
                if c.vmlinux_debug_file else "no debug info")
    rows = [("vmlinux", vmlinux),
            ("modules", f"{len(c.modules)} loaded, {with_info} with debug info")]
    if c.filtered_pages is not None:
        rows.append(("filtered", f"{c.filtered_pages} page(s) the report wanted were excluded "
                                 "by the dump's filter"))
    unread = ", ".join(f"{stage} ({n})" for stage, n in c.unreadable.items())
    rows.append(("not read", unread or "nothing"))
    out = [tabulate(rows, tablefmt="plain", disable_numparse=True)]
    missing = [m for m in c.modules if m.debug_file is None]
    if missing:
        names = {"kallsyms": "its kallsyms in memory", None: "none (kallsyms unreadable)"}
        table = _table(
            [(m.name, m.build_id or "-", names.get(m.names_from, m.names_from),
              ", ".join(m.used_by) or "-") for m in missing],
            ("module without debug info", "build ID", "names from", "used by the report"))
        out.append(table)
    if c.refused:
        out.append(_table(
            [(r.file, r.module, r.file_build_id or "-", r.loaded_build_id or "-",
              _REFUSED_WHY.get(r.reason, r.reason) + (f": {r.detail}" if r.detail else ""))
             for r in c.refused],
            ("refused file", "module", "its build ID", "loaded module's build ID", "why")))
    notes = [f"warning: {line}" for line in warnings(c)] + [f"error: {e}" for e in c.errors]
    if notes:
        out.append("\n".join(notes))
    return "\n\n".join(out)


# --- kernel -------------------------------------------------------------------


def render_kernel(k: KernelInfo) -> str:
    rows = [
        ("release", k.release),
        ("arch", k.arch),
        ("page size", k.page_size),
        ("MMU", k.mmu or "-"),
        ("ELF ABI", k.elf_abi if k.elf_abi is not None else "-"),
        ("livepatch", _yes(k.livepatch)),
        ("fgraph layout", k.fgraph_layout or "-"),
        ("build ID", k.build_id or "-"),
    ]
    return tabulate(rows, tablefmt="plain", disable_numparse=True)


# --- livepatch ----------------------------------------------------------------


def render_transition(t: KlpTransition) -> str:
    if t.patch is None:
        return "no transition in progress"
    lines = [f"patch {t.patch} is in transition to {t.target_state or '?'}"]
    if t.blocking:
        rows = [
            (b.pid, b.comm, b.patch_state, b.function or "?",
             "-" if b.frame is None else b.frame)
            for b in sorted(t.blocking, key=lambda b: (b.pid, b.comm))
        ]
        lines.append(f"{len(t.blocking)} task(s) not yet in the target state:")
        lines.append(_table(rows, ("pid", "comm", "patch_state", "holding function", "frame")))
    else:
        lines.append("no task is holding it back")
    return "\n".join(lines)


def render_livepatch(state: LivepatchState, describe: Optional[Describe] = None, *,
                     diagnostics: bool = True) -> str:
    """The livepatch state; with ``diagnostics``, what of it could not be read."""
    parts = []
    if state.unavailable:
        parts.append(state.unavailable + "\n")
    patch_rows = [
        (p.name, p.module or "-", _yes(p.enabled), _yes(p.transition), _yes(p.replace),
         _yes(p.forced), len(p.objects), hex_or_dash(p.address))
        for p in state.patches
    ]
    parts.append(_section(
        "Livepatches",
        _table(patch_rows, ("patch", "module", "enabled", "transition", "replace", "forced",
                            "objects", "klp_patch")),
    ))

    func_rows = []
    for p in state.patches:
        for o in p.objects:
            for f in o.funcs:
                func_rows.append((
                    p.name,
                    (o.name or "vmlinux") + ("" if o.loaded else " (not loaded)"),
                    f.name + (f",{f.sympos}" if f.sympos else ""),
                    hex_or_dash(f.old_addr),
                    _name(f.new_symbol, f.new_module),
                    hex_or_dash(f.new_addr),
                    _yes(f.patched),
                    _yes(f.transition),
                    _yes(f.nop),
                ))
    if func_rows:
        parts.append(_section(
            "Patched functions",
            _table(func_rows, ("patch", "object", "function[,sympos]", "old_addr",
                               "new function", "new_addr", "patched", "transition", "nop")),
        ))

    if state.ops:
        func_names: Dict[int, str] = {}
        for p in state.patches:
            for o in p.objects:
                for f in o.funcs:
                    func_names[f.address] = f"{p.name}:{f.new_symbol or hex_or_dash(f.new_addr)}"
        ops_rows = []
        for ops in sorted(state.ops, key=lambda o: o.old_addr):
            stack = " <- ".join(func_names.get(a, hex_or_dash(a)) for a in ops.func_stack)
            ops_rows.append((
                _name(ops.old_symbol) if ops.old_symbol else _describe(describe, ops.old_addr),
                hex_or_dash(ops.old_addr),
                func_names.get(ops.active, hex_or_dash(ops.active)) if ops.active else "-",
                stack or "-",
            ))
        parts.append(_section(
            "klp_ops (one per patched function; top of func_stack is in effect)",
            _table(ops_rows, ("old function", "old_addr", "in effect", "func_stack (top first)")),
        ))

    state_rows = [(p.name, s.id, s.version, hex_or_dash(s.data))
                  for p in state.patches for s in p.states]
    if state_rows:
        parts.append(_section("klp_state", _table(state_rows, ("patch", "id", "version", "data"))))

    parts.append(_section("Transition", render_transition(state.transition)))
    if state.shadow_count is not None:
        parts.append(f"shadow variables: {state.shadow_count}\n")
    if diagnostics:
        parts.append(render_diagnostics(state.diagnostics))
    return "\n".join(p for p in parts if p).rstrip("\n")


# --- ftrace -------------------------------------------------------------------


def _ip_list(ips: Sequence[int], names: Sequence[Optional[str]], limit: int = 8) -> str:
    if not ips:
        return "-"
    shown = [
        (names[i] if i < len(names) else None) or f"{ip:#x}"
        for i, ip in enumerate(ips[:limit])
    ]
    more = len(ips) - limit
    return ", ".join(shown) + (f", ... (+{more})" if more > 0 else "")


def render_ftrace_ops(ops: Sequence[FtraceOps], *, full: bool = False) -> str:
    rows = []
    limit = 1 << 30 if full else 8
    for o in ops:
        rows.append((
            hex_or_dash(o.address),
            _name(o.func_symbol, o.owner) if o.func_symbol else hex_or_dash(o.func),
            "|".join(o.flags) or "-",
            _ip_list(o.filter, o.filter_symbols, limit) if o.filter else "(all)",
            _ip_list(o.notrace, o.notrace_symbols, limit),
            hex_or_dash(o.trampoline) if o.trampoline else "-",
        ))
    return _table(rows, ("ftrace_ops", "func [owner]", "flags", "filter", "notrace", "trampoline"))


def render_records(records: Sequence[FtraceRecord], *, total: Optional[int] = None,
                   ops_names: Optional[Dict[int, str]] = None) -> str:
    rows = []
    for r in sorted(records, key=lambda r: r.ip):
        attached = ", ".join((ops_names or {}).get(a, hex_or_dash(a)) for a in r.ops)
        rows.append((
            hex_or_dash(r.ip),
            # unnamed (no symbol, or past its symbol's end): the address, as the kernel's %pS
            _name(r.symbol, r.module) if r.symbol else _name(
                f"{r.ip:#x}" + (f" (past end of {r.past_end_of})" if r.past_end_of else ""),
                r.module),
            "|".join(r.flags) or "-",
            r.refcount,
            attached or "-",
        ))
    text = _table(rows, ("ip", "function [module]", "flags", "refcount", "ops"))
    if total is not None:
        text += f"\n{len(records)} of {total} dyn_ftrace records shown"
    return text


# --- one task -----------------------------------------------------------------


def _frame_text(f: Frame) -> str:
    if f.symbol:
        text = f.symbol + (f"+{f.offset:#x}" if f.offset else "")
    else:
        text = f"{f.pc:#x}"
    return text + (f" [{f.module}]" if f.module else "")


def task_header(t: TaskTrace) -> str:
    cpu = "" if t.on_cpu is None else f" on CPU {t.on_cpu}"
    patch_state = "-" if t.patch_state is None else str(t.patch_state)
    crashed = "CRASHED " if t.crashed else ""
    moved = (" -- changed while it was read (it kept running): shown, not checked"
             if t.changed_while_reading else "")
    return (f"{crashed}PID {t.pid} ({t.comm}) state {t.state}, patch_state {patch_state}{cpu}, "
            f"task_struct {t.address:#x}{moved}")


def render_backtrace(t: TaskTrace, describe: Optional[Describe] = None) -> str:
    """
    The task's true backtrace: one row per frame, with where its return
    address came from and, where it differs, what the plain unwinder saw.
    """
    rows = []
    for f in t.frames:
        raw = "" if f.raw_pc == f.pc else _describe(describe, f.raw_pc)
        rows.append((
            f"#{f.index}",
            hex_or_dash(f.pc),
            _frame_text(f),
            hex_or_dash(f.sp),
            f.source,
            raw,
        ))
    lines = [task_header(t),
             _table(rows, ("#", "pc", "function [module]", "sp", "via", "unwinder saw"))]
    lines.extend(f"  could not check: {diagnostic_line(d)}" for d in t.diagnostics)
    return "\n".join(lines)


def _render_ret_stack(entries: Sequence[FgraphEntry], describe: Optional[Describe]) -> str:
    rows = [(e.index, _describe(describe, e.ret), _describe(describe, e.func),
             hex_or_dash(e.retp)) for e in entries]
    return _table(rows, ("#", "ret (real return address)", "func (traced function)", "retp"))


def _render_livepatch_stack(stack: LivepatchStack, describe: Optional[Describe],
                            toc_owner: Optional[Callable[[int], Optional[str]]]) -> str:
    rows = []
    for i, e in enumerate(stack.entries):
        owner = toc_owner(e.toc) if toc_owner else None
        rows.append((
            i,
            hex_or_dash(e.toc) + (f" [{owner}]" if owner else ""),
            _describe(describe, e.lr),
            "" if e.real_lr == e.lr else _describe(describe, e.real_lr),
            "ok" if e.magic_ok else f"BAD {e.magic:#x}",
        ))
    head = (f"base {stack.base:#x}, livepatch_sp {stack.sp:#x}, "
            f"{len(stack.entries)} entr{'y' if len(stack.entries) == 1 else 'ies'}")
    lines = [head, _table(rows, ("#", "saved r2 (TOC)", "saved LR", "real LR", "magic"))]
    if stack.bounds_error is not None:
        lines.append(f"  could not check: {diagnostic_line(stack.bounds_error)}")
    lines.extend(f"  could not check: {diagnostic_line(d)}" for d in stack.diagnostics)
    return "\n".join(lines)


def render_shadow_stacks(t: TaskTrace, describe: Optional[Describe] = None,
                         toc_owner: Optional[Callable[[int], Optional[str]]] = None) -> str:
    """task->ret_stack (fgraph) and the ppc64 livepatch stack of one task, oldest first."""
    parts = [task_header(t), ""]
    parts.append(_section("Function-graph shadow stack (task->ret_stack)",
                          _render_ret_stack(t.ret_stack, describe)))
    if t.livepatch_stack is None:
        parts.append(_section("Livepatch stack", "(not available on this kernel)"))
    else:
        parts.append(_section("Livepatch stack",
                              _render_livepatch_stack(t.livepatch_stack, describe, toc_owner)))
    return "\n".join(parts).rstrip("\n")


# --- findings, TOCs -----------------------------------------------------------


def render_findings(findings: Sequence[Finding]) -> str:
    if not findings:
        return "no findings"
    rows = []
    for f in findings:
        rows.append((
            f.severity,
            f.kind,
            "-" if f.pid is None else f.pid,
            "-" if f.frame is None else f"#{f.frame}",
            hex_or_dash(f.address),
            _toc_text(f.expected_toc, f.expected_module),
            _toc_text(f.actual_toc, f.actual_module),
        ))
    table = _table(rows, ("severity", "kind", "pid", "frame", "address", "expected TOC",
                          "actual TOC"))
    messages = "\n".join(f"  {i}. {f.message}" for i, f in enumerate(findings, 1))
    from .guidance import next_step

    kinds = sorted({f.kind for f in findings})
    hints = "\n".join(f"  {kind}: {next_step(kind)}" for kind in kinds if next_step(kind))
    hints = f"\n\nWhat to check next (docs/findings.md):\n{hints}" if hints else ""
    return f"{table}\n\n{messages}{hints}"


def _toc_text(toc: Optional[int], module: Optional[str]) -> str:
    if toc is None:
        return "-"
    return f"{toc:#x} [{module}]" if module else f"{toc:#x}"


def render_tocs(tocs: Optional[TocMap], *, diagnostics: bool = True) -> str:
    """The :class:`lpdebug.toc.TocMap`: each image's TOC, where it came from and the prologue check."""
    if tocs is None:
        return "(module TOCs unavailable)"
    rows = []
    for e in sorted(tocs, key=lambda e: (e.module != "vmlinux", e.module)):
        if e.prologue_mismatches:
            check = f"{len(e.prologue_mismatches)} of {e.prologues_checked} disagree"
        elif e.prologues_checked:
            check = f"{e.prologues_checked} agree"
        else:
            check = e.prologue_note or "-"
        rows.append((
            e.module,
            hex_or_dash(e.toc) if e.toc is not None else f"- ({e.reason or 'unknown'})",
            e.source or "-",
            hex_or_dash(e.section_address),
            check,
        ))
    text = _table(rows, ("image", "TOC", "from", "section", "prologue check"))
    mismatches = [
        f"  {e.module}: {fn} at {gep:#x} computes TOC {toc:#x}"
        for e in sorted(tocs, key=lambda e: e.module) for fn, gep, toc in e.prologue_mismatches
    ]
    if mismatches:
        text += "\nprologues that disagree:\n" + "\n".join(mismatches)
    if diagnostics and tocs.diagnostics:
        text += "\n" + "\n".join(f"  could not check: {diagnostic_line(d)}"
                                  for d in tocs.diagnostics)
    return text


# --- the report ---------------------------------------------------------------


def _interesting(t: TaskTrace, flagged: set, blocking: set) -> bool:
    # Frames recovered from task->ret_stack alone are everywhere once
    # function_graph is on; the livepatch stack, findings, the transition and
    # CPUs are what single a task out.
    return (
        t.pid in flagged
        or t.pid in blocking
        or t.on_cpu is not None
        or any(f.source == "livepatch" for f in t.frames)
        or bool(t.livepatch_stack and t.livepatch_stack.entries)
        or bool(t.diagnostics)
    )


SUMMARY_MAX_LINES = 15


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def render_summary(summary: Summary, kernel: Optional[KernelInfo] = None) -> str:
    """The verdict: at most :data:`SUMMARY_MAX_LINES` lines."""
    lines = []
    if kernel is not None:
        lines.append(f"kernel {kernel.release} {kernel.arch}, {kernel.mmu or '?'} MMU, "
                     f"{kernel.page_size}-byte pages")
    if summary.crashed or summary.crash_message:
        head = "CRASHED" if summary.crashed else "oops in the log"
        message = summary.crash_message or summary.panic_message or "(no crash message in the log)"
        lines.append(f"{head}: {message}")
        lines.extend(f"  {line}" for line in summary.crash_lines)
        if summary.panic_message and summary.panic_message != summary.crash_message:
            lines.append(f"  {summary.panic_message}")
    else:
        lines.append("not crashed")
    task = summary.crashed_task
    if task is not None:
        cpu = "" if task.cpu is None else f" on CPU {task.cpu}"
        lines.append(f"crashed task: PID {task.pid} ({task.comm}){cpu}, "
                     f"task_struct {task.address:#x}")
        if task.top_frames:
            lines.append("  " + " <- ".join(task.top_frames))
    patches = (f"livepatches: {summary.livepatches_enabled} enabled of {summary.livepatches}")
    if summary.transition is None:
        patches += "; no transition in progress"
    else:
        patches += (f"; {summary.transition} in transition to {summary.transition_target or '?'}"
                    f", {_plural(summary.transition_blocking, 'task')} not switched")
    lines.append(patches)
    if summary.findings:
        by_severity: Dict[str, int] = {}
        for c in summary.findings:
            by_severity[c.severity] = by_severity.get(c.severity, 0) + c.count
        total = sum(by_severity.values())
        lines.append(f"findings: {total} (" + ", ".join(
            f"{n} {sev}" + ("s" if n != 1 and sev != "info" else "")
            for sev, n in by_severity.items()) + ")")
        lines.append("  " + ", ".join(f"{c.kind} {c.count}" for c in summary.findings))
    else:
        lines.append("findings: none")
    if summary.coverage:
        lines.append(summary.coverage)
    return "\n".join(lines[:SUMMARY_MAX_LINES])


def render_kernel_log(log: KernelLog) -> str:
    if log.error:
        return f"(kernel log unavailable: {log.error})"
    if not log.tail:
        return "(empty)"
    head = f"last {len(log.tail)} of {log.total_lines} lines"
    return head + "\n" + "\n".join(log.tail)


def render_triage(result: TriageResult, describe: Optional[Describe] = None, *,
                  all_tasks: bool = False) -> str:
    """
    The whole report, verdict first: the summary (complete or not, crashed
    or not, ...), what could not be checked, the findings with what to check
    next, the backtraces worth reading (crashed first, then tasks with
    findings, blocking the transition, on a CPU, or with frames recovered
    from a shadow stack; every task with ``all_tasks``), livepatch, ftrace,
    module TOCs, the kernel and the kernel log's tail.
    """
    from .diagnostics import all_diagnostics

    diagnostics = list(all_diagnostics(result))
    head = result_line(len(result.findings), len(diagnostics))
    out = [head + "\n"]
    if result.summary is not None:
        out.append(_section("Summary", render_summary(result.summary, result.kernel)))
    if result.coverage is not None:
        out.append(_section("Coverage", render_coverage(result.coverage)))
    out.append(render_diagnostics(diagnostics))
    out.append(_section(f"Findings ({len(result.findings)})", render_findings(result.findings)))

    out.append(render_census(result.census))
    flagged = {f.pid for f in result.findings if f.pid is not None}
    blocking = {b.pid for b in result.livepatch.transition.blocking}
    crashed = [t for t in result.tasks if t.crashed]
    shown = crashed + [t for t in result.tasks if not t.crashed
                       and (all_tasks or _interesting(t, flagged, blocking))]
    title = (f"True backtraces ({len(shown)} of {len(result.tasks)} tasks"
             + ("" if all_tasks else ": crashed first, then with findings, blocking the "
                "transition, on a CPU, or with a livepatch stack") + ")")
    body = "\n\n".join(render_backtrace(t, describe) for t in shown) or "(none)"
    out.append(_section(title, body))

    out.append(render_livepatch(result.livepatch, describe, diagnostics=False) + "\n")
    ops_names = {o.address: _name(o.func_symbol, o.owner) for o in result.ftrace.ops}
    out.append(_section("ftrace_ops", render_ftrace_ops(result.ftrace.ops)))
    records = notable_records(result.ftrace, result.livepatch, result.findings)
    title = ("dyn_ftrace records that matter (attached to a filtered ftrace_ops, "
             "IPMODIFY/DIRECT, at a livepatched function, or in a finding)")
    note = (f"\n{len(records)} shown of {result.ftrace.total_records} in the kernel; "
            "the records command lists them all")
    out.append(_section(title, render_records(records, ops_names=ops_names) + note))
    if result.ftrace.unavailable:
        out.append(result.ftrace.unavailable + "\n")
    tocs = result.tocs
    if tocs is not None:
        out.append(_section("Module TOCs", render_tocs(tocs, diagnostics=False)))
    out.append(_section("Kernel", render_kernel(result.kernel)))
    if result.kernel_log is not None:
        out.append(_section("Kernel log", render_kernel_log(result.kernel_log)))
    return "\n".join(p for p in out if p).rstrip("\n") + "\n"
