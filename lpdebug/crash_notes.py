# SPDX-License-Identifier: GPL-2.0-or-later
"""
The registers each CPU saved in its crash note when the kernel crashed.

What comes in: a Program of a ppc64 kernel dump. What goes out: per CPU, the
saved registers (a dict; ``pt_regs`` is where they lie, laid out as ``struct
pt_regs``) and, from them, where an unwind of that CPU must start
(:class:`CrashStart`).

Entry points: :func:`cpu_registers`, :func:`crashed_cpus`,
:func:`unwind_start`.

Where the registers come from (``crash_setup_regs()``,
arch/powerpc/include/asm/kexec.h, 5.10 to 6.12): a crash entered with an
exception frame (an oops: ``oops_end()`` calls ``crash_kexec(regs)``; the
other CPUs: ``crash_ipi_callback(regs)``) copies that frame, so ``nip`` and
``r1`` are the interrupted instruction and its stack pointer on every kernel,
and ``trap`` is the exception vector. A crash without one (``panic()``, e.g.
``echo c > /proc/sysrq-trigger``, drivers/tty/sysrq.c) calls ``ppc_save_regs()``,
which writes ``trap`` = 0 and saves ``nip`` = its return address. Before
kernel commit b684c09f09e7 ("powerpc: update ppc_save_regs to save current
r1 in pt_regs", v6.5; backported to 6.4.4, 6.3.13, 6.1.39, 5.15.121 and
5.10.y, which Debian's 5.10.223 has) it saved ``r1`` one frame up, the
caller's caller's frame, the one ``link`` returns into.

drgn (libdrgn/arch_ppc64.c, ``get_initial_registers_from_struct_ppc64``)
starts a trace from a vmcore's NT_PRSTATUS at ``nip`` for releases from 6.5
and the listed backports, and at ``link`` (with the saved ``r1``) for every
other release, 5.10 included, whatever path saved the note: on an older
kernel's oops it drops the function that faulted. lpdebug reads the notes
itself and decides from the note: ``trap`` != 0 or a coherent ``r1`` starts
at ``nip``; a ``ppc_save_regs()`` note whose ``r1`` frame holds ``link`` in its
LR save word (the pre-b684c09f09e7 layout) starts at ``link``, as drgn does,
since ``nip``'s own frame was not saved. The testbed shows both real layouts
against the kernel's own console: the oopses of toc-crash (6.12) and
toc-crash-5.10, and the panic() of panic-5.10, where drgn's trace starts at
``link`` (return_to_handler there) and lpdebug's at ``__crash_kexec``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import drgn

from .kernel import is_ppc64
from .ppc64 import PT_REGS_LINK, PT_REGS_MSR, PT_REGS_NIP, PT_REGS_TRAP, PT_REGS_WORDS

__all__ = (
    "CrashStart",
    "cpu_registers",
    "crashed_cpus",
    "unwind_start",
)

# drgn refuses addresses it cannot translate (hash-MMU module memory without
# lpdebug.hash_mmu) with NotImplementedError: as unreadable as a fault.
_UNREADABLE = (drgn.FaultError, NotImplementedError)

# include/uapi/linux/elf.h
NT_PRSTATUS = 1
# Offsets in a 64-bit struct elf_prstatus (include/linux/elfcore.h: pr_info 12
# bytes, pr_cursig, pr_sigpend, pr_sighold, then pr_pid; pr_reg after four
# timevals), used only when the debug info lacks the type. drgn reads pr_reg
# at the same 112 (prstatus_get_initial_registers_ppc64).
PRSTATUS_PID_OFFSET = 32
PRSTATUS_REG_OFFSET = 112
# The stack frame's LR save word: LRSAVE = 16 in both ABIs (asm/ppc_asm.h).
LR_SAVE_OFFSET = 16


def _prstatus_offsets(prog: drgn.Program) -> Tuple[int, int]:
    """Offsets of the pid and the registers in ``struct elf_prstatus``: the
    pid is ``common.pr_pid`` where the kernel has ``struct
    elf_prstatus_common`` (present in 5.13 and 6.1, absent in Debian's
    5.10.223, whose ``pr_pid`` is a direct member)."""
    try:
        tp = prog.type("struct elf_prstatus")
    except LookupError:
        return PRSTATUS_PID_OFFSET, PRSTATUS_REG_OFFSET
    offsets = []
    for designators, fallback in ((("common.pr_pid", "pr_pid"), PRSTATUS_PID_OFFSET),
                                  (("pr_reg",), PRSTATUS_REG_OFFSET)):
        for designator in designators:
            try:
                offsets.append(drgn.offsetof(tp, designator))
                break
            except (LookupError, ValueError):
                continue
        else:
            offsets.append(fallback)
    return offsets[0], offsets[1]


def cpu_registers(prog: drgn.Program, cpu: int) -> Optional[Dict[str, int]]:
    """
    The registers CPU ``cpu`` saved in its ``crash_notes`` NT_PRSTATUS when
    the kernel crashed (the same note kdump copies into the vmcore):
    ``{"pid", "nip", "r1", "r2", "link", "msr", "trap", "pt_regs"}``
    (``pt_regs``: where the registers are, laid out as ``struct pt_regs``).
    None when the kernel did not crash on the way to this dump (the note is
    still empty), has no crash_notes, or is not ppc64.
    """
    from drgn.helpers.linux.percpu import per_cpu_ptr

    if not is_ppc64(prog):
        return None
    try:
        note = per_cpu_ptr(prog["crash_notes"], cpu).value_()
        header = prog.read(note, 12)
    except (LookupError, *_UNREADABLE, ValueError):
        return None
    little = bool(prog.platform.flags & drgn.PlatformFlags.IS_LITTLE_ENDIAN)
    end = "<" if little else ">"
    namesz, descsz, ntype = struct.unpack(end + "3I", header)
    if ntype != NT_PRSTATUS or namesz == 0 or descsz == 0:
        return None
    desc = note + 12 + ((namesz + 3) & ~3)
    pid_offset, reg_offset = _prstatus_offsets(prog)
    try:
        pid = struct.unpack(end + "i", prog.read(desc + pid_offset, 4))[0]
        regs = struct.unpack(end + "%dQ" % PT_REGS_WORDS,
                             prog.read(desc + reg_offset, PT_REGS_WORDS * 8))
    except _UNREADABLE:
        return None
    return {"pid": pid, "nip": regs[PT_REGS_NIP], "r1": regs[1], "r2": regs[2],
            "link": regs[PT_REGS_LINK], "msr": regs[PT_REGS_MSR], "trap": regs[PT_REGS_TRAP],
            "pt_regs": desc + reg_offset}


def panic_cpu(prog: drgn.Program) -> Optional[int]:
    """
    The CPU that panicked or entered crash_kexec(), from the kernel's own
    ``panic_cpu`` (kernel/panic.c); None when no CPU did (a dump taken from a
    running kernel, e.g. by QEMU) or when the kernel has no such variable.
    crash_kexec() claims it too, and kdump never gives it back, since
    7bbee5ca3896 ("kexec: Fix race between panic() and crash_kexec()", 4.5).
    """
    try:
        cpu = prog["panic_cpu"].counter.value_()
    except (LookupError, AttributeError, drgn.FaultError):
        return None
    return None if cpu < 0 else cpu  # PANIC_CPU_INVALID is -1


def crashed_cpus(prog: drgn.Program) -> Dict[int, Dict[str, int]]:
    """Every CPU with saved crash registers: ``{cpu: cpu_registers(prog, cpu)}``."""
    from drgn.helpers.linux.cpumask import for_each_possible_cpu

    result: Dict[int, Dict[str, int]] = {}
    try:
        cpus = list(for_each_possible_cpu(prog))
    except (LookupError, *_UNREADABLE):
        return result
    for cpu in cpus:
        regs = cpu_registers(prog, cpu)
        if regs is not None:
            result[cpu] = regs
    return result


@dataclass
class CrashStart:
    """Where the unwind of a CPU's crash note starts."""

    pc: int
    sp: int
    # "exception" (trap != 0: an interrupted instruction), "saved" (ppc_save_regs
    # with r1 for nip), "saved-r1-for-link" (ppc_save_regs before b684c09f09e7:
    # r1 is the frame link returns into; nip's own frame is lost)
    how: str


def unwind_start(regs: Dict[str, int], read_u64: Callable[[int], int]) -> CrashStart:
    """
    Where the unwind of the saved registers ``regs`` (from
    :func:`cpu_registers`) starts: see the module docstring. ``read_u64``
    reads the target (a fault keeps the note's ``nip``).
    """
    nip, r1, link = regs["nip"], regs["r1"], regs["link"]
    if regs.get("trap", 0):
        return CrashStart(nip, r1, "exception")
    try:
        r1_holds_link = read_u64(r1 + LR_SAVE_OFFSET) == link
    except _UNREADABLE:
        return CrashStart(nip, r1, "saved")
    try:
        # Fixed kernels read link from exactly there: r1's caller's frame.
        caller_holds_link = read_u64(read_u64(r1) + LR_SAVE_OFFSET) == link
    except _UNREADABLE:
        caller_holds_link = False
    if r1_holds_link and not caller_holds_link:
        return CrashStart(link, r1, "saved-r1-for-link")
    return CrashStart(nip, r1, "saved")
