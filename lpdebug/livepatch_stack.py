# SPDX-License-Identifier: GPL-2.0-or-later
"""
The ppc64 livepatch stack: ``thread_info->livepatch_sp``.

What comes in: a ``struct task_struct`` Object. What goes out: a
:class:`~lpdebug.model.LivepatchStack` with its entries, oldest first, or
None when the kernel has no livepatch stack (no ``CONFIG_LIVEPATCH_64``, or
not ppc64).

Entry points: :func:`livepatch_stack`, :func:`thread_size`.

``livepatch_handler`` (ftrace entry code) runs between a caller A and the
replacement C of a livepatched function B without a stack frame of its own.
It saves what it must restore on the way back to A in 24-byte entries that
grow upward from the bottom of the task's stack area (the normal kernel stack
grows down from its top)::

    livepatch_sp - 24   saved r2: the TOC in effect at B's ftrace site
    livepatch_sp - 16   the real LR: the return address into A (or
                        return_to_handler when the graph tracer hooked B)
    livepatch_sp -  8   STACK_END_MAGIC, checked by the handler on return

The empty stack starts one word above the stack's end marker:
``end_of_stack(task) + 1``, i.e. ``task->stack + 8`` when thread_info lives
in task_struct (5.2+), and one word after the ``thread_info`` at the base of
the stack before that (:func:`lpdebug.kernel.thread_info_in_task`).

Bounds: ``livepatch_sp`` must lie in ``[base, top of the stack area]``, a
whole number of entries above the base, and at or below the task's SP (for
a sleeping task ``thread.ksp``; the caller passes the SP of a running or
crashed task). When it does not, ``bounds_error`` says why and no entry is
read: the words there would be the normal stack, not livepatch entries.

``real_lr`` is the saved LR as read; a stack walk resolves it through the
function-graph shadow stack (see :mod:`lpdebug.backtrace`).
"""

from __future__ import annotations

import struct
from typing import Optional

import drgn

from .diagnostics import corrupt, from_exception
from .kernel import thread_info_in_task
from .model import Diagnostic, LivepatchStack, LivepatchStackEntry

# The stage of lpdebug.report.triage that reads the shadow stacks.
STAGE = "tasks"

# drgn refuses addresses it cannot translate (hash-MMU module memory without
# lpdebug.hash_mmu) with NotImplementedError: as unreadable as a fault.
_UNREADABLE = (drgn.FaultError, NotImplementedError)

__all__ = ("STACK_END_MAGIC", "ENTRY_SIZE", "livepatch_stack", "thread_size")

STACK_END_MAGIC = 0x57AC6E9D
ENTRY_SIZE = 24
WORD = 8


def thread_size(prog: drgn.Program) -> Optional[int]:
    """THREAD_SIZE: ``sizeof(union thread_union)``, else the size of the
    ``init_stack`` symbol; None when neither is known."""
    try:
        return drgn.sizeof(prog.type("union thread_union"))
    except LookupError:
        pass
    try:
        size = prog.symbol("init_stack").size
        return size or None
    except LookupError:
        return None


def _thread_info(task: drgn.Object) -> drgn.Object:
    if thread_info_in_task(task.prog_):
        return task.thread_info.address_of_()
    return drgn.cast("struct thread_info *", task.stack)


def _empty_stack_base(task: drgn.Object, stack: int) -> int:
    # klp_init_thread_info() (arch/powerpc/include/asm/livepatch.h): with
    # THREAD_INFO_IN_TASK, livepatch_sp = end_of_stack(p) + 1, one word past
    # the STACK_END_MAGIC at the stack's base (5.10.223 and 6.12.117); before,
    # (unsigned long *)(ti + 1) + 1, past thread_info at the base of the stack.
    if thread_info_in_task(task.prog_):
        return stack + WORD
    return stack + drgn.sizeof(task.prog_.type("struct thread_info")) + WORD


def livepatch_stack(task: drgn.Object, *, sp: Optional[int] = None) -> Optional[LivepatchStack]:
    """
    Read a task's livepatch stack.

    :param task: ``struct task_struct *``
    :param sp: the task's kernel stack pointer when it was running (a crashed
        or interrupted CPU); defaults to ``task->thread.ksp``.
    :returns: None when the kernel has no ``thread_info.livepatch_sp``.
    """
    prog = task.prog_
    try:
        if not prog.type("struct thread_info").has_member("livepatch_sp"):
            return None
    except LookupError:
        return None

    result = LivepatchStack(base=0, sp=0)
    try:
        stack = task.stack.value_()
        if not stack:
            # A dead task whose stack was freed: release_task_stack()
            # (kernel/fork.c, CONFIG_THREAD_INFO_IN_TASK) sets tsk->stack to
            # NULL and leaves livepatch_sp as it was. No stack, no entries.
            result.stack_start = 0
            return result
        result.stack_start = stack
        size = thread_size(prog)
        if size:
            result.stack_end = stack + size
        result.base = _empty_stack_base(task, stack)
        result.sp = _thread_info(task).livepatch_sp.value_()
        result.task_sp = sp if sp is not None else task.thread.ksp.value_()
    except _UNREADABLE as e:
        result.diagnostics.append(from_exception(STAGE, f"task {task.value_():#x}: livepatch_sp", e))
        return result
    except LookupError as e:
        result.diagnostics.append(from_exception(STAGE, "the livepatch stack", e))
        return result

    result.bounds_error = _bounds_error(result)
    if result.bounds_error is not None or result.sp == result.base:
        return result

    try:
        buf = prog.read(result.base, result.sp - result.base)
    except _UNREADABLE as e:
        result.diagnostics.append(from_exception(STAGE, f"livepatch stack at {result.base:#x}", e))
        return result
    little = bool(prog.platform.flags & drgn.PlatformFlags.IS_LITTLE_ENDIAN)
    fmt = "<3Q" if little else ">3Q"
    for at in range(0, len(buf), ENTRY_SIZE):
        toc, lr, magic = struct.unpack_from(fmt, buf, at)
        result.entries.append(LivepatchStackEntry(
            address=result.base + at, toc=toc, lr=lr, real_lr=lr, magic=magic,
            magic_ok=magic == STACK_END_MAGIC))
    return result


def _bounds_error(lp: LivepatchStack) -> Optional[Diagnostic]:
    message = _bounds_message(lp)
    return None if message is None else corrupt(STAGE, lp.sp, message)


def _bounds_message(lp: LivepatchStack) -> Optional[str]:
    if lp.sp < lp.base:
        return (f"livepatch_sp {lp.sp:#x} is below the empty-stack base {lp.base:#x}")
    if lp.stack_end is not None and lp.sp > lp.stack_end:
        return (f"livepatch_sp {lp.sp:#x} is beyond the task's stack area "
                f"[{lp.stack_start:#x}, {lp.stack_end:#x})")
    if (lp.sp - lp.base) % ENTRY_SIZE:
        return (f"livepatch_sp {lp.sp:#x} is not a whole number of {ENTRY_SIZE}-byte "
                f"entries above the base {lp.base:#x}")
    if lp.task_sp is not None and lp.sp > lp.task_sp:
        return (f"livepatch_sp {lp.sp:#x} is above the task's stack pointer "
                f"{lp.task_sp:#x}: it overlaps the normal kernel stack")
    return None
