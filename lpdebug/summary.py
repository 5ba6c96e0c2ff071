"""
The verdict that opens a report: a pure function of the
:class:`~lpdebug.model.TriageResult` and the kernel log.

It answers, in this order, what a support engineer asks first: did the
kernel crash, with what message (from the log buffer in the dump), in which
task on which CPU and through which functions; which livepatches are on and
whether a transition is stuck; how many findings of which kind. Nothing here
reads the target.
"""

from __future__ import annotations

import collections
import re
from typing import List, Optional, Sequence, Tuple

from .model import CrashedTask, FindingCount, Frame, Summary, TriageResult

__all__ = ("CRASH_LINES", "TOP_FRAMES", "crash_report", "summarize", "strip_timestamp")

# Lines after the oops message the summary keeps (the rest is in the log section).
CRASH_LINES = 3
# Frames of the crashed task's true backtrace the summary names.
TOP_FRAMES = 5

_TIMESTAMP = re.compile(r"^\[\s*\d+\.\d+\]\s?")

# How the kernel starts an oops or crash report (lib/bug.c, arch/powerpc/kernel/traps.c and
# fault.c, kernel/panic.c, drivers/tty/sysrq.c); the first one in the log opens the report.
_CRASH_STARTS = (
    "BUG: ",
    "kernel BUG at ",
    "Oops: ",
    "Unable to handle kernel ",
    "sysrq: Trigger a crash",
    "Kernel panic - not syncing",
)
_PANIC = "Kernel panic - not syncing"


def strip_timestamp(line: str) -> str:
    """A dmesg line without its ``[seconds]`` prefix."""
    return _TIMESTAMP.sub("", line, count=1)


def crash_report(log: Sequence[str]) -> Tuple[Optional[str], List[str], Optional[str]]:
    """
    From the kernel log lines: the line that opens the crash report (the
    first oops or panic line), the :data:`CRASH_LINES` lines after it, and
    the panic line; ``(None, [], None)`` when the log shows no crash.
    """
    text = [strip_timestamp(line) for line in log]
    start = next((i for i, line in enumerate(text) if line.startswith(_CRASH_STARTS)), None)
    panic = next((line for line in reversed(text) if line.startswith(_PANIC)), None)
    if start is None:
        return None, [], panic
    after = [line for line in text[start + 1:start + 1 + CRASH_LINES]]
    return text[start], after, panic if panic != text[start] else None


def _frame_name(f: Frame) -> str:
    if f.symbol:
        text = f.symbol + (f"+{f.offset:#x}" if f.offset else "")
    else:
        text = f"{f.pc:#x}"
    return text + (f" [{f.module}]" if f.module else "")


def _coverage_line(result: TriageResult) -> Optional[str]:
    # The debug-info coverage (TriageResult.coverage and render.coverage_line(), from the
    # debug-info work) when this result carries it.
    coverage = getattr(result, "coverage", None)
    if coverage is None:
        return None
    from . import render

    line = getattr(render, "coverage_line", None)
    return line(coverage) if line is not None else None


def summarize(result: TriageResult, log: Sequence[str] = (),
              coverage: Optional[str] = None) -> Summary:
    """
    The :class:`~lpdebug.model.Summary` of ``result``; ``log`` is the whole
    kernel log (:func:`lpdebug.kernel.kernel_log`), ``coverage`` the
    debug-info coverage line when one was computed.
    """
    if coverage is None:
        coverage = _coverage_line(result)
    message, lines, panic = crash_report(log)
    crashed_trace = next((t for t in result.tasks if t.crashed), None)
    crashed_task = None
    if crashed_trace is not None:
        crashed_task = CrashedTask(
            pid=crashed_trace.pid, comm=crashed_trace.comm, cpu=crashed_trace.on_cpu,
            address=crashed_trace.address,
            top_frames=[_frame_name(f) for f in crashed_trace.frames[:TOP_FRAMES]])
    counts = collections.Counter((f.kind, f.severity) for f in result.findings)
    severity_order = {"error": 0, "warning": 1, "info": 2}
    transition = result.livepatch.transition
    return Summary(
        crashed=crashed_trace is not None or panic is not None,
        crash_message=message,
        crash_lines=lines,
        panic_message=panic,
        crashed_task=crashed_task,
        livepatches=len(result.livepatch.patches),
        livepatches_enabled=sum(1 for p in result.livepatch.patches if p.enabled),
        transition=transition.patch,
        transition_target=transition.target_state,
        transition_blocking=len(transition.blocking),
        findings=[FindingCount(kind, severity, n) for (kind, severity), n in sorted(
            counts.items(), key=lambda kv: (severity_order.get(kv[0][1], 3), kv[0][0]))],
        coverage=coverage,
    )
