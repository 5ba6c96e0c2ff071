"""
Which dyn_ftrace records a report shows: the same selection for the text
report and the default JSON, so the two views never disagree.

With function_graph on, every record of the kernel is enabled and says
nothing about one function; the records that matter are those tracing aimed
at chosen functions (an ftrace_ops with a filter: livepatch, kprobes), those
that modify the ip or call a trampoline directly, those at a livepatched
function, and those a finding points at.
"""

from __future__ import annotations

from typing import Iterable, List, Optional

from .model import Finding, FtraceRecord, FtraceState, LivepatchState

__all__ = ("NOTABLE_RECORD_FLAGS", "notable_records")

NOTABLE_RECORD_FLAGS = frozenset({"IPMODIFY", "DIRECT", "DIRECT_EN"})


def notable_records(ftrace: FtraceState, livepatch: Optional[LivepatchState] = None,
                    findings: Iterable[Finding] = ()) -> List[FtraceRecord]:
    """
    The records of ``ftrace`` that matter, sorted by ip: attached to an
    ftrace_ops with a filter, with IPMODIFY or DIRECT, inside a livepatched
    (old) function of ``livepatch``, or at the address of one of
    ``findings``.
    """
    filtered = {o.address for o in ftrace.ops if o.filter}
    patched = []
    if livepatch is not None:
        patched = [(f.old_addr, f.old_addr + max(f.old_size, 1))
                   for p in livepatch.patches for o in p.objects for f in o.funcs if f.old_addr]
    pointed_at = {f.address for f in findings if f.address is not None}
    return [
        r for r in sorted(ftrace.records, key=lambda r: r.ip)
        if filtered.intersection(r.ops)
        or NOTABLE_RECORD_FLAGS.intersection(r.flags)
        or r.ip in pointed_at
        or any(start <= r.ip < end for start, end in patched)
    ]
