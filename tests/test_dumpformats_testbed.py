"""
Every dump format a customer's kdump writes gives the report its raw capture
gives.

``vmcores/build`` derives, from the raw captures, the files Debian's
makedumpfile (1.7.2, ppc64el) writes: kdump-compressed (zlib, lzo) and
filtered ELF, with the strongest dump level the kernel allows (``-d 31`` on
6.1, ``-d 1`` on 6.12). Each holds the same instant as its raw twin, so:

- lpdebug's triage JSON of the derived dump equals the twin's, byte for byte,
  except where the filter removed a page the report read; every such page is
  a typed ``filtered`` diagnostic, and only a page the file really excluded;
- what lpdebug reads out of the file's headers (format, dump level, excluded
  pages) agrees with what makedumpfile reported when it wrote the file;
- every page lpdebug serves from a kdump-compressed file is the twin's page.
"""

import functools
import random
import struct

import drgn
import pytest

from drgn.helpers.linux.pid import find_task

from lpdebug import dumpfile, kernel, report, schema, target
from lpdebug.model import DiagnosticKind
from testbed import scenario

pytestmark = pytest.mark.testbed

KDUMP = ["kdump-zlib", "kdump-lzo"]
FORMATS = KDUMP + ["elf-filtered"]
DERIVED = (
    [f"{twin}-{fmt}" for twin in ("toc-crash", "settled", "stuck", "settled-6.1") for fmt in FORMATS]
    + ["settled-64k-kdump-zlib", "settled-hash-kdump-zlib", "nolivepatch-kdump-zlib"]
)


@functools.lru_cache(maxsize=None)
def _triaged(name):
    s = scenario(name)
    prog = target.open_vmcore(s["vmcore"], [s["vmlinux"], *s["modules"]], default_debug_info=False)
    result = report.triage(prog, all_records=True)
    return prog, result, schema.dumps(result)


@pytest.mark.parametrize("name", DERIVED)
def test_manifest_names_the_raw_twin_and_the_format(name):
    s = scenario(name)
    twin = scenario(s["derived_from"])
    assert "derived_from" not in twin
    assert s["format"] in FORMATS and name == f"{twin['name']}-{s['format']}"
    assert s["vmcore"] != twin["vmcore"]
    assert (s["vmlinux"], s["modules"], s["truth"]) == (twin["vmlinux"], twin["modules"], twin["truth"])
    expected_level = 31 if twin["kernel_release"].startswith("6.1.") else 1
    assert s["dump_level"] == expected_level


@pytest.mark.parametrize("name", DERIVED)
def test_headers_agree_with_makedumpfile_report(name):
    s = scenario(name)
    report = s["makedumpfile_report"]
    dump = dumpfile.read_dump_file(s["vmcore"])
    assert report["original"] == report["excluded"] + report["remaining"]
    if s["format"] in KDUMP:
        assert dump.format == "kdump"
        assert dump.dump_level == s["dump_level"]
        assert dump.compression == s["format"].split("-")[1]
        # kdump-compressed keeps zero pages (one shared zero page_desc) and drops the rest from its
        # bitmap; makedumpfile counts both as excluded
        assert dump.excluded_pages == report["excluded"] - report["zero"]
        assert dump.ram_pages == report["original"]
    else:
        assert dump.format == "elf" and dump.dump_level is None
        assert dump.ram_pages == report["original"]
        # ELF drops only runs of 256 excluded pages or more: shorter runs keep their data
        assert 0 < dump.excluded_pages <= report["excluded"]
    if s["dump_level"] == 31:
        assert report["free"] > 0 and dump.excluded_pages > 0


