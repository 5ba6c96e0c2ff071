# SPDX-License-Identifier: GPL-2.0-or-later
"""
Synthetic tests of the ppc64 livepatch-stack reader: mock kernels for states
no testbed kernel reaches (trashed magic, livepatch_sp out of bounds,
thread_info at the base of the stack as before 5.2, big-endian, faulting
reads). The real 6.12 and 6.1 stacks are covered in the testbed tests.
"""

from __future__ import annotations

import drgn
import pytest

from lpdebug.livepatch_stack import STACK_END_MAGIC, livepatch_stack
from lpdebug.model import DiagnosticKind
from synthetic import FAULT_ADDRESS, MockKernel

pytestmark = pytest.mark.synthetic

THREAD_SIZE = 16384


def _kernel(*, info_in_task: bool = True, little_endian: bool = True, livepatch: bool = True):
    mk = MockKernel(little_endian=little_endian, arena_size=1 << 17)
    info = [("unsigned long", "flags")]
    if livepatch:
        info.append(("unsigned long *", "livepatch_sp"))
    mk.struct("thread_info", info)
    mk.struct("thread_struct", [("unsigned long", "ksp")])
    members = [("struct thread_info", "thread_info")] if info_in_task else []
    members += [("void *", "stack"), ("struct thread_struct", "thread"), ("int", "pid")]
    mk.struct("task_struct", members)
    mk.symbol("init_stack", mk.alloc(64), THREAD_SIZE, kind=drgn.SymbolKind.OBJECT)
    return mk


def _task(mk, entries, *, sp_delta=0, ksp_offset=THREAD_SIZE - 0x400, info_in_task=True):
    stack = mk.alloc(THREAD_SIZE, align=THREAD_SIZE)
    task = mk.new("struct task_struct", stack=stack)
    mk.set(task, "struct task_struct", "thread.ksp", stack + ksp_offset)
    if info_in_task:
        base = stack + 8
        info = task
    else:
        base = stack + drgn.sizeof(mk.type("struct thread_info")) + 8
        info = stack
    at = base
    for toc, lr, magic in entries:
        for word in (toc, lr, magic):
            mk.write_int(at, word)
            at += 8
    mk.set(info, "struct thread_info", "livepatch_sp", at + sp_delta)
    return drgn.Object(mk.prog, mk.type("struct task_struct *"), task), stack, base


def test_synthetic_two_entries_oldest_first():
    mk = _kernel()
    task, stack, base = _task(mk, [(0x1000, 0xAAA0, STACK_END_MAGIC),
                                   (0x2000, 0xBBB0, STACK_END_MAGIC)])
    lp = livepatch_stack(task)
    assert lp.bounds_error is None and lp.diagnostics == []
    assert (lp.base, lp.sp, lp.stack_start, lp.stack_end) == (
        base, base + 48, stack, stack + THREAD_SIZE)
    assert [(e.address, e.toc, e.lr, e.real_lr, e.magic_ok) for e in lp.entries] == [
        (base, 0x1000, 0xAAA0, 0xAAA0, True), (base + 24, 0x2000, 0xBBB0, 0xBBB0, True)]


def test_synthetic_empty_stack():
    mk = _kernel()
    task, _, base = _task(mk, [])
    lp = livepatch_stack(task)
    assert lp.entries == [] and lp.bounds_error is None and lp.sp == base


def test_synthetic_corrupt_magic_is_flagged_per_entry():
    mk = _kernel()
    task, _, _ = _task(mk, [(0x1000, 0xAAA0, STACK_END_MAGIC), (0x2000, 0xBBB0, 0xDEADBEEF)])
    lp = livepatch_stack(task)
    assert [e.magic_ok for e in lp.entries] == [True, False]
    assert lp.entries[1].magic == 0xDEADBEEF


def test_synthetic_thread_info_at_the_stack_base_before_5_2():
    mk = _kernel(info_in_task=False)
    task, stack, base = _task(mk, [(0x1000, 0xAAA0, STACK_END_MAGIC)], info_in_task=False)
    lp = livepatch_stack(task)
    assert base == stack + 16 + 8
    assert lp.base == base and [e.toc for e in lp.entries] == [0x1000]


def test_synthetic_big_endian_entries():
    mk = _kernel(little_endian=False)
    task, _, _ = _task(mk, [(0xC000000001234000, 0xC000000000ABC000, STACK_END_MAGIC)])
    (entry,) = livepatch_stack(task).entries
    assert (entry.toc, entry.lr, entry.magic_ok) == (0xC000000001234000, 0xC000000000ABC000, True)


@pytest.mark.parametrize("sp_delta, ksp_offset, words", [
    (-48, THREAD_SIZE - 0x400, "below the empty-stack base"),
    (THREAD_SIZE, THREAD_SIZE - 0x400, "beyond the task's stack area"),
    (8, THREAD_SIZE - 0x400, "not a whole number"),
    (0, 0x18, "above the task's stack pointer"),
])
def test_synthetic_out_of_bounds_livepatch_sp(sp_delta, ksp_offset, words):
    mk = _kernel()
    task, _, _ = _task(mk, [(0x1000, 0xAAA0, STACK_END_MAGIC)], sp_delta=sp_delta,
                       ksp_offset=ksp_offset)
    lp = livepatch_stack(task)
    assert lp.bounds_error is not None and words in lp.bounds_error.message
    assert (lp.bounds_error.kind, lp.bounds_error.address) == (DiagnosticKind.CORRUPT, lp.sp)
    assert lp.entries == []


def test_synthetic_running_task_bounded_by_the_given_sp():
    mk = _kernel()
    task, stack, base = _task(mk, [(0x1000, 0xAAA0, STACK_END_MAGIC)])
    assert livepatch_stack(task, sp=base + 16).bounds_error is not None
    assert livepatch_stack(task, sp=stack + 0x2000).bounds_error is None


def test_synthetic_unreadable_task_is_reported_not_raised():
    mk = _kernel()
    task = drgn.Object(mk.prog, mk.type("struct task_struct *"), FAULT_ADDRESS)
    lp = livepatch_stack(task)
    assert lp.entries == [] and "unreadable" in lp.diagnostics[0].message
    assert lp.diagnostics[0].kind is DiagnosticKind.UNREADABLE


def test_synthetic_kernel_without_livepatch_stack():
    mk = _kernel(livepatch=False)
    mk2_task = mk.new("struct task_struct")
    task = drgn.Object(mk.prog, mk.type("struct task_struct *"), mk2_task)
    assert livepatch_stack(task) is None
