# SPDX-License-Identifier: GPL-2.0-or-later
"""
Tests of lpdebug.kernel: the kernel identity of every testbed scenario
against what the guest and the build said (uname -r, the manifest's MMU and
page size, the vmlinux build ID), and the type-fact decisions on synthetic
kernels for what the testbed lacks (big-endian ELFv1, non-ppc64, the MMU
read from cur_cpu_spec, missing fgraph).
"""

import os

import drgn
import pytest

from lpdebug import kernel, target
from lpdebug.model import DiagnosticKind
from synthetic import MockKernel
from test_livepatch_testbed import LIVEPATCH_SCENARIOS, NO_LIVEPATCH_SCENARIOS, open_scenario
from testbed import scenario

ALL = LIVEPATCH_SCENARIOS + NO_LIVEPATCH_SCENARIOS


@pytest.mark.testbed
@pytest.mark.parametrize("name", ALL)
def test_kernel_info_matches_the_guest(name):
    s = scenario(name)
    info = kernel.kernel_info(open_scenario(name))
    assert info.diagnostics == []
    assert info.release == open(os.path.join(s["truth"], "uname_r")).read().strip()
    assert info.arch == "ppc64le" and info.elf_abi == 2
    assert info.page_size == s["page_size"]
    assert info.mmu == s["mmu"]
    assert info.build_id == target.file_build_id(s["vmlinux"])
    assert info.livepatch == bool(s.get("livepatch"))
    # The function graph tracer's shadow stack was rewritten in 6.11.
    major, minor = (int(x) for x in info.release.split(".")[:2])
    assert info.fgraph_layout == ("offset" if (major, minor) >= (6, 11) else "array")


def _mock(little_endian=True, arch=drgn.Architecture.PPC64, vmcoreinfo=b""):
    mk = MockKernel(little_endian=little_endian, arch=arch)
    if vmcoreinfo:
        addr = mk.alloc(len(vmcoreinfo) + 1)
        mk.write(addr, vmcoreinfo + b"\0")
        mk._objects["VMCOREINFO"] = drgn.Object(mk.prog, mk.type(f"char [{len(vmcoreinfo) + 1}]"), address=addr)
    return mk


@pytest.mark.synthetic
def test_big_endian_ppc64_is_elfv1_synthetic():
    mk = _mock(little_endian=False, vmcoreinfo=b"OSRELEASE=4.4.0\nPAGESIZE=65536\nBUILD-ID=ABCD\n")
    info = kernel.kernel_info(mk.prog)
    assert (info.arch, info.elf_abi, info.release, info.page_size, info.build_id) == \
        ("ppc64", 1, "4.4.0", 65536, "abcd")
    assert kernel.toc_save_offset(mk.prog) == 40


@pytest.mark.synthetic
def test_little_endian_ppc64_is_elfv2_synthetic():
    mk = _mock(vmcoreinfo=b"OSRELEASE=6.12.0\nNUMBER(RADIX_MMU)=0\n")
    assert kernel.elf_abi(mk.prog) == 2 and kernel.toc_save_offset(mk.prog) == 24
    assert kernel.mmu(mk.prog) == "hash"


@pytest.mark.synthetic
@pytest.mark.parametrize("features,expected", [(0x40 | 0x1, "radix"), (0x1, "hash")])
def test_mmu_from_cur_cpu_spec_without_radix_number_synthetic(features, expected):
    # 6.1 and older do not export NUMBER(RADIX_MMU): the cpu feature bit decides.
    mk = _mock(vmcoreinfo=b"OSRELEASE=6.1.0\n")
    mk.struct("cpu_spec", [("unsigned long", "cpu_features"), ("unsigned int", "mmu_features")])
    spec = mk.new("struct cpu_spec", mmu_features=features)
    ptr = mk.variable("cur_cpu_spec", "struct cpu_spec *")
    mk.write_int(ptr, spec)
    assert kernel.mmu(mk.prog) == expected


@pytest.mark.synthetic
def test_non_ppc64_target_synthetic():
    mk = _mock(arch=drgn.Architecture.X86_64, vmcoreinfo=b"OSRELEASE=6.12.0\nNUMBER(RADIX_MMU)=1\n")
    info = kernel.kernel_info(mk.prog)
    assert info.arch == "x86_64" and info.mmu is None and info.elf_abi is None
    assert any("not ppc64" in e.message and e.kind is DiagnosticKind.UNSUPPORTED
               for e in info.diagnostics)
    assert any("no kernel debug info" in e.message and e.kind is DiagnosticKind.MISSING_DEBUG_INFO
               for e in info.diagnostics)


@pytest.mark.synthetic
@pytest.mark.parametrize("ret_stack,expected", [
    ("struct ftrace_ret_stack *", "array"),
    ("unsigned long *", "offset"),
    (None, None),
])
def test_fgraph_layout_from_the_type_synthetic(ret_stack, expected):
    mk = _mock()
    mk.struct("ftrace_ret_stack", [("unsigned long", "ret"), ("unsigned long", "func")])
    members = [("int", "pid")] + ([(ret_stack, "ret_stack")] if ret_stack else [])
    mk.struct("task_struct", members)
    assert kernel.fgraph_layout(mk.prog) == expected


@pytest.mark.synthetic
def test_enum_values_read_from_debug_info_synthetic():
    mk = _mock()
    assert kernel.enum_values(mk.prog, "FTRACE_FL_") == {}
    mk2 = _mock()
    mk2.enum(None, {"FTRACE_FL_ENABLED": 1 << 31, "FTRACE_FL_REGS": 1 << 30, "OTHER": 3})
    assert kernel.enum_values(mk2.prog, "FTRACE_FL_") == {"FTRACE_FL_ENABLED": 1 << 31, "FTRACE_FL_REGS": 1 << 30}


@pytest.mark.synthetic
def test_walk_list_reports_cycles_and_faults_synthetic():
    from synthetic import FAULT_ADDRESS, define_list_head

    mk = _mock()
    define_list_head(mk)
    mk.struct("item", [("int", "value"), ("struct list_head", "node")])
    head = mk.variable("items", "struct list_head")
    mk.list_init(head)
    items = [mk.new("struct item", value=i) for i in range(3)]
    for it in items:
        mk.list_add_tail(head, it + 8)
    errors = []
    walked = kernel.walk_list(mk.prog["items"], "struct item", "node", errors, "items",
                              stage="t")
    assert [i.value.value_() for i in walked] == [0, 1, 2]
    assert errors == []
    mk.write_int(items[2] + 8, items[1] + 8)  # 2 -> 1: a cycle that never reaches the head
    walked = kernel.walk_list(mk.prog["items"], "struct item", "node", errors, "items", stage="t")
    assert len(list(walked)) == 3
    assert len(errors) == 1 and "cycle" in errors[0].message
    assert (errors[0].stage, errors[0].kind) == ("t", DiagnosticKind.CYCLE)
    mk.write_int(items[1] + 8, FAULT_ADDRESS)
    errors = []
    walked = kernel.walk_list(mk.prog["items"], "struct item", "node", errors, "items", stage="t")
    assert len(list(walked)) == 2
    assert len(errors) == 1 and "unreadable" in errors[0].message
    assert errors[0].kind is DiagnosticKind.UNREADABLE
