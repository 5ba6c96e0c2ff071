# SPDX-License-Identifier: GPL-2.0-or-later
"""
The registers of a paused guest's vCPUs, and the task each one runs.

What comes in: the register sets of a stopped QEMU guest's vCPUs, from
QEMU's monitor (``info registers -a``, over QMP's ``human-monitor-command``)
or from gdb's threads on the gdbstub (one thread per vCPU). What goes out: per
kernel CPU, the task it runs (``paca->__current``) and its registers laid out
like a crash note's (:func:`registers_of_task`), so that a task running on a
vCPU at the pause is unwound from its real registers, as a crashed CPU is
from its note (:mod:`lpdebug.backtrace`).

Why the monitor's dump and not the gdbstub for ``--qemu``: QMP is what
``--qemu`` needs anyway (the gdbstub is an extra ``-s``/``-gdb`` option a
user's QEMU may lack), ``info registers`` synchronizes each vCPU's state
first (``cpu_dump_state()`` calls ``cpu_synchronize_state()``, so it holds
under KVM as under TCG), and it prints SPRG1 as well, the kernel's
``SPRN_SPRG_PACA`` (arch/powerpc/include/asm/reg.h, guest kernels), which
names the CPU's paca even when the vCPU is in user mode and r13 is the
program's. gdb's ppc64 register set has no SPRGs: there r13 alone names the
paca, in kernel mode.

Which kernel CPU a vCPU is: the one whose ``paca_ptrs[cpu]`` is that paca
(QEMU's cpu index need not be the kernel's logical CPU number). Which task:
``paca->__current``, which ``_switch`` (arch/powerpc/kernel/entry_64.S) sets
together with the stack pointer, so it is the task whose stack r1 is on,
where ``rq->curr`` is set earlier, in ``__schedule()``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import drgn

from .kernel import has_member, is_ppc64, program_state
from .ppc64 import MSR_PR, PT_REGS_LINK, PT_REGS_MSR, PT_REGS_NIP, PT_REGS_TRAP

__all__ = (
    "VcpuRegisters",
    "GDB_REGISTER_NAMES",
    "from_gdb_registers",
    "parse_info_registers",
    "set_vcpu_registers",
    "clear_vcpu_registers",
    "vcpu_tasks",
    "registers_of_task",
    "pt_regs_object",
)

# struct pt_regs word indices of what a vCPU dump adds to a crash note's
# (PT_CTR, PT_XER, PT_CCR of arch/powerpc/include/uapi/asm/ptrace.h)
PT_REGS_CTR = 35
PT_REGS_XER = 37
PT_REGS_CCR = 38

_STATE_KEY = "vcpus"
_TASKS_KEY = "vcpu_tasks"


@dataclass(frozen=True)
class VcpuRegisters:
    """One vCPU's registers at the pause."""

    index: int  # QEMU's cpu index (the monitor's CPU#N; gdb thread N is index N-1)
    gpr: Tuple[int, ...]  # r0..r31
    nip: int
    msr: int
    link: int
    ctr: int
    xer: int
    cr: int
    sprg_paca: Optional[int] = None  # SPRG1, where the source has it
    # SRR0 and SRR1: where an interrupt was taken and its MSR, where the source has them
    srr0: Optional[int] = None
    srr1: Optional[int] = None

    @property
    def user_mode(self) -> bool:
        return bool(self.msr & MSR_PR)

    def paca_candidates(self) -> List[int]:
        """Where this vCPU's paca may be: r13 in kernel mode, SPRN_SPRG_PACA always."""
        found = [] if self.user_mode else [self.gpr[13]]
        if self.sprg_paca is not None:
            found.append(self.sprg_paca)
        return found


_HEX = r"([0-9a-fA-F]+)"
_CPU_HEADER = re.compile(r"^CPU#(\d+)\s*$", re.M)


def _field(text: str, name: str) -> Optional[int]:
    m = re.search(rf"(?:^|\s){name}\s+{_HEX}\b", text, re.M)
    return int(m.group(1), 16) if m else None


def parse_info_registers(text: str) -> List[VcpuRegisters]:
    """
    The vCPUs of QEMU's ``info registers -a`` on a ppc64 guest: each vCPU's
    dump follows a ``CPU#N`` line (``hmp_info_registers()``) and is
    ``ppc_cpu_dump_state()``'s (target/ppc/cpu_init.c): ``NIP``, ``LR``,
    ``CTR``, ``XER``, ``MSR``, ``GPR00``..``GPR28`` rows of four, ``CR``,
    ``SPRG0``..``SPRG7``. A vCPU whose dump lacks a register is left out.
    """
    headers = list(_CPU_HEADER.finditer(text))
    vcpus = []
    for n, header in enumerate(headers):
        end = headers[n + 1].start() if n + 1 < len(headers) else len(text)
        body = text[header.end():end]
        gpr: Dict[int, int] = {}
        for row in re.finditer(r"^GPR(\d\d)((?:\s+[0-9a-fA-F]{16})+)\s*$", body, re.M):
            for i, word in enumerate(row.group(2).split()):
                gpr[int(row.group(1)) + i] = int(word, 16)
        values = {name: _field(body, name) for name in ("NIP", "MSR", "LR", "CTR", "XER", "CR")}
        if sorted(gpr) != list(range(32)) or any(v is None for v in values.values()):
            continue
        vcpus.append(VcpuRegisters(
            index=int(header.group(1)), gpr=tuple(gpr[i] for i in range(32)),
            nip=values["NIP"], msr=values["MSR"], link=values["LR"],  # type: ignore[arg-type]
            ctr=values["CTR"], xer=values["XER"], cr=values["CR"],  # type: ignore[arg-type]
            sprg_paca=_field(body, "SPRG1"), srr0=_field(body, "SRR0"),
            srr1=_field(body, "SRR1")))
    return vcpus


