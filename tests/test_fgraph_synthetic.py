# SPDX-License-Identifier: GPL-2.0-or-later
"""
Synthetic tests of the function-graph shadow stack decoder: mock kernels
(types and memory made up here) for the layouts and faults no testbed kernel
shows: the <= 6.10 array with and without retp and with the <= 4.19 bias,
corrupt word-offset stacks, and unreadable memory. The real 6.12 and 6.1
layouts are covered end to end in test_backtrace_testbed.py.
"""

from __future__ import annotations

import pytest

from lpdebug.fgraph import FgraphCursor, fgraph_ret_addr, read_ret_stack
from lpdebug.model import DiagnosticKind, FgraphEntry
from synthetic import FAULT_ADDRESS, MockKernel

pytestmark = pytest.mark.synthetic

RTH = 0xC00000000003C3C8  # return_to_handler


def _array_kernel(with_retp: bool = True):
    mk = MockKernel()
    members = [("unsigned long", "ret"), ("unsigned long", "func"),
               ("unsigned long long", "calltime")]
    if with_retp:
        members.append(("unsigned long *", "retp"))
    mk.struct("ftrace_ret_stack", members)
    mk.struct("task_struct", [("int", "curr_ret_stack"), ("int", "curr_ret_depth"),
                              ("struct ftrace_ret_stack *", "ret_stack")])
    return mk


def _array_task(mk, frames, curr):
    size = 32 if mk.type("struct ftrace_ret_stack").has_member("retp") else 24
    stack = mk.alloc(50 * size)
    for i, (ret, func, retp) in enumerate(frames):
        mk.set(stack + i * size, "struct ftrace_ret_stack", "ret", ret)
        mk.set(stack + i * size, "struct ftrace_ret_stack", "func", func)
        if size == 32:
            mk.set(stack + i * size, "struct ftrace_ret_stack", "retp", retp)
    task = mk.new("struct task_struct", curr_ret_stack=curr, ret_stack=stack)
    return _obj(mk, task), stack


def _obj(mk, address):
    import drgn

    return drgn.Object(mk.prog, mk.type("struct task_struct *"), address)


def test_synthetic_array_layout_decodes_oldest_first():
    mk = _array_kernel()
    task, stack = _array_task(mk, [(0x10, 0x100, 0x1000), (0x20, 0x200, 0x2000)], 1)
    entries, errors = read_ret_stack(task)
    assert errors == []
    assert [(e.index, e.ret, e.func, e.retp, e.address) for e in entries] == [
        (0, 0x10, 0x100, 0x1000, stack), (1, 0x20, 0x200, 0x2000, stack + 32)]


def test_synthetic_array_layout_with_the_old_notrace_bias():
    mk = _array_kernel(with_retp=False)
    task, _ = _array_task(mk, [(0x10, 0x100, 0), (0x20, 0x200, 0), (0x30, 0x300, 0)],
                          2 - 65536)
    entries, errors = read_ret_stack(task)
    assert errors == [] and [e.ret for e in entries] == [0x10, 0x20, 0x30]
    assert all(e.retp == 0 for e in entries)


def test_synthetic_array_layout_empty_and_out_of_range():
    mk = _array_kernel()
    task, _ = _array_task(mk, [], -1)
    assert read_ret_stack(task) == ([], [])
    task, _ = _array_task(mk, [], 50)
    entries, errors = read_ret_stack(task)
    assert entries == [] and "outside the array" in errors[0].message
    assert errors[0].kind is DiagnosticKind.CORRUPT and errors[0].stage == "tasks"


def _offset_kernel():
    mk = MockKernel()
    mk.struct("ftrace_ret_stack", [("unsigned long", "ret"), ("unsigned long", "func"),
                                   ("unsigned long long", "calltime"),
                                   ("unsigned long *", "retp")])
    mk.struct("task_struct", [("int", "curr_ret_stack"), ("unsigned long *", "ret_stack")])
    mk.constant("PAGE_SIZE", "unsigned long", 4096)
    return mk


