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

from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

from tabulate import tabulate

from .model import (
    DiagnosticKind,
    FgraphEntry,
    Finding,
    Frame,
    FtraceOps,
    FtraceRecord,
    FtraceState,
    KernelInfo,
    KlpTransition,
    LivepatchStack,
    LivepatchState,
    TaskTrace,
    TriageResult,
)

__all__ = (
    "hex_or_dash",
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
    "render_errors",
    "render_triage",
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


def render_errors(errors: Iterable[str], title: str = "Could not read") -> str:
    errors = list(errors)
    if not errors:
        return ""
    return _section(title, "\n".join(f"  {e}" for e in errors))


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


def render_livepatch(state: LivepatchState, describe: Optional[Describe] = None) -> str:
    parts = []
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
    parts.append(render_errors(state.errors))
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
            _name(r.symbol, r.module),
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
    moved = (" -- changed while it was read (it kept running): shown, not checked"
             if getattr(t, "changed_while_reading", False) else "")
    return (f"PID {t.pid} ({t.comm}) state {t.state}, patch_state {patch_state}{cpu}, "
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
    lines.extend(f"  error: {e}" for e in t.errors)
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
    lines.extend(f"  error: {e}" for e in stack.errors)
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
    return f"{table}\n\n{messages}"


def _toc_text(toc: Optional[int], module: Optional[str]) -> str:
    if toc is None:
        return "-"
    return f"{toc:#x} [{module}]" if module else f"{toc:#x}"


def render_tocs(tocs: Any) -> str:
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
    errors = getattr(tocs, "errors", [])
    if errors:
        text += "\n" + "\n".join(f"  error: {err}" for err in errors)
    return text


# --- the report ---------------------------------------------------------------


_NOTABLE_RECORD_FLAGS = {"IPMODIFY", "DIRECT", "DIRECT_EN"}


def notable_records(ftrace: FtraceState) -> List[FtraceRecord]:
    """
    The records a report shows: those attached to an ftrace_ops with a filter
    (livepatch, kprobes: tracing aimed at chosen functions) or that modify
    the ip or call directly. With function_graph on, every other record is
    enabled too and says nothing about one function.
    """
    filtered = {o.address for o in ftrace.ops if o.filter}
    return [
        r for r in sorted(ftrace.records, key=lambda r: r.ip)
        if filtered.intersection(r.ops) or _NOTABLE_RECORD_FLAGS.intersection(r.flags)
    ]


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
        or bool(t.errors)
    )


def render_triage(result: TriageResult, describe: Optional[Describe] = None, *,
                  all_tasks: bool = False) -> str:
    """
    The whole report: kernel, livepatch, ftrace, the backtraces worth reading
    (tasks with findings, blocking the transition, on a CPU, or with frames
    recovered from a shadow stack; every task with ``all_tasks``), findings
    and what could not be read.
    """
    out = [_section("Kernel", render_kernel(result.kernel))]
    out.append(render_livepatch(result.livepatch, describe))
    ops_names = {o.address: _name(o.func_symbol, o.owner) for o in result.ftrace.ops}
    out.append("")
    out.append(_section("ftrace_ops", render_ftrace_ops(result.ftrace.ops)))
    notable = notable_records(result.ftrace)
    out.append(_section(
        "dyn_ftrace records attached to a filtered ftrace_ops, or with IPMODIFY/DIRECT",
        render_records(notable, ops_names=ops_names)
        + f"\n{len(notable)} shown of {len(result.ftrace.records)} in the report"
        f" ({result.ftrace.total_records} in the kernel); the records command lists them all",
    ))
    out.append(render_errors(result.ftrace.errors))
    tocs = result.tocs
    if tocs is not None:
        out.append(_section("Module TOCs", render_tocs(tocs)))

    flagged = {f.pid for f in result.findings if f.pid is not None}
    blocking = {b.pid for b in result.livepatch.transition.blocking}
    shown = [t for t in result.tasks if all_tasks or _interesting(t, flagged, blocking)]
    title = (f"True backtraces ({len(shown)} of {len(result.tasks)} tasks"
             + ("" if all_tasks else ": with findings, blocking the transition, on a CPU, "
                "or with a livepatch stack") + ")")
    body = "\n\n".join(render_backtrace(t, describe) for t in shown) or "(none)"
    out.append(_section(title, body))
    out.append(_section(f"Findings ({len(result.findings)})", render_findings(result.findings)))
    out.append(render_errors(result.errors))
    out.append(render_errors(
        (f"{d.stage}: {d.message}" for d in result.diagnostics if d.kind == DiagnosticKind.FILTERED),
        "Excluded by the dump's filter",
    ))
    out.append(render_diagnostics(
        d for d in result.diagnostics if d.kind != DiagnosticKind.FILTERED))
    return "\n".join(p for p in out if p).rstrip("\n") + "\n"


def render_diagnostics(diagnostics: Iterable[Any]) -> str:
    """What could not be checked, one line each: kind, stage, address, why."""
    diagnostics = list(diagnostics)
    if not diagnostics:
        return ""
    lines = []
    for d in diagnostics:
        kind = getattr(d.kind, "value", d.kind).replace("_", " ")
        where = f" at {d.address:#x}" if d.address is not None else ""
        lines.append(f"  {kind} ({d.stage}){where}: {d.message}")
    return _section(f"Could not check ({len(diagnostics)})", "\n".join(lines))