# gdb's names of the ppc64 registers a vCPU is unwound from (gdb/features/rs6000)
GDB_REGISTER_NAMES = tuple(f"r{i}" for i in range(32)) + ("pc", "msr", "lr", "ctr", "xer", "cr")


def from_gdb_registers(index: int, values: Dict[str, int]) -> VcpuRegisters:
    """
    A vCPU's registers from gdb's values of :data:`GDB_REGISTER_NAMES` (no
    SPRGs there), and ``srr0``/``srr1`` when gdb has them.
    """
    return VcpuRegisters(index=index, gpr=tuple(values[f"r{i}"] for i in range(32)),
                         nip=values["pc"], msr=values["msr"], link=values["lr"],
                         ctr=values["ctr"], xer=values["xer"], cr=values["cr"],
                         srr0=values.get("srr0"), srr1=values.get("srr1"))


def set_vcpu_registers(prog: drgn.Program, vcpus: Sequence[VcpuRegisters], source: str) -> None:
    """
    Give ``prog`` the registers of its guest's vCPUs, read at the pause that
    ``prog`` reads (``source`` says where they came from: ``qmp`` or ``gdb``).
    """
    state = program_state(prog)
    state[_STATE_KEY] = (source, tuple(vcpus))
    state.pop(_TASKS_KEY, None)


def clear_vcpu_registers(prog: drgn.Program) -> None:
    """The guest runs again: its registers of the last pause say nothing now."""
    state = program_state(prog)
    state.pop(_STATE_KEY, None)
    state.pop(_TASKS_KEY, None)


def vcpu_tasks(prog: drgn.Program) -> Dict[int, Tuple[int, VcpuRegisters]]:
    """
    ``{task_struct address: (kernel CPU, its vCPU's registers)}`` for every
    vCPU whose paca is found (see the module docstring); empty without vCPU
    registers.
    """
    state = program_state(prog)
    if _STATE_KEY not in state or not is_ppc64(prog):
        return {}
    if _TASKS_KEY in state:
        return state[_TASKS_KEY]
    _, vcpus = state[_STATE_KEY]
    result: Dict[int, Tuple[int, VcpuRegisters]] = {}
    try:
        from drgn.helpers.linux.cpumask import for_each_possible_cpu

        pacas = prog["paca_ptrs"]
        by_paca = {pacas[cpu].value_(): cpu for cpu in for_each_possible_cpu(prog)}
        current = has_member(prog, "struct paca_struct", "__current")
        for vcpu in vcpus:
            paca = next((p for p in vcpu.paca_candidates() if p in by_paca), None)
            if paca is None or not current:
                continue
            cpu = by_paca[paca]
            task = pacas[cpu].__current.value_()
            if task:
                result[task] = (cpu, vcpu)
    except (LookupError, drgn.FaultError, NotImplementedError, ValueError):
        pass  # no vCPU is placed: their tasks stay unwound as before
    state[_TASKS_KEY] = result
    return result


def registers_of_task(task: drgn.Object) -> Optional[Tuple[int, Dict[str, int]]]:
    """
    ``(kernel CPU, registers)`` when ``task`` (``struct task_struct *``) runs
    on a vCPU of the pause, the registers as a crash note's
    (:func:`lpdebug.crash_notes.cpu_registers`) without ``pt_regs``: ``nip``,
    ``r1``, ``r2``, ``link``, ``msr``, ``trap`` (0: no exception frame),
    ``pid``; None otherwise.
    """
    found = vcpu_tasks(task.prog_).get(task.value_())
    if found is None:
        return None
    cpu, vcpu = found
    return cpu, {"pid": task.pid.value_(), "nip": vcpu.nip, "r1": vcpu.gpr[1],
                 "r2": vcpu.gpr[2], "link": vcpu.link, "msr": vcpu.msr, "trap": 0}


def pt_regs_object(prog: drgn.Program, task: drgn.Object, *,
                   interrupted: bool = False) -> Optional[drgn.Object]:
    """
    The registers of the vCPU running ``task`` as a ``struct pt_regs``
    value, or None. With ``interrupted``, those of the code an interrupt
    just taken interrupted: nip and MSR from SRR0 and SRR1, the rest as
    they are (the vector has run no instruction yet).
    """
    found = vcpu_tasks(prog).get(task.value_())
    if found is None:
        return None
    vcpu = found[1]
    nip, msr = vcpu.nip, vcpu.msr
    if interrupted:
        if vcpu.srr0 is None or vcpu.srr1 is None:
            return None
        nip, msr = vcpu.srr0, vcpu.srr1
    type_ = prog.type("struct pt_regs")
    words = [0] * (drgn.sizeof(type_) // 8)
    words[:32] = vcpu.gpr
    for index, value in ((PT_REGS_NIP, nip), (PT_REGS_MSR, msr),
                         (PT_REGS_CTR, vcpu.ctr), (PT_REGS_LINK, vcpu.link),
                         (PT_REGS_XER, vcpu.xer), (PT_REGS_CCR, vcpu.cr), (PT_REGS_TRAP, 0)):
        words[index] = value
    little = bool(prog.platform.flags & drgn.PlatformFlags.IS_LITTLE_ENDIAN)
    data = b"".join(w.to_bytes(8, "little" if little else "big") for w in words)
    return drgn.Object.from_bytes_(prog, type_, data)
