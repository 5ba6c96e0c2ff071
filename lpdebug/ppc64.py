# SPDX-License-Identifier: GPL-2.0-or-later
"""
ppc64 instruction encodings and ABI facts that lpdebug decodes.

What comes in: plain instruction words and addresses. What goes out: what
they mean (a branch target, a frame size, the TOC a prologue computes).
Nothing here reads the target: callers read the words and pass them in.

Each constant names where it comes from. Kernel paths are those of the
kernel source (the same in 5.10, 6.1 and 6.12 unless a row says otherwise);
instruction encodings follow the Power ISA and were checked against the
kernel's ``PPC_RAW_*`` macros (``arch/powerpc/include/asm/ppc-opcode.h``).
"""

from __future__ import annotations

from typing import Optional

__all__ = (
    "ADDIS_R2_R12",
    "ADDI_R2_R2",
    "HI_MASK",
    "MSR_PR",
    "PT_REGS_LINK",
    "PT_REGS_MSR",
    "PT_REGS_NIP",
    "PT_REGS_TRAP",
    "PT_REGS_WORDS",
    "STUB_ENTRY_SIZE",
    "STUB_MAGIC",
    "STUB_MAGIC_OFFSET",
    "TOC_BIAS",
    "TOC_RESTORE",
    "branch_target",
    "is_toc_prologue",
    "prologue_value",
    "stdu_frame_size",
)

# ld r2,24(r1) (ELFv2) / ld r2,40(r1) (ELFv1), keyed by ELF ABI version: the
# kernel's PPC_INST_LD_TOC, ``PPC_INST_LD | ___PPC_RT(2) | ___PPC_RA(1) |
# R2_STACK_OFFSET`` (asm/code-patching.h), which module_64.c's restore_r2()
# writes over the nop after a call through a stub.
TOC_RESTORE = {2: 0xE8410018, 1: 0xE8410028}

# The ELFv2 global-entry prologue, ``addis r2,r12,hi`` / ``addi r2,r2,lo``:
# ADDIS_R2_R12, ADDI_R2_R2 and OP_RT_RA_MASK of asm/code-patching.h, which
# ppc_function_entry() tests to skip these two words.
ADDIS_R2_R12 = 0x3C4C0000
ADDI_R2_R2 = 0x38420000
HI_MASK = 0xFFFF0000  # OP_RT_RA_MASK: opcode and registers; the low half is the immediate

# The TOC pointer points 0x8000 past the start of the TOC so that signed
# 16-bit offsets reach 64 KiB of it: module_64.c ``my_r2()`` returns
# ``sh_addr + 0x8000`` (``& ~0xff`` from 4.19 on, see lpdebug.toc).
TOC_BIAS = 0x8000

# stdu r1,d(r1): opcode 62, RS=1, RA=1, XO=1 (DS form; d in bits 2-15).
STDU_R1_R1 = 0xF8210001
_STDU_MASK = 0xFFFF0003

# bl target: opcode 18 with AA=0, LK=1 (I form, LI in bits 2-25).
_BL = 0x48000001
_BL_MASK = 0xFC000003

# MSR[PR], problem state (user mode): MSR_PR_LG = 14, asm/reg.h.
MSR_PR = 1 << 14

# struct ppc64_stub_entry (arch/powerpc/kernel/module_64.c, 5.10 to 6.12):
# u32 jump[7]; u32 magic; func_desc_t funcdata. STUB_MAGIC is "stub",
# ``#define STUB_MAGIC 0x73747562`` in the same file. The size is read from
# the DWARF where the kernel has the type; these are the fallback, by ABI:
# func_desc_t is {addr} on ELFv2 and {addr, toc, env} on ELFv1 (asm/types.h).
STUB_MAGIC = 0x73747562
STUB_MAGIC_OFFSET = 28
STUB_ENTRY_SIZE = {2: 40, 1: 56}

# struct pt_regs word indices: PT_NIP, PT_MSR, PT_LNK, PT_TRAP of
# arch/powerpc/include/uapi/asm/ptrace.h; ELF_NGREG (uapi/asm/elf.h) words in
# an NT_PRSTATUS pr_reg.
PT_REGS_NIP = 32
PT_REGS_MSR = 33
PT_REGS_LINK = 36
PT_REGS_TRAP = 40
PT_REGS_WORDS = 48


def _sext(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value & (1 << (bits - 1)) else value


def branch_target(insn: int, at: int) -> Optional[int]:
    """Target of the relative ``bl`` ``insn`` at address ``at``, None for any other word."""
    if insn & _BL_MASK != _BL:
        return None
    return at + _sext(insn & 0x03FFFFFC, 26)


def stdu_frame_size(insn: int) -> Optional[int]:
    """The frame size a prologue's ``stdu r1,-N(r1)`` allocates, None for any other word."""
    if insn & _STDU_MASK != STDU_R1_R1:
        return None
    displacement = _sext(insn & 0xFFFC, 16)
    return -displacement if displacement < 0 else None


def is_toc_prologue(first: int, second: int) -> bool:
    """The two words are ``addis r2,r12,hi; addi r2,r2,lo``: an ELFv2 global entry."""
    return first & HI_MASK == ADDIS_R2_R12 and second & HI_MASK == ADDI_R2_R2


def prologue_value(gep: int, first: int, second: int) -> int:
    """The TOC the prologue ``first; second`` at global entry ``gep`` computes (r12 = gep)."""
    return (gep + (_sext(first, 16) << 16) + _sext(second, 16)) & 0xFFFFFFFFFFFFFFFF