class _Shadow:
    """Builds a 6.11+ shadow stack the way ftrace_push_return_trace() and
    fgraph_reserve_data() write it (frame: 4 words, then its bitmap word)."""

    def __init__(self):
        self.words = []

    def push(self, ret, func, retp, data_words=0):
        self.words += [ret, func, 0, retp]
        self.words.append((1 << 12) | (1 << 10) | 4)  # BITMAP, ops 0, back 4 words
        if data_words:
            back = 4 + 1 + data_words + 1 - 1
            self.words += [0xDA7A] * data_words
            self.words.append((data_words - 1) << 12 | (2 << 10) | back)


def _offset_task(mk, words, curr=None):
    stack = mk.alloc(4096)
    for i, w in enumerate(words):
        mk.write_int(stack + 8 * i, w)
    task = mk.new("struct task_struct", curr_ret_stack=len(words) if curr is None else curr,
                  ret_stack=stack)
    return _obj(mk, task), stack


def test_synthetic_offset_layout_walks_frames_and_data_words():
    mk = _offset_kernel()
    shadow = _Shadow()
    shadow.push(0x10, 0x100, 0x1000)
    shadow.push(0x20, 0x200, 0x2000, data_words=2)
    shadow.push(0x30, 0x300, 0x3000)
    task, stack = _offset_task(mk, shadow.words)
    entries, errors = read_ret_stack(task)
    assert errors == []
    assert [(e.index, e.ret, e.func, e.retp) for e in entries] == [
        (0, 0x10, 0x100, 0x1000), (1, 0x20, 0x200, 0x2000), (2, 0x30, 0x300, 0x3000)]
    assert [e.address - stack for e in entries] == [0, 5 * 8, 13 * 8]


def test_synthetic_offset_layout_reports_an_offset_beyond_the_stack():
    mk = _offset_kernel()
    shadow = _Shadow()
    shadow.push(0x10, 0x100, 0x1000)
    shadow.push(0x20, 0x200, 0x2000)
    shadow.words[-1] = (1 << 12) | (1 << 10) | 0x3FF  # points 1023 words back
    task, _ = _offset_task(mk, shadow.words)
    entries, errors = read_ret_stack(task)
    assert entries == [] and "ret_stack inconsistent" in errors[0].message
    assert "points 1023" in errors[0].message and errors[0].kind is DiagnosticKind.CORRUPT


def test_synthetic_offset_layout_reports_bad_type_bits_and_keeps_the_newer_frames():
    mk = _offset_kernel()
    shadow = _Shadow()
    shadow.push(0x10, 0x100, 0x1000)
    shadow.push(0x20, 0x200, 0x2000)
    shadow.words[4] = (3 << 10) | 4  # type 3 does not exist
    task, _ = _offset_task(mk, shadow.words)
    entries, errors = read_ret_stack(task)
    assert [e.ret for e in entries] == [0x20]
    assert "has type 3" in errors[0].message and errors[0].kind is DiagnosticKind.CORRUPT


def test_synthetic_offset_layout_reports_a_frame_without_its_bitmap_word():
    mk = _offset_kernel()
    shadow = _Shadow()
    shadow.push(0x10, 0x100, 0x1000, data_words=1)
    shadow.words[4] = 0x1234  # the frame's own word, overwritten
    task, _ = _offset_task(mk, shadow.words)
    entries, errors = read_ret_stack(task)
    assert entries == [] and "not followed by its bitmap word" in errors[0].message


def test_synthetic_offset_layout_reports_a_current_offset_beyond_the_page():
    mk = _offset_kernel()
    task, _ = _offset_task(mk, [], curr=4096)
    entries, errors = read_ret_stack(task)
    assert entries == [] and "outside the shadow stack of 512 words" in errors[0].message


def test_synthetic_unreadable_ret_stack_is_reported_not_raised():
    mk = _offset_kernel()
    task = _obj(mk, mk.new("struct task_struct", curr_ret_stack=10, ret_stack=FAULT_ADDRESS))
    entries, errors = read_ret_stack(task)
    assert entries == [] and "unreadable" in errors[0].message
    assert errors[0].kind is DiagnosticKind.UNREADABLE and errors[0].address is not None
    mk2 = _array_kernel()
    task = _obj(mk2, mk2.new("struct task_struct", curr_ret_stack=3, ret_stack=FAULT_ADDRESS))
    entries, errors = read_ret_stack(task)
    assert entries == [] and "unreadable" in errors[0].message
    assert errors[0].kind is DiagnosticKind.UNREADABLE and errors[0].address is not None


