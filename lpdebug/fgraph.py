# SPDX-License-Identifier: GPL-2.0-or-later
"""
The function-graph tracer's shadow return stack, ``task->ret_stack``.

What comes in: a ``struct task_struct`` Object. What goes out:
:class:`~lpdebug.model.FgraphEntry` records, oldest first, and the real
return address behind each ``return_to_handler`` a stack walk meets.

Entry points:

- :func:`fgraph_layout` -- ``"array"``, ``"offset"`` or None (no fgraph).
- :func:`read_ret_stack` -- ``(entries, diagnostics)`` for one task; never raises
  for bad memory or a corrupt stack, it reports them as diagnostics.
- :func:`ret_stack_entries` -- the entries only.
- :func:`return_to_handler_address` -- the trampoline's address.
- :func:`records_retp` -- whether entries record ``retp`` (powerpc 5.4+).
- :func:`fgraph_ret_addr` with :class:`FgraphCursor` -- the kernel's
  ``ftrace_graph_ret_addr()`` over decoded entries.

Two layouts, told apart by the type of ``task_struct.ret_stack`` in
:func:`lpdebug.kernel.fgraph_layout` (re-exported here):

- ``"array"`` (up to 6.10): ``struct ftrace_ret_stack *``, an array indexed
  0..``curr_ret_stack`` (-1 = empty). Kernels up to 4.19 may bias the index
  by -FTRACE_NOTRACE_DEPTH (65536) while tracing is paused for the task.
- ``"offset"`` (6.11 and later): ``unsigned long *``, one page of words.
  ``curr_ret_stack`` is a word offset (0 = empty). Each push writes the frame
  (``sizeof(struct ftrace_ret_stack)`` rounded up to words), then one word of
  type BITMAP (or RESERVED while the push is in progress) whose low 10 bits
  are the distance back to the frame, then optional data blocks, each topped
  by a DATA word with the distance back to the same frame. The walk reads the
  word below the current offset, steps back by its distance, and repeats.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import List, Optional, Tuple

import drgn

from . import kernel
from .diagnostics import corrupt, from_exception
from .kernel import fgraph_layout
from .model import Diagnostic, FgraphEntry

# The stage of lpdebug.report.triage that reads the shadow stacks.
STAGE = "tasks"

# drgn refuses addresses it cannot translate (hash-MMU module memory without
# lpdebug.hash_mmu) with NotImplementedError: as unreadable as a fault.
_UNREADABLE = (drgn.FaultError, NotImplementedError)

__all__ = (
    "FgraphCursor",
    "fgraph_layout",
    "fgraph_ret_addr",
    "read_ret_stack",
    "records_retp",
    "ret_stack_entries",
    "return_to_handler_address",
)

# FTRACE_RETFUNC_DEPTH: the array layout's capacity (include/linux/ftrace.h: 50 in 5.10.223 and 6.1.192).
ARRAY_CAPACITY = 50
# FTRACE_NOTRACE_DEPTH: bias subtracted from curr_ret_stack (kernels <= 4.19).
NOTRACE_BIAS = 65536

OFFSET_MASK = 0x3FF
TYPE_SHIFT = 10
TYPE_MASK = 0x3
TYPE_RESERVED, TYPE_BITMAP, TYPE_DATA = 0, 1, 2


def _word_format(prog: drgn.Program) -> str:
    little = bool(prog.platform.flags & drgn.PlatformFlags.IS_LITTLE_ENDIAN)
    return "<" if little else ">"


def return_to_handler_address(prog: drgn.Program) -> Optional[int]:
    """
    Address of the ``return_to_handler`` trampoline's code, or None when the
    kernel has no such symbol. On ELFv1 the plain name may be a function
    descriptor; the dot symbol is the code.
    """
    for name in (".return_to_handler", "return_to_handler"):
        try:
            return prog.symbol(name).address
        except LookupError:
            continue
    return None


@dataclass
class _FrameLayout:
    size: int
    ret: int
    func: int
    retp: Optional[int]  # None: the kernel records no retp (powerpc <= 5.3)


@kernel.cached
def _frame_layout(prog: drgn.Program) -> _FrameLayout:
    # asked once a task: a fact of the program
    frame_type = prog.type("struct ftrace_ret_stack")
    retp = drgn.offsetof(frame_type, "retp") if frame_type.has_member("retp") else None
    return _FrameLayout(
        size=drgn.sizeof(frame_type),
        ret=drgn.offsetof(frame_type, "ret"),
        func=drgn.offsetof(frame_type, "func"),
        retp=retp,
    )


def _decode_frame(buf: bytes, at: int, layout: _FrameLayout, fmt: str) -> Tuple[int, int, int]:
    ret = struct.unpack_from(fmt + "Q", buf, at + layout.ret)[0]
    func = struct.unpack_from(fmt + "Q", buf, at + layout.func)[0]
    retp = 0 if layout.retp is None else struct.unpack_from(fmt + "Q", buf, at + layout.retp)[0]
    return ret, func, retp


def _read_array(task: drgn.Object, base: int, layout: _FrameLayout, fmt: str,
                errors: List[Diagnostic]) -> List[FgraphEntry]:
    prog = task.prog_
    top = task.curr_ret_stack.value_()
    if top < -1:
        top += NOTRACE_BIAS
    if top == -1:
        return []
    if not 0 <= top < ARRAY_CAPACITY:
        errors.append(corrupt(
            STAGE, task.curr_ret_stack.address_,
            f"ret_stack inconsistent: curr_ret_stack {task.curr_ret_stack.value_()} "
            f"is outside the array of {ARRAY_CAPACITY} entries"))
        return []
    try:
        buf = prog.read(base, (top + 1) * layout.size)
    except _UNREADABLE as e:
        errors.append(from_exception(STAGE, f"ret_stack at {base:#x}", e))
        return []
    entries = []
    for i in range(top + 1):
        ret, func, retp = _decode_frame(buf, i * layout.size, layout, fmt)
        entries.append(FgraphEntry(index=i, ret=ret, func=func, retp=retp,
                                   address=base + i * layout.size))
    return entries


def _shadow_stack_words(prog: drgn.Program) -> int:
    # SHADOW_STACK_SIZE is PAGE_SIZE (kernel/trace/fgraph.c, 6.11+). Without
    # the page size, the largest ppc64 page bounds it (kernel.PPC64_MAX_PAGE_SIZE).
    return (kernel.page_size(prog) or kernel.PPC64_MAX_PAGE_SIZE) // 8


def _read_offsets(task: drgn.Object, base: int, layout: _FrameLayout, fmt: str,
                  errors: List[Diagnostic]) -> List[FgraphEntry]:
    prog = task.prog_
    top = task.curr_ret_stack.value_()
    frame_words = -(-layout.size // 8)
    if top == 0:
        return []
    capacity = _shadow_stack_words(prog)
    if not 0 < top <= capacity:
        errors.append(corrupt(
            STAGE, task.curr_ret_stack.address_,
            f"ret_stack inconsistent: curr_ret_stack {top} is outside the "
            f"shadow stack of {capacity} words"))
        return []
    try:
        buf = prog.read(base, top * 8)
    except _UNREADABLE as e:
        errors.append(from_exception(STAGE, f"ret_stack at {base:#x}", e))
        return []
    words = struct.unpack(fmt + str(top) + "Q", buf)

    newest_first = []
    offset = top
    while offset > 0:
        word = words[offset - 1]
        kind = (word >> TYPE_SHIFT) & TYPE_MASK
        back = word & OFFSET_MASK
        where = f"word {offset - 1} ({base + (offset - 1) * 8:#x}) = {word:#x}"
        if kind not in (TYPE_RESERVED, TYPE_BITMAP, TYPE_DATA):
            errors.append(corrupt(STAGE, base + (offset - 1) * 8,
                                  f"ret_stack inconsistent: {where} has type {kind}"))
            break
        if back == 0 or back > offset - 1:
            errors.append(corrupt(
                STAGE, base + (offset - 1) * 8,
                f"ret_stack inconsistent: {where} points {back} words back, "
                f"below the start of the stack or onto itself"))
            break
        frame = offset - 1 - back
        # The word right above the frame always carries the frame's own
        # distance; a DATA word merely jumps to the same frame.
        head = words[frame + frame_words] if frame + frame_words < top else None
        if head is None or head & OFFSET_MASK != frame_words or \
                (head >> TYPE_SHIFT) & TYPE_MASK not in (TYPE_RESERVED, TYPE_BITMAP):
            shown = "missing" if head is None else f"{head:#x}"
            errors.append(corrupt(
                STAGE, base + frame * 8,
                f"ret_stack inconsistent: the frame at word {frame} "
                f"({base + frame * 8:#x}) is not followed by its bitmap word "
                f"(found {shown})"))
            break
        ret, func, retp = _decode_frame(buf, frame * 8, layout, fmt)
        newest_first.append(FgraphEntry(index=0, ret=ret, func=func, retp=retp,
                                        address=base + frame * 8))
        offset = frame
    entries = newest_first[::-1]
    for i, entry in enumerate(entries):
        entry.index = i
    return entries


def read_ret_stack(task: drgn.Object) -> Tuple[List[FgraphEntry], List[Diagnostic]]:
    """
    Decode ``task->ret_stack``.

    :returns: the entries, oldest first, and the diagnostics (empty when
        the stack was read and is consistent). A task without a shadow stack
        (fgraph never on, or a kernel without it) gives ``([], [])``. On an
        inconsistent stack the entries above the break are still returned.
    """
    errors: List[Diagnostic] = []
    prog = task.prog_
    layout_name = fgraph_layout(prog)
    if layout_name is None:
        return [], []
    try:
        base = task.ret_stack.value_()
        if not base:
            return [], []
        layout = _frame_layout(prog)
        fmt = _word_format(prog)
        if layout_name == "array":
            return _read_array(task, base, layout, fmt, errors), errors
        return _read_offsets(task, base, layout, fmt, errors), errors
    except LookupError as e:
        errors.append(from_exception(STAGE, "decoding ret_stack", e))
    except _UNREADABLE as e:
        errors.append(from_exception(STAGE, f"task {task.value_():#x}", e, task.value_()))
    return [], errors


def ret_stack_entries(task: drgn.Object) -> List[FgraphEntry]:
    """The decoded ``task->ret_stack``, oldest first (problems dropped; see
    :func:`read_ret_stack` to get them)."""
    return read_ret_stack(task)[0]


@dataclass
class FgraphCursor:
    """
    The ``idx`` state the kernel threads through successive
    ``ftrace_graph_ret_addr()`` calls of one stack walk: how many entries,
    counted from the newest, the walk has already consumed (its first
    unconsumed entry is ``entries[len(entries) - 1 - consumed]``).
    """

    consumed: int = 0


def fgraph_ret_addr(entries: List[FgraphEntry], ret: int, retp: Optional[int],
                    return_to_handler: Optional[int],
                    cursor: Optional[FgraphCursor] = None,
                    has_retp: bool = True,
                    oldest_first: bool = False) -> Tuple[int, Optional[FgraphEntry]]:
    """
    The kernel's ``ftrace_graph_ret_addr(task, &idx, ret, retp)`` over decoded
    entries: the real return address behind ``ret`` when ``ret`` is
    ``return_to_handler``, with the entry it came from (None when ``ret`` is
    returned unchanged).

    With ``retp`` recorded (powerpc 5.4+): walk down from the cursor to the
    newest entry whose ``retp`` equals ``retp`` and whose ``ret`` is not
    itself ``return_to_handler`` (a tail call leaves such an entry above the
    real one), and move the cursor below it. That is the 6.11+ kernel's walk.
    The 5.10-6.10 kernels scan from the oldest entry instead, without a
    cursor (kernel/trace/fgraph.c in 5.10.223 and 6.1.192); the two only differ where two entries share a retp, which
    happens for a function replaced through ``livepatch_handler`` (the
    replaced and the replacement function are both entered with the caller's
    r1). There the newest-first walk gives ``livepatch_handler``'s return
    and, for the livepatch stack's saved LR, the caller's: the order the
    physical stack returns in, so it is used for every layout.

    ``oldest_first=True`` is the 6.1-6.10 kernel's own scan, to the letter:
    the first entry from the oldest whose ``retp`` matches, cursor unused.

    Without ``retp`` (powerpc <= 5.3) the kernel takes the entries in order,
    newest first, one per ``return_to_handler`` met.
    """
    if return_to_handler is None or ret != return_to_handler:
        return ret, None
    if oldest_first and has_retp:
        for entry in entries:
            if entry.retp == retp:
                return entry.ret, entry
        return ret, None
    if cursor is None:
        cursor = FgraphCursor()
    start = len(entries) - 1 - cursor.consumed
    if not has_retp:
        if start < 0:
            return ret, None
        cursor.consumed += 1
        return entries[start].ret, entries[start]
    for i in range(start, -1, -1):
        entry = entries[i]
        if entry.retp == retp and entry.ret != return_to_handler:
            cursor.consumed = len(entries) - i
            return entry.ret, entry
    return ret, None


def records_retp(prog: drgn.Program) -> bool:
    """Whether ``struct ftrace_ret_stack`` has ``retp``: under
    HAVE_FUNCTION_GRAPH_RET_ADDR_PTR, which powerpc's asm/ftrace.h defines in
    5.4.18 and 5.10.223, not in 5.3.1."""
    try:
        return prog.type("struct ftrace_ret_stack").has_member("retp")
    except LookupError:
        return True
