# SPDX-License-Identifier: GPL-2.0-or-later
"""
Typed diagnostics: what a walker or a triage stage could not check, as a
:class:`~lpdebug.model.Diagnostic` (stage, kind, address, message).

The kind is decided here, once, from what went wrong (the exception's type,
or the walker saying which rule the data broke), never later from the text.
"""

from __future__ import annotations

from typing import Iterator, Optional, Tuple, Type

from .model import Diagnostic, DiagnosticKind, TaskTrace, TriageResult

__all__ = (
    "all_diagnostics",
    "task_diagnostics",
    "corrupt",
    "cycle",
    "from_exception",
    "missing_debug_info",
    "unsupported",
)


def _unreadable_errors() -> Tuple[Type[BaseException], ...]:
    # drgn refuses an address it cannot translate (hash-MMU module memory without
    # lpdebug.hash_mmu) with NotImplementedError: as unreadable as a fault. (drgn is
    # imported here, not above, so that the front ends can load the exit statuses of
    # lpdebug.report before they check that drgn is installed.)
    import drgn

    return (drgn.FaultError, NotImplementedError)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else ""


def from_exception(stage: str, what: str, e: BaseException,
                   address: Optional[int] = None) -> Diagnostic:
    """
    ``what`` could not be checked because of ``e``: a fault is ``unreadable`` (at the
    fault's address), a failed type or symbol lookup ``missing_debug_info``, anything else
    ``stage_failed``.
    """
    detail = _first_line(e)
    if isinstance(e, _unreadable_errors()):
        fault_address = getattr(e, "address", None)
        return Diagnostic(stage, DiagnosticKind.UNREADABLE,
                          fault_address if fault_address is not None else address,
                          f"{what} unreadable" + (f": {detail}" if detail else ""))
    if isinstance(e, LookupError):
        return Diagnostic(stage, DiagnosticKind.MISSING_DEBUG_INFO, address,
                          f"{what} needs debug info that is missing" + (f": {detail}" if detail else ""))
    return Diagnostic(stage, DiagnosticKind.STAGE_FAILED, address,
                      f"{what} failed: {type(e).__name__}" + (f": {detail}" if detail else ""))


def corrupt(stage: str, address: Optional[int], message: str) -> Diagnostic:
    """Read, but impossible: bad magic, out of bounds, a broken link."""
    return Diagnostic(stage, DiagnosticKind.CORRUPT, address, message)


def cycle(stage: str, address: Optional[int], message: str) -> Diagnostic:
    """A list or chain that loops back on itself at ``address``."""
    return Diagnostic(stage, DiagnosticKind.CYCLE, address, message)


def missing_debug_info(stage: str, message: str) -> Diagnostic:
    """A check that needs debug info (a type, a symbol) that was not found."""
    return Diagnostic(stage, DiagnosticKind.MISSING_DEBUG_INFO, None, message)


def unsupported(stage: str, message: str) -> Diagnostic:
    """The target is not what the check is for (not ppc64, not a Linux kernel)."""
    return Diagnostic(stage, DiagnosticKind.UNSUPPORTED, None, message)


def task_diagnostics(trace: TaskTrace) -> Iterator[Diagnostic]:
    """Every diagnostic of one task: its trace, its ret_stack and its livepatch stack."""
    yield from trace.diagnostics
    yield from trace.ret_stack_diagnostics
    stack = trace.livepatch_stack
    if stack is not None:
        if stack.bounds_error is not None:
            yield stack.bounds_error
        yield from stack.diagnostics


def all_diagnostics(result: TriageResult) -> Iterator[Diagnostic]:
    """
    Every diagnostic of ``result``: its own list, then those of each part (kernel,
    livepatch, ftrace, each task, the TOCs) that the list does not hold already.
    """
    seen = set()

    def new(items: Iterator[Diagnostic]) -> Iterator[Diagnostic]:
        for d in items:
            if id(d) not in seen:
                seen.add(id(d))
                yield d

    def parts() -> Iterator[Diagnostic]:
        yield from result.diagnostics
        yield from result.kernel.diagnostics
        yield from result.livepatch.diagnostics
        yield from result.ftrace.diagnostics
        for task in result.tasks:
            yield from task_diagnostics(task)
        if result.tocs is not None:
            yield from result.tocs.diagnostics

    return new(parts())
