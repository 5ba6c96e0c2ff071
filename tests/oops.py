# SPDX-License-Identifier: GPL-2.0-or-later
"""
The oops a ppc64 kernel printed to its console, as the oracle of the crashed
task's backtrace.

``show_regs()`` prints ``NIP [addr] sym+off/size [mod]``, then
``show_stack(current, regs->gpr[1])`` (arch/powerpc/kernel/process.c, the
same in 5.10 and 6.12) prints ``Call Trace:`` and one line per frame of the
back chain from the faulting r1: ``[sp] [ip] sym+off/size [mod]``, where ip is
the LR save word at sp + 16. A return the graph tracer hooked prints as
``return_to_handler+0x0/...`` followed by the real return address in
parentheses (``ftrace_graph_ret_addr(current, ...)``, right for the crashed
task, which is current). The first line's word was written by a callee of
the faulting function, not by a caller: the kernel marks it ``(unreliable)``
(``lr`` is 0 there, so it always does).

So the crashed task's frames, as the kernel saw them: frame 0 is NIP (at the
faulting r1), frame k >= 1 is the k-th call-trace line (at its sp).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Optional, Tuple

# "[    1.234567] " printk time and "[T123] " / "[C1] " caller ids, when configured
_PREFIX = r"^(?:\[\s*\d+\.\d+\])?\s*(?:\[\s*[TC]\d+\])?\s*"
_SYM = r"(?P<sym>[^\s+]+)\+(?P<off>0x[0-9a-f]+)/0x[0-9a-f]+(?: \[(?P<mod>[^\]]+)\])?"
NIP = re.compile(_PREFIX + r"NIP \[(?P<ip>[0-9a-f]+)\] " + _SYM + r"\s*$")
CALL_TRACE = re.compile(_PREFIX + r"Call Trace:\s*$")
ENTRY = re.compile(_PREFIX + r"\[(?P<sp>[0-9a-f]+)\] \[(?P<ip>[0-9a-f]+)\] " + _SYM
                   + r"(?: \((?P<real>[^\s+()]+)\+(?P<realoff>0x[0-9a-f]+)/0x[0-9a-f]+"
                   r"(?: \[(?P<realmod>[^\]]+)\])?\))?(?P<unreliable> \(unreliable\))?\s*$")


@dataclass
class OopsFrame:
    symbol: str
    offset: int
    module: Optional[str]
    sp: Optional[int]  # None for frame 0 when the trace gave no line for it

    def key(self) -> Tuple[str, int, Optional[str]]:
        return (self.symbol, self.offset, self.module)


def oops_frames(console: str) -> List[OopsFrame]:
    """The crashed task's frames from the first oops on ``console`` (see the module docstring)."""
    lines = console.splitlines()
    for i, line in enumerate(lines):
        m = NIP.match(line)
        if m is None:
            continue
        frames = [OopsFrame(m.group("sym"), int(m.group("off"), 16), m.group("mod"), None)]
        j = i + 1
        while j < len(lines) and not CALL_TRACE.match(lines[j]):
            j += 1
        first = True
        for entry in lines[j + 1:]:
            e = ENTRY.match(entry)
            if e is None:
                break
            sp = int(e.group("sp"), 16)
            if first:
                first = False
                if e.group("unreliable"):
                    frames[0].sp = sp  # the faulting r1: frame 0's own frame
                    continue
            if e.group("real"):
                frames.append(OopsFrame(e.group("real"), int(e.group("realoff"), 16),
                                        e.group("realmod"), sp))
            else:
                frames.append(OopsFrame(e.group("sym"), int(e.group("off"), 16), e.group("mod"), sp))
        return frames
    raise AssertionError("no oops (NIP [...] line) on the console")


@dataclass
class TraceEntry:
    sp: int
    symbol: str  # the real return address's symbol where the graph tracer hooked it
    offset: int
    module: Optional[str]

    def key(self) -> Tuple[str, int, Optional[str]]:
        return (self.symbol, self.offset, self.module)


def call_trace_after(console: str, marker: str) -> List[TraceEntry]:
    """Every line of the first ``Call Trace:`` printed after the first line
    containing ``marker`` (e.g. ``dump_stack()`` in ``panic()``, after
    "Kernel panic - not syncing"), the ``(unreliable)`` first line included."""
    lines = console.splitlines()
    start = next((i for i, line in enumerate(lines) if marker in line), None)
    if start is None:
        raise AssertionError(f"no {marker!r} on the console")
    j = next((k for k in range(start, len(lines)) if CALL_TRACE.match(lines[k])), None)
    if j is None:
        raise AssertionError(f"no Call Trace after {marker!r}")
    entries = []
    for line in lines[j + 1:]:
        e = ENTRY.match(line)
        if e is None:
            break
        if e.group("real"):
            entries.append(TraceEntry(int(e.group("sp"), 16), e.group("real"),
                                      int(e.group("realoff"), 16), e.group("realmod")))
        else:
            entries.append(TraceEntry(int(e.group("sp"), 16), e.group("sym"), int(e.group("off"), 16),
                                      e.group("mod")))
    return entries
