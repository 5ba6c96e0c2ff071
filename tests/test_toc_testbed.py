# SPDX-License-Identifier: GPL-2.0-or-later
"""
Module and kernel TOCs on the real-kernel testbed, against the kernel's own view.

The guest captured /sys/module/M/sections/ (truth/sections/M/SECTION): the
section addresses the module loader chose. The module's TOC is the value the
loader gave ``.TOC.``, ``(address of .toc, else .stubs, & ~0xff) + 0x8000``;
the test applies that rule to the guest's own files and expects lpdebug to
have found the same from the dump. vmlinux's TOC must equal the ``.TOC.``
symbol of the vmlinux file. The global-entry prologue cross-check must agree
everywhere, having decoded at least one prologue per image.
"""

from __future__ import annotations

import os

import pytest

from test_backtrace_testbed import program
from testbed import truth

pytestmark = pytest.mark.testbed

SCENARIOS = ["settled", "settled-6.1", "settled-64k", "stuck", "stacked", "toc-corrupt",
             "toc-crash", "nolivepatch", "settled-5.10", "stuck-5.10", "toc-corrupt-5.10", "toc-crash-5.10",
             "panic-5.10"]


def guest_tocs(name: str):
    root = truth(name, "sections")
    assert os.path.isdir(root), f"{name}: truth/sections is missing"
    tocs = {}
    for module in sorted(os.listdir(root)):
        for section in (".toc", ".stubs"):
            path = os.path.join(root, module, section)
            if os.path.exists(path):
                with open(path) as f:
                    tocs[module] = (int(f.read().strip(), 16) & ~0xFF) + 0x8000
                break
    return tocs


@pytest.mark.parametrize("name", SCENARIOS)
def test_module_tocs_equal_the_loaders(name):
    from lpdebug.toc import VMLINUX, module_tocs

    tocs = module_tocs(program(name))
    expected = guest_tocs(name)
    ours = {entry.module: entry.toc for entry in tocs if entry.module != VMLINUX}
    assert ours == expected


@pytest.mark.parametrize("name", SCENARIOS)
def test_vmlinux_toc_is_the_toc_symbol(name):
    from elftools.elf.elffile import ELFFile

    from lpdebug.toc import module_tocs
    from testbed import scenario

    with open(scenario(name)["vmlinux"], "rb") as f:
        symtab = ELFFile(f).get_section_by_name(".symtab")
        toc_symbols = symtab.get_symbol_by_name(".TOC.") or []
        start = symtab.get_symbol_by_name("__toc_start") or []
        values = [s["st_value"] for s in toc_symbols] + [s["st_value"] + 0x8000 for s in start]
    assert values, "vmlinux has neither .TOC. nor __toc_start"
    assert module_tocs(program(name)).toc_of(None) in values


@pytest.mark.parametrize("name", SCENARIOS)
def test_prologues_agree_with_section_tocs(name):
    from lpdebug.toc import module_tocs

    tocs = module_tocs(program(name))
    for entry in tocs:
        assert entry.prologues_checked > 0, f"{entry.module}: {entry.prologue_note}"
        assert entry.prologue_toc == entry.toc, entry
        assert not entry.prologue_mismatches, entry
