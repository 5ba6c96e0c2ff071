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

import bisect
from typing import Dict, Iterable, List, Optional, Sequence

from .model import Finding, FtraceOps, FtraceRecord, FtraceState, LivepatchState

__all__ = ("NOTABLE_RECORD_FLAGS", "notable_records", "NotableRecordFilter")

NOTABLE_RECORD_FLAGS = frozenset({"IPMODIFY", "DIRECT", "DIRECT_EN"})


class _Criteria:
    # What makes a record notable besides its flags.

    def __init__(self, ops: Sequence[FtraceOps], livepatch: Optional[LivepatchState],
                 findings: Iterable[Finding]) -> None:
        filtered_ops = [o for o in ops if o.filter]
        self.filtered = {o.address for o in filtered_ops}
        # the ips an ops with a filter can be attached to
        self.filter_ips = {ip for o in filtered_ops for ip in o.filter}
        self.patched = []
        if livepatch is not None:
            self.patched = [(f.old_addr, f.old_addr + max(f.old_size, 1))
                            for p in livepatch.patches for o in p.objects for f in o.funcs if f.old_addr]
        self.pointed_at = {f.address for f in findings if f.address is not None}

    def at(self, ip: int) -> bool:
        """Notable for its ip alone: pointed at by a finding, or inside a patched function."""
        return ip in self.pointed_at or any(start <= ip < end for start, end in self.patched)

    def notable(self, ip: int, attached: Sequence[int]) -> bool:
        return not self.filtered.isdisjoint(attached) or self.at(ip)


def notable_records(ftrace: FtraceState, livepatch: Optional[LivepatchState] = None,
                    findings: Iterable[Finding] = ()) -> List[FtraceRecord]:
    """
    The records of ``ftrace`` that matter, sorted by ip: attached to an
    ftrace_ops with a filter, with IPMODIFY or DIRECT, inside a livepatched
    (old) function of ``livepatch``, or at the address of one of
    ``findings``.
    """
    criteria = _Criteria(ftrace.ops, livepatch, findings)
    return sorted((r for r in ftrace.records
                   if not NOTABLE_RECORD_FLAGS.isdisjoint(r.flags) or criteria.notable(r.ip, r.ops)),
                  key=lambda r: r.ip)


class NotableRecordFilter:
    """
    :func:`notable_records`' choice on records as read, for
    :func:`lpdebug.ftrace.build_records`, so that a report builds and names
    only the records it shows. ``flag_bits`` is
    :func:`lpdebug.ftrace.record_flag_bits` of the kernel.
    """

    def __init__(self, ops: Sequence[FtraceOps], livepatch: Optional[LivepatchState],
                 findings: Iterable[Finding], flag_bits: Dict[str, int]) -> None:
        self._criteria = _Criteria(ops, livepatch, findings)
        self._flags_mask = 0
        for name in NOTABLE_RECORD_FLAGS:
            self._flags_mask |= flag_bits.get(name, 0)

    def candidates(self, ips: Sequence[int], flags: Sequence[int]) -> List[int]:
        """
        Indexes of the records (``ips`` and raw ``flags``, side by side) that
        may be notable before their ops are known: a superset, in one pass.
        """
        # Set operations over the whole table, in C: the records a report shows
        # are a handful among tens of thousands.
        criteria = self._criteria
        special = criteria.filter_ips | criteria.pointed_at
        if criteria.patched:
            ordered = sorted(ips)
            for start, end in criteria.patched:
                special.update(ordered[bisect.bisect_left(ordered, start):bisect.bisect_left(ordered, end)])
        at = special.intersection(ips)
        notable_flags = {fl for fl in set(flags) if fl & self._flags_mask}
        found = [i for i, ip in enumerate(ips) if ip in at] if at else []
        if notable_flags:
            found = sorted(set(found).union(i for i, fl in enumerate(flags) if fl in notable_flags))
        return found

    def __call__(self, ip: int, flags: int, attached: List[int]) -> bool:
        """Whether the record is notable, ``attached`` being its ops."""
        return bool(flags & self._flags_mask) or self._criteria.notable(ip, attached)
