# SPDX-License-Identifier: GPL-2.0-or-later
"""
Synthetic tests of where a crash note's unwind starts
(:func:`lpdebug.crash_notes.unwind_start`), for the layout no testbed kernel
writes: ``ppc_save_regs()`` before kernel commit b684c09f09e7 (v6.5, and its
stable backports: Debian's 5.10.223 and 6.1 have it), which saved r1 one
frame up. The exception-frame layout is shown on the real toc-crash and
toc-crash-5.10 captures, the fixed ppc_save_regs() one on panic-5.10
(tests/test_backtrace_testbed.py).
"""

from __future__ import annotations

import drgn
import pytest

from lpdebug.crash_notes import unwind_start

pytestmark = pytest.mark.synthetic

# __crash_kexec's frame (r1 when ppc_save_regs ran), and panic's frame above it.
CRASH_KEXEC_SP = 0xC000000004F8F800
PANIC_SP = 0xC000000004F8F900
NIP = 0xC0000000002A53E8  # in __crash_kexec, after the bl ppc_save_regs
LINK = 0xC000000000168918  # in panic, after the bl __crash_kexec
STALE = 0xC0000000002A5000  # what __crash_kexec's callees left in its own LR save word


def _reader(memory):
    def read_u64(address):
        try:
            return memory[address]
        except KeyError:
            raise drgn.FaultError("not in the test's memory", address) from None
    return read_u64


MEMORY = {CRASH_KEXEC_SP: PANIC_SP, CRASH_KEXEC_SP + 16: STALE,
          PANIC_SP: 0xC000000004F8FA00, PANIC_SP + 16: LINK}


def test_synthetic_exception_frame_starts_at_nip():
    regs = {"nip": NIP, "r1": CRASH_KEXEC_SP, "link": LINK, "trap": 0x300}
    start = unwind_start(regs, _reader({}))
    assert (start.pc, start.sp, start.how) == (NIP, CRASH_KEXEC_SP, "exception")


def test_synthetic_fixed_ppc_save_regs_starts_at_nip():
    # b684c09f09e7: r1 is the current SP, link is read from the caller's frame
    regs = {"nip": NIP, "r1": CRASH_KEXEC_SP, "link": LINK, "trap": 0}
    start = unwind_start(regs, _reader(MEMORY))
    assert (start.pc, start.sp, start.how) == (NIP, CRASH_KEXEC_SP, "saved")


def test_synthetic_old_ppc_save_regs_starts_at_link():
    # before b684c09f09e7: r1 was the back chain (panic's frame), whose LR
    # save word is link: r1 belongs to link, as drgn assumes for old releases
    regs = {"nip": NIP, "r1": PANIC_SP, "link": LINK, "trap": 0}
    start = unwind_start(regs, _reader(MEMORY))
    assert (start.pc, start.sp, start.how) == (LINK, PANIC_SP, "saved-r1-for-link")


def test_synthetic_unreadable_stack_keeps_nip():
    regs = {"nip": NIP, "r1": PANIC_SP, "link": LINK, "trap": 0}
    start = unwind_start(regs, _reader({}))
    assert (start.pc, start.how) == (NIP, "saved")