@pytest.mark.parametrize("name", [n for n in DERIVED if n.rsplit("-", 2)[-2] == "kdump"])
def test_served_pages_are_the_raw_twins(name):
    s = scenario(name)
    prog, _, _ = _triaged(name)
    raw, _, _ = _triaged(s["derived_from"])
    dump = dumpfile.dump_file(prog)
    assert dump is not None and dump.format == "kdump"
    rng = random.Random(name)
    compared = 0
    for _ in range(20000):  # random pages until 200 dumped ones (-d 31 drops most of an idle guest)
        phys = rng.randrange(dump.phys_end // dump.page_size) * dump.page_size
        if dump.is_excluded(phys):
            continue
        try:
            expected = raw.read(phys, dump.page_size, True)
        except drgn.FaultError:  # not RAM (the capture kernel's own memory, in toc-crash)
            with pytest.raises(drgn.FaultError, match="no RAM"):
                prog.read(phys, dump.page_size, True)
            continue
        assert prog.read(phys, dump.page_size, True) == expected, hex(phys)
        linear = kernel.LINEAR_MAP_BASE + phys
        assert prog.read(linear, 64) == raw.read(linear, 64), hex(linear)
        compared += 1
        if compared == 200:
            break
    assert compared == 200


@pytest.mark.parametrize("name", DERIVED)
def test_triage_equals_the_raw_twins_except_filtered_pages(name):
    s = scenario(name)
    prog, result, text = _triaged(name)
    raw_prog, raw_result, raw_text = _triaged(s["derived_from"])
    assert raw_result.tasks, "the raw capture has tasks: the comparison would be empty otherwise"
    assert [d for d in raw_result.diagnostics if d.kind == DiagnosticKind.FILTERED] == []
    filtered = [d for d in result.diagnostics if d.kind == DiagnosticKind.FILTERED]
    dump = dumpfile.dump_file(prog)
    for read in dumpfile.filtered_reads(prog):
        assert dump.is_excluded(read.physical), f"{read} is not excluded by the file"
    assert len(filtered) <= len(dumpfile.filtered_reads(prog))
    assert bool(filtered) == bool(dumpfile.filtered_reads(prog)), "a filtered read left no diagnostic"
    if not filtered:
        assert text == raw_text
    else:
        # what the filter removed may change the report, but nothing else: with every filtered page
        # served from the raw twin instead, the report is the raw one
        assert _triage_with_pages_from(name, s["derived_from"]) == raw_text


def _triage_with_pages_from(name, twin, vmcore=None):
    s = scenario(name)
    raw, _, _ = _triaged(twin)
    prog = target.open_vmcore(vmcore or s["vmcore"], [s["vmlinux"], *s["modules"]], default_debug_info=False)
    dump = dumpfile.dump_file(prog)
    for start, end in dump.excluded:

        def from_raw(address, count, offset, physical, start=start):
            return raw.read(start + offset, count, True)

        prog.add_memory_segment(start, end - start, from_raw, True)
        prog.add_memory_segment(kernel.LINEAR_MAP_BASE + start, end - start, from_raw)
    return schema.dumps(report.triage(prog, all_records=True))


def test_kdump_files_defeat_drgn_alone_on_4k_kernels():
    """Why lpdebug serves kdump pages itself: drgn 0.3.0 with libkdumpfile cannot read them."""
    s = scenario("settled-kdump-zlib")
    prog = drgn.Program()
    prog.set_core_dump(s["vmcore"])
    with pytest.raises(drgn.FaultError, match="translate|page shift"):
        prog.read(kernel.LINEAR_MAP_BASE + 0x1000000, 8)
    with pytest.raises(drgn.FaultError, match="translate|page shift"):
        prog.read(0x1000000, 8, True)


def _drop_page(src, dst, phys):
    """Copy the kdump-compressed file ``src`` to ``dst`` without the page at ``phys``, the way
    makedumpfile drops a page: its bit cleared in the 2nd bitmap and its page_desc taken out."""
    data = bytearray(open(src, "rb").read())
    block_size, sub_hdr_size, bitmap_blocks = struct.unpack_from("<iiI", data, 428)
    second = block_size * (1 + sub_hdr_size) + bitmap_blocks * block_size // 2
    descs = block_size * (1 + sub_hdr_size) + bitmap_blocks * block_size
    pfn = phys // block_size
    assert data[second + pfn // 8] & (1 << pfn % 8), "the page is in the dump"
    index = sum(bin(b).count("1") for b in data[second : second + pfn // 8])
    index += bin(data[second + pfn // 8] & ((1 << pfn % 8) - 1)).count("1")
    dumped = sum(bin(b).count("1") for b in data[second : descs])
    data[second + pfn // 8] &= ~(1 << pfn % 8)
    data[descs + 24 * index : descs + 24 * (dumped - 1)] = data[descs + 24 * (index + 1) : descs + 24 * dumped]
    with open(dst, "wb") as f:
        f.write(data)


@pytest.mark.parametrize("name", ["settled-6.1-kdump-zlib", "toc-crash-kdump-lzo"])
def test_a_page_the_report_needs_filtered_out_is_named_never_corruption(name, tmp_path):
    """A real dump with one more page dropped: the task_struct of lpd_lp_victim."""
    s = scenario(name)
    raw, raw_result, raw_text = _triaged(s["derived_from"])
    task = find_task(raw, s["lpd_pids"]["lpd_lp_victim"]).value_()
    page = (task - kernel.LINEAR_MAP_BASE) & ~(s["page_size"] - 1)
    vmcore = str(tmp_path / "vmcore")
    _drop_page(s["vmcore"], vmcore, page)
    prog = target.open_vmcore(vmcore, [s["vmlinux"], *s["modules"]], default_debug_info=False)
    result = report.triage(prog, all_records=True)
    filtered = [d for d in result.diagnostics if d.kind == DiagnosticKind.FILTERED]
    assert filtered, "the dropped page was needed and is not reported"
    assert all(page <= (d.address - kernel.LINEAR_MAP_BASE) % (1 << 60) < page + s["page_size"]
               or page <= d.address < page + s["page_size"] for d in filtered)
    assert all(f"-d {s['dump_level']}" in d.message for d in filtered)
    new = [f for f in result.findings if f.kind not in {g.kind for g in raw_result.findings}]
    assert all(f.kind == "unreadable_memory" and "excluded from the dump" in f.message for f in new), \
        f"reading the filtered page made a finding other than 'unreadable': {new}"
    assert schema.dumps(result) != raw_text
    assert _triage_with_pages_from(name, s["derived_from"], vmcore) == raw_text
