"""
Coverage checks: pure functions over the model that say which parts of a
report rest on missing debug info, and count what the dump filtered or the
walkers could not read.

What comes in: a :class:`~lpdebug.model.Coverage` (from
:func:`lpdebug.debuginfo.coverage`) and the :class:`~lpdebug.model.TriageResult`.
What goes out: the coverage completed (``used_by``, ``filtered_pages``,
``unreadable``), :class:`~lpdebug.model.Diagnostic` values of kind
MISSING_DEBUG_INFO for every check that a module without names weakens, and
the warning lines a front end prints.

A module without debug info still has its range and TOC (``struct module``
in memory) and, on a kernel with CONFIG_KALLSYMS, its function names and
sizes (its own kallsyms in memory): every check then runs as with debug
info. Only a module whose kallsyms cannot be read either leaves frames
without a function, and then these checks cannot be made there:

- the frame rule at a stopped CPU (frame 0 restored r2 from its slot: the
  function's code is read from its start) and the function it returned from
  last (found by the callee's start and size);
- the livepatch-stack rule's match of a replacement function (by its start);
- the CPU rule's exemptions that depend on the function (a global-entry
  prologue, a function without one).
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Set

from .model import (
    Coverage,
    Diagnostic,
    DiagnosticKind,
    Finding,
    LivepatchState,
    TaskTrace,
    TriageResult,
)

__all__ = (
    "mark_usage",
    "missing_debug_info_diagnostics",
    "damaged_file_diagnostics",
    "count_diagnostics",
    "warnings",
)


def _split(names: object) -> List[str]:
    # A Finding's actual_module names every owner of a TOC value, joined by ",".
    return [n for n in str(names).split(",") if n] if names else []


def mark_usage(coverage: Coverage, result: Optional[TriageResult] = None, *,
               findings: Iterable[Finding] = (), tasks: Iterable[TaskTrace] = (),
               livepatch: Optional[LivepatchState] = None) -> None:
    """
    Fill each module's ``used_by``: the findings, frames or livepatch state
    (of ``result``, or given one by one) that involve it.
    """
    if result is not None:
        findings, tasks, livepatch = result.findings, result.tasks, result.livepatch
    used: Dict[str, Set[str]] = {}

    def use(module: object, what: str) -> None:
        for name in _split(module):
            used.setdefault(name, set()).add(what)

    for finding in findings:
        use(finding.expected_module, "findings")
        use(finding.actual_module, "findings")
    for trace in tasks:
        for frame in trace.frames:
            use(frame.image, "frames")
        if trace.returned_frame is not None:
            use(trace.returned_frame.image, "frames")
        use(trace.cpu_image, "frames")
    for patch in livepatch.patches if livepatch is not None else ():
        use(patch.module, "livepatch")
        for obj in patch.objects:
            use(obj.name, "livepatch")
            for func in obj.funcs:
                use(func.new_module, "livepatch")
                use(func.old_module, "livepatch")
    for module in coverage.modules:
        module.used_by = sorted(used.get(module.name, ()))


def missing_debug_info_diagnostics(coverage: Coverage, result: TriageResult) -> List[Diagnostic]:
    """
    One MISSING_DEBUG_INFO diagnostic per module without names (no debug info,
    kallsyms unreadable) that frames or livepatch functions of the report lie
    in: the checks those frames could not get (see the module docstring).
    """
    nameless = {m.name: m for m in coverage.modules if m.names_from is None}
    if not nameless:
        return []
    frames: Dict[str, int] = {}
    cpus: Dict[str, int] = {}
    for trace in result.tasks:
        for frame in trace.frames + ([trace.returned_frame] if trace.returned_frame else []):
            if frame.image in nameless and frame.symbol is None:
                frames[frame.image] = frames.get(frame.image, 0) + 1
        if trace.cpu_registers is not None and trace.cpu_image in nameless:
            cpus[trace.cpu_image] = cpus.get(trace.cpu_image, 0) + 1
    funcs: Dict[str, int] = {}
    for patch in result.livepatch.patches:
        for obj in patch.objects:
            for func in obj.funcs:
                if func.new_module in nameless and func.new_symbol is None:
                    funcs[func.new_module] = funcs.get(func.new_module, 0) + 1
    diagnostics = []
    for name in sorted(set(frames) | set(cpus) | set(funcs)):
        why = nameless[name].kallsyms_error
        reason = (f"no debug info for {name}, and its kallsyms could not be read"
                  + (f" ({why})" if why else ""))
        parts = []
        if frames.get(name):
            parts.append(f"frame and livepatch-stack rules not applied to {frames[name]} "
                         f"frame(s) in {name}: their function is unknown")
        if cpus.get(name):
            parts.append(f"CPU rule exemptions not decided for {cpus[name]} CPU(s) "
                         f"stopped in {name}")
        if funcs.get(name):
            parts.append(f"{funcs[name]} livepatch replacement function(s) in {name} unnamed")
        diagnostics.append(Diagnostic(stage="checks", kind=DiagnosticKind.MISSING_DEBUG_INFO,
                                      address=None, message="; ".join(parts) + f": {reason}"))
    return diagnostics


def damaged_file_diagnostics(coverage: Coverage) -> List[Diagnostic]:
    """
    One MISSING_DEBUG_INFO diagnostic per module debug file refused as
    damaged: the module's types and variables are unknown to the report, even
    where its kallsyms still name its functions.
    """
    diagnostics = []
    for refused in coverage.refused:
        if refused.reason != "damaged":
            continue
        module = next((m for m in coverage.modules if m.name == refused.module), None)
        names = ("its function names come from its kallsyms in memory"
                 if module is not None and module.names_from == "kallsyms"
                 else "its functions are unnamed")
        diagnostics.append(Diagnostic(
            stage="coverage", kind=DiagnosticKind.MISSING_DEBUG_INFO, address=None,
            message=(f"debug file {refused.file} of module {refused.module} is damaged "
                     f"({refused.detail or 'drgn cannot read it'}) and was not used: {names}, "
                     f"its types and variables are unknown; give an intact copy of {refused.file}")))
    return diagnostics


def _page_size(result: TriageResult) -> int:
    return result.kernel.page_size or 4096


def count_diagnostics(coverage: Coverage, result: TriageResult) -> None:
    """``filtered_pages`` and ``unreadable`` from the result's diagnostics."""
    page = _page_size(result)
    filtered = {d.address // page for d in result.diagnostics
                if d.kind == DiagnosticKind.FILTERED and d.address is not None}
    any_filtered = any(d.kind == DiagnosticKind.FILTERED for d in result.diagnostics)
    coverage.filtered_pages = len(filtered) if any_filtered else None
    unreadable: Dict[str, int] = {}
    for d in result.diagnostics:
        if d.kind in (DiagnosticKind.FILTERED, DiagnosticKind.MISSING_DEBUG_INFO):
            continue
        unreadable[d.stage] = unreadable.get(d.stage, 0) + 1
    coverage.unreadable = dict(sorted(unreadable.items()))


def warnings(coverage: Coverage) -> List[str]:
    """
    One line per module without debug info that findings, frames or the
    livepatch state involve: for stderr and the report. (Refused files are
    warned about once, when the target is opened.)
    """
    lines = []
    for module in coverage.modules:
        if module.debug_file is not None or not module.used_by:
            continue
        what = " and ".join(module.used_by)
        if module.names_from == "kallsyms":
            how = "names from its kallsyms in memory"
        else:
            how = "its functions are unnamed (kallsyms unreadable)"
        lines.append(f"no debug info for module {module.name} (build ID "
                     f"{module.build_id or 'unknown'}), in the report's {what}: {how}")
    return lines
