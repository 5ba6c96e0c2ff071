# SPDX-License-Identifier: GPL-2.0-or-later
"""
lpdebug.vcpu: a paused guest's vCPU registers, the CPU and task each runs.

The monitor text is QEMU 7.2's real ``info registers -a`` of a 2-vCPU
testbed guest of the bundled sample's kernel (6.12-4k, same build, same RAM
size: its pacas lie where the sample's do); the end-to-end check against
gdb's own view is tests/test_gdb_live.py.
"""

import dataclasses
import os

import drgn
import pytest

from lpdebug import sample, vcpu
from lpdebug.ppc64 import MSR_PR

TEXT = os.path.join(os.path.dirname(__file__), "data", "qemu-7.2-info-registers-a.txt")


@pytest.fixture(scope="module")
def vcpus():
    with open(TEXT) as f:
        return vcpu.parse_info_registers(f.read())


def test_parse_info_registers(vcpus):
    assert [v.index for v in vcpus] == [0, 1]
    first, second = vcpus
    assert first.nip == 0xC000000000023964 and first.link == 0xC00000000008F38C
    assert first.ctr == 0xC00000000008F7CC and first.xer == 0x200400AD
    assert first.msr == 0x8000000000009033 and first.cr == 0x24002240
    assert first.gpr[1] == 0xC00000001FF9FEB0 and first.gpr[13] == 0xC000000001357000
    assert first.gpr[31] == 0x3 and len(first.gpr) == 32
    assert first.sprg_paca == 0xC000000001357000
    assert second.gpr[13] == second.sprg_paca == 0xC00000001FFFEB80


def test_a_vcpu_without_all_registers_is_left_out():
    with open(TEXT) as f:
        text = f.read()
    cut = text.replace("GPR28 0000000000000080", "GPR2x 0000000000000080", 1)
    assert [v.index for v in vcpu.parse_info_registers(cut)] == [1]
    assert vcpu.parse_info_registers("not a register dump") == []


def test_each_vcpu_runs_its_pacas_current(vcpus):
    prog = sample.open_sample()
    pacas = prog["paca_ptrs"]
    assert vcpu.vcpu_tasks(prog) == {}  # no registers given: nothing is placed
    vcpu.set_vcpu_registers(prog, vcpus, "qmp")
    found = vcpu.vcpu_tasks(prog)
    expected = {pacas[cpu].__current.value_(): cpu for cpu in (0, 1)}
    assert {task: cpu for task, (cpu, _) in found.items()} == expected
    # In user mode r13 is the program's: SPRG1 still names the paca.
    user = dataclasses.replace(vcpus[1], msr=vcpus[1].msr | MSR_PR,
                               gpr=(*vcpus[1].gpr[:13], 0x7FFF0000, *vcpus[1].gpr[14:]))
    vcpu.set_vcpu_registers(prog, [vcpus[0], user], "qmp")
    assert sorted(cpu for cpu, _ in vcpu.vcpu_tasks(prog).values()) == [0, 1]
    # gdb has no SPRGs: a user-mode vCPU is not placed
    vcpu.set_vcpu_registers(prog, [vcpus[0], dataclasses.replace(user, sprg_paca=None)], "gdb")
    assert sorted(cpu for cpu, _ in vcpu.vcpu_tasks(prog).values()) == [0]
    vcpu.clear_vcpu_registers(prog)
    assert vcpu.vcpu_tasks(prog) == {}


def test_registers_as_struct_pt_regs(vcpus):
    prog = sample.open_sample()
    vcpu.set_vcpu_registers(prog, vcpus, "qmp")
    task = prog["paca_ptrs"][1].__current
    regs = vcpu.pt_regs_object(prog, task)
    v = vcpus[1]
    assert [regs.gpr[i].value_() for i in range(32)] == list(v.gpr)
    assert (regs.nip.value_(), regs.msr.value_(), regs.link.value_(), regs.ctr.value_(),
            regs.xer.value_(), regs.ccr.value_(), regs.trap.value_()) == \
        (v.nip, v.msr, v.link, v.ctr, v.xer, v.cr, 0)
    cpu, registers = vcpu.registers_of_task(task)
    assert cpu == 1 and registers["r1"] == v.gpr[1] and registers["pid"] == task.pid.value_()
    other = drgn.Object(prog, "struct task_struct *", value=prog["init_task"].address_ + 8)
    assert vcpu.pt_regs_object(prog, other) is None and vcpu.registers_of_task(other) is None
