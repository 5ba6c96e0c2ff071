# SPDX-License-Identifier: GPL-2.0-or-later
"""
The fixture tools of vmcores/fixtures (sparse vmcore writer, DWARF pruner and
ELF writer) on made-up cores and on the bundled sample's own files, without
the testbed.
"""

import os
import struct
import sys

import pytest

import lpdebug as tr
from lpdebug import kernel, sample

pytestmark = pytest.mark.fixtures

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "vmcores", "fixtures"))

import dwarfprune  # noqa: E402
import elfcore  # noqa: E402

PAGE = elfcore.PAGE
BASE = kernel.LINEAR_MAP_BASE


def _note(name, ntype, desc):
    name = name.encode() + b"\0"
    pad = lambda b: b + bytes((-len(b)) % 4)  # noqa: E731
    return struct.pack("<III", len(name), len(desc), ntype) + pad(name) + pad(desc)


def _core(path, loads, notes):
    """A little-endian ELF64 ET_CORE with ``notes`` and PT_LOADs [(paddr, vaddr, data)]."""
    phnum = 1 + len(loads)
    off = 64 + 56 * phnum
    ph = [struct.pack("<IIQQQQQQ", 4, 0, off, 0, 0, len(notes), 0, 0)]
    off += len(notes)
    blobs = [notes]
    for paddr, vaddr, data in loads:
        ph.append(struct.pack("<IIQQQQQQ", 1, 7, off, vaddr, paddr, len(data), len(data), 0))
        blobs.append(data)
        off += len(data)
    hdr = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    hdr += struct.pack("<HHIQQQIHHHHHH", 4, 21, 1, 0, 64, 0, 0, 64, 56, phnum, 64, 0, 0)
    with open(path, "wb") as f:
        f.write(hdr + b"".join(ph) + b"".join(blobs))


def test_sparse_core_keeps_notes_and_only_the_pages_read(tmp_path):
    notes = _note("CORE", 1, bytes(range(200)) * 2) + _note("VMCOREINFO", 0, b"OSRELEASE=6.12\nPAGESIZE=4096\n")
    ram0 = bytes((i * 7) & 0xFF for i in range(8 * PAGE))
    ram1 = bytes((i * 13) & 0xFF for i in range(4 * PAGE))
    full = str(tmp_path / "full")
    _core(full, [(0, BASE, ram0), (0x100000, 0, ram1)], notes)

    rec = elfcore.PageRecorder(full)
    segs = {}

    class Prog:
        def add_memory_segment(self, address, size, fn, physical=False):
            segs[(address, physical)] = fn

    rec.install(Prog())
    assert set(segs) == {(0, True), (BASE, False), (0x100000, True)}
    # reads: one straddling pages 1-2 (physical), one in page 5 via the linear map, one in the 2nd load
    assert segs[(0, True)](PAGE + 100, PAGE, PAGE + 100, True) == ram0[PAGE + 100 : 2 * PAGE + 100]
    assert segs[(BASE, False)](BASE + 5 * PAGE + 8, 8, 5 * PAGE + 8, False) == ram0[5 * PAGE + 8 : 5 * PAGE + 16]
    assert segs[(0x100000, True)](0x100000 + 3 * PAGE, 4, 3 * PAGE, True) == ram1[3 * PAGE : 3 * PAGE + 4]
    assert rec.pages == {1, 2, 5, 0x100000 // PAGE + 3}

    sparse = str(tmp_path / "sparse")
    stats = elfcore.write_sparse_core(rec, rec.pages, sparse)
    assert stats["pages"] == 4 and stats["runs"] == 3
    layout = elfcore.read_layout(sparse)
    assert b"".join(layout.notes) == notes
    with open(sparse, "rb") as f:
        data = f.read()
    got = {}
    for paddr, vaddr, offset, filesz, memsz in layout.loads:
        assert filesz == memsz
        for i in range(filesz // PAGE):
            page = data[offset + i * PAGE : offset + (i + 1) * PAGE]
            got[paddr + i * PAGE] = (vaddr + i * PAGE if vaddr else 0, page)
    assert got == {
        PAGE: (BASE + PAGE, ram0[PAGE : 2 * PAGE]),
        2 * PAGE: (BASE + 2 * PAGE, ram0[2 * PAGE : 3 * PAGE]),
        5 * PAGE: (BASE + 5 * PAGE, ram0[5 * PAGE : 6 * PAGE]),
        0x100000 + 3 * PAGE: (0, ram1[3 * PAGE :]),  # that load had no virtual address
    }
    rec.close()


def test_runs_do_not_cross_loads():
    assert elfcore.runs([1, 2, 3, 7, 8, 10]) == [(1, 3), (7, 2), (10, 1)]
    assert elfcore.runs([1, 2, 3], boundaries=[2]) == [(1, 1), (2, 2)]


@pytest.fixture(scope="module")
def sample_paths():
    return sample.sample_paths()


@pytest.fixture(scope="module")
def pruner(sample_paths):
    return dwarfprune.Pruner(sample_paths["vmlinux"])


def _triage(paths, vmlinux):
    from lpdebug import target

    prog = target.open_vmcore(paths["vmcore"], [vmlinux, *paths["modules"]], default_debug_info=False)
    return prog, tr.dumps(tr.triage(prog, all_records=True))


def test_reprune_keeping_every_unit_gives_the_same_answer(pruner, sample_paths, tmp_path):
    """The ELF writer and the section rewriting round-trip the (already pruned) sample vmlinux."""
    keep = {u.offset for u in pruner.units}
    sections = pruner.pruned_sections(keep)
    assert sections[".debug_info"] == pruner.dwarf.info
    assert sections[".debug_aranges"] == pruner.sections[".debug_aranges"]
    out = str(tmp_path / "vmlinux")
    pruner.write(keep, out)
    _, got = _triage(sample_paths, out)
    assert got == sample.expected_json(sample.sample_dir())


def test_reprune_to_some_units(pruner, sample_paths, tmp_path):
    """Dropping units leaves valid DWARF: drgn loads it and finds what the kept units define."""
    index = pruner.dwarf.name_index()
    keepers = set(index["type"]["struct task_struct"][:1])
    dropped = [u for u in pruner.units if u.offset not in keepers]
    assert dropped
    out = str(tmp_path / "vmlinux")
    pruner.write(keepers, out)
    reread = dwarfprune.Pruner(out)
    assert [u.size for u in reread.units] == [u.size for u in pruner.units if u.offset in keepers]
    from lpdebug import target

    prog = target.open_vmcore(sample_paths["vmcore"], [out, *sample_paths["modules"]], default_debug_info=False)
    assert prog.type("struct task_struct").size > 0
    # every string a kept DIE names is still there, the rest of .debug_str is zeros
    strs = reread.sections[".debug_str"]
    for off in reread.refs(reread.units[0])["strp"]:
        assert strs[off : strs.index(b"\0", off)]


def test_debug_frame_pruning_neuters_other_fdes(pruner):
    data = pruner.sections[".debug_frame"]
    pruned = dwarfprune.prune_debug_frame(data, [])
    assert len(pruned) == len(data)
    assert pruned != data
    # entries keep their lengths: the section walks the same way
    pos = 0
    while pos < len(data):
        length = struct.unpack_from("<I", data, pos)[0]
        assert struct.unpack_from("<I", pruned, pos)[0] == length
        pos += 4 + length