def test_synthetic_kernel_without_fgraph_gives_nothing():
    mk = MockKernel()
    mk.struct("task_struct", [("int", "pid")])
    task = _obj(mk, mk.new("struct task_struct", pid=1))
    assert read_ret_stack(task) == ([], [])


# --- ftrace_graph_ret_addr ---------------------------------------------------------


def _entries(*triples):
    return [FgraphEntry(index=i, ret=r, func=0, retp=p, address=0x100 + 32 * i)
            for i, (r, p) in enumerate(triples)]


def test_synthetic_ret_addr_leaves_other_addresses_alone():
    assert fgraph_ret_addr(_entries((0x10, 0x1000)), 0x1234, 0x1000, RTH) == (0x1234, None)


def test_synthetic_ret_addr_matches_retp_newest_first_and_moves_the_cursor():
    entries = _entries((0xA, 0x3000), (0xB, 0x2000), (0xC, 0x1000))
    cursor = FgraphCursor()
    assert fgraph_ret_addr(entries, RTH, 0x1000, RTH, cursor)[0] == 0xC
    assert fgraph_ret_addr(entries, RTH, 0x3000, RTH, cursor)[0] == 0xA
    # Below the cursor nothing is left for 0x2000: unchanged, as in the kernel.
    assert fgraph_ret_addr(entries, RTH, 0x2000, RTH, cursor) == (RTH, None)


def test_synthetic_ret_addr_skips_tail_call_entries():
    # A tail call leaves an entry whose ret is return_to_handler above the real one.
    entries = _entries((0xA, 0x1000), (RTH, 0x1000))
    assert fgraph_ret_addr(entries, RTH, 0x1000, RTH)[0] == 0xA


def test_synthetic_ret_addr_livepatch_order():
    # Caller A (sp 0x1000) called B (hooked), which livepatch_handler replaced
    # by C (hooked too): both entries have retp = A's SP. The frame gives
    # livepatch_handler's address first, the livepatch stack then A's.
    lph = 0xC00000000003C384
    entries = _entries((0xA0A0, 0x1000), (lph, 0x1000), (0xC0C0, 0x0F00))
    cursor = FgraphCursor()
    assert fgraph_ret_addr(entries, RTH, 0x0F00, RTH, cursor)[0] == 0xC0C0
    assert fgraph_ret_addr(entries, RTH, 0x1000, RTH, cursor)[0] == lph
    assert fgraph_ret_addr(entries, RTH, 0x1000, RTH, cursor)[0] == 0xA0A0


def test_synthetic_ret_addr_without_retp_takes_entries_in_order():
    entries = _entries((0xA, 0), (0xB, 0))
    cursor = FgraphCursor()
    assert fgraph_ret_addr(entries, RTH, 0x5, RTH, cursor, has_retp=False)[0] == 0xB
    assert fgraph_ret_addr(entries, RTH, 0x6, RTH, cursor, has_retp=False)[0] == 0xA
    assert fgraph_ret_addr(entries, RTH, 0x7, RTH, cursor, has_retp=False) == (RTH, None)


def test_synthetic_ret_addr_oldest_first_is_the_6_1_kernels_scan():
    lph = 0xC00000000003C384
    entries = _entries((0xA0A0, 0x1000), (lph, 0x1000), (0xC0C0, 0x0F00))
    # The <= 6.10 kernel returns the oldest match, skipping livepatch_handler's.
    assert fgraph_ret_addr(entries, RTH, 0x1000, RTH, oldest_first=True)[0] == 0xA0A0
    assert fgraph_ret_addr(entries, RTH, 0x1000, RTH)[0] == lph
    assert fgraph_ret_addr(entries, RTH, 0x2000, RTH, oldest_first=True) == (RTH, None)
