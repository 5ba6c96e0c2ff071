# SPDX-License-Identifier: GPL-2.0-or-later
"""
lpdebug: livepatch, ftrace and shadow return stacks of ppc64 Linux kernels,
read with drgn.

The walkers take a drgn Program (or a task Object) and return the plain
dataclasses of :mod:`lpdebug.model`; :func:`triage` runs them all and the
checks over every task::

    import lpdebug

    prog = lpdebug.open_vmcore("vmcore", ["vmlinux", "modules/"])
    result = lpdebug.triage(prog)
    for finding in result.findings:
        print(finding.kind, finding.message)
    print(lpdebug.dumps(result))            # the lpdebug.triage/2 JSON
    sys.exit(lpdebug.exit_status(result))   # 0 clean, 1 findings, 3 incomplete

Names are loaded on first use, so ``import lpdebug`` is cheap and one broken
submodule does not take the others down with it.
"""

from __future__ import annotations

import importlib
from typing import Any, Dict, List

__version__ = "0.1.0"

# public name -> submodule that defines it
_EXPORTS: Dict[str, str] = {
    # targets
    "open_vmcore": "target",
    "open_running_kernel": "target",
    "open_qemu": "target",
    "qemu_session": "target",
    "close_qemu": "target",
    "load_debug_info": "target",
    # walkers
    "kernel_info": "kernel",
    "Symbolizer": "symbols",
    "livepatch_state": "livepatch",
    "blocking_tasks": "livepatch",
    "for_each_klp_patch": "livepatch",
    "for_each_klp_object": "livepatch",
    "for_each_klp_func": "livepatch",
    "for_each_klp_ops": "livepatch",
    "ftrace_ops": "ftrace",
    "ftrace_records": "ftrace",
    "for_each_ftrace_ops": "ftrace",
    "ret_stack_entries": "fgraph",
    "livepatch_stack": "livepatch_stack",
    "module_toc": "toc",
    "module_tocs": "toc",
    "vmlinux_toc": "toc",
    "true_backtrace": "backtrace",
    "find_tasks": "tasks",
    "for_each_task_in_pid_idr": "tasks",
    "for_each_task_in_task_list": "tasks",
    "for_each_runqueue_task": "tasks",
    "for_each_crash_notes_task": "tasks",
    # the whole report
    "triage": "report",
    "task_traces": "report",
    "exit_status": "report",
    "to_json": "schema",
    "dumps": "schema",
    "all_diagnostics": "diagnostics",
    # errors
    "LpdebugError": "errors",
    "TargetError": "errors",
    "DebugInfoError": "errors",
    "BuildIdMismatch": "errors",
    # model
    "Diagnostic": "model",
    "DiagnosticKind": "model",
    "KernelInfo": "model",
    "KlpFunc": "model",
    "KlpObject": "model",
    "KlpPatch": "model",
    "KlpOps": "model",
    "KlpTransition": "model",
    "BlockingTask": "model",
    "LivepatchState": "model",
    "FtraceOps": "model",
    "FtraceRecord": "model",
    "FtraceState": "model",
    "FgraphEntry": "model",
    "LivepatchStack": "model",
    "LivepatchStackEntry": "model",
    "Frame": "model",
    "TaskTrace": "model",
    "Finding": "model",
    "ModuleToc": "model",
    "TocMap": "model",
    "TriageResult": "model",
    "TaskSource": "model",
    "TaskCensus": "model",
    "MissedTask": "model",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lpdebug' has no attribute {name!r}")
    value = getattr(importlib.import_module("." + module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(__all__))
