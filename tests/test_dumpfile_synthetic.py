"""
lpdebug.dumpfile on made-up kdump-compressed files: the layouts no testbed
capture has (a memory hole, excluded pages scattered between dumped ones,
mixed compressed and stored pages, a big-endian writer, broken headers).
Real makedumpfile output is covered by tests/test_dumpformats_testbed.py.
"""

import struct
import zlib

import drgn
import pytest

from lpdebug import dumpfile, kernel, target
from lpdebug.errors import TargetError

pytestmark = pytest.mark.synthetic

PS = 4096
NPAGES = 64
HOLE = {10, 11}  # not RAM
EXCLUDED = {20, 21, 22, 40}  # RAM the filter dropped


def page(pfn):
    return struct.pack("<Q", 0x1000 + pfn) + bytes([pfn % 251]) * (PS - 8)


def write_kdump(path, *, endian="<", level=31, truncate_at=None):
    uts = b"".join(s.ljust(65, b"\0") for s in (b"Linux", b"t", b"6.12.0", b"#1", b"ppc64le", b""))
    hdr = b"KDUMP   " + struct.pack(endian + "i", 6) + uts
    hdr += bytes(408 - len(hdr)) + struct.pack(endian + "qq", 0, 0)
    hdr += struct.pack(endian + "IiiIIIIIIi", 0, PS, 1, 2, NPAGES, NPAGES, 0, 0, 0, 1)
    vmcoreinfo = b"OSRELEASE=6.12.0\nPAGESIZE=4096\n"
    sub = struct.pack(endian + "QiiQQqQqQqQQQQ", 0, level, 0, 0, NPAGES, PS + 112, len(vmcoreinfo),
                      0, 0, 0, 0, 0, NPAGES, NPAGES)
    ram = [pfn not in HOLE for pfn in range(NPAGES)]
    dumped = [ram[pfn] and pfn not in EXCLUDED for pfn in range(NPAGES)]

    def bitmap(bits):
        return sum(1 << i for i, b in enumerate(bits) if b).to_bytes(NPAGES // 8, "little").ljust(PS, b"\0")

    pfns = [pfn for pfn in range(NPAGES) if dumped[pfn]]
    data_off = 4 * PS + 24 * len(pfns)
    descs, data = b"", b""
    for pfn in pfns:
        raw = page(pfn)
        stored, flags = (zlib.compress(raw), dumpfile.DUMP_DH_COMPRESSED_ZLIB) if pfn % 2 else (raw, 0)
        descs += struct.pack(endian + "qIIQ", data_off + len(data), len(stored), flags, 0)
        data += stored
    blob = hdr.ljust(PS, b"\0") + (sub + vmcoreinfo).ljust(PS, b"\0") + bitmap(ram) + bitmap(dumped)
    blob += descs + data
    with open(path, "wb") as f:
        f.write(blob[:truncate_at])
    return path


def ppc64_program():
    return drgn.Program(drgn.Platform(drgn.Architecture.PPC64,
                                      drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN))


@pytest.mark.parametrize("endian", ["<", ">"])
def test_headers_give_level_and_excluded_runs(tmp_path, endian):
    dump = dumpfile.read_dump_file(write_kdump(str(tmp_path / "d"), endian=endian, level=17))
    assert (dump.format, dump.page_size, dump.dump_level) == ("kdump", PS, 17)
    assert dump.excluded == ((20 * PS, 23 * PS), (40 * PS, 41 * PS))
    assert dump.excluded_pages == 4
    assert dump.phys_end == NPAGES * PS
    assert dump.is_excluded(21 * PS + 5) and not dump.is_excluded(23 * PS) and not dump.is_excluded(10 * PS)
    assert dumpfile.describe_dump_level(17) == "zero, free pages"


def test_pages_served_physically_and_in_the_linear_map(tmp_path):
    prog = ppc64_program()
    dumpfile.attach(prog, write_kdump(str(tmp_path / "d")))
    for pfn in (0, 1, 9, 12, 19, 23, 41, 63):  # stored and zlib pages, around the hole and the exclusions
        assert prog.read(pfn * PS, PS, True) == page(pfn)
        assert prog.read(kernel.LINEAR_MAP_BASE + pfn * PS + 8, 4) == bytes([pfn % 251]) * 4
    # one read across a page boundary
    assert prog.read(kernel.LINEAR_MAP_BASE + 13 * PS - 4, 12) == page(12)[-4:] + page(13)[:8]
    assert dumpfile.filtered_reads(prog) == []


def test_excluded_pages_fault_naming_the_filter_and_are_logged_in_order(tmp_path):
    prog = ppc64_program()
    dumpfile.attach(prog, write_kdump(str(tmp_path / "d")))
    with pytest.raises(drgn.FaultError, match=r"excluded from the dump by makedumpfile -d 31 \(zero, cache") as e:
        prog.read(kernel.LINEAR_MAP_BASE + 40 * PS + 16, 8)
    assert e.value.address == kernel.LINEAR_MAP_BASE + 40 * PS + 16
    with pytest.raises(drgn.FaultError, match="excluded") as e:
        prog.read(19 * PS, 3 * PS, True)
    assert e.value.address == 20 * PS
    assert prog.read(19 * PS, PS, True) == page(19)
    reads = dumpfile.filtered_reads(prog)
    assert [(r.physical, r.address) for r in reads] == [
        (40 * PS, kernel.LINEAR_MAP_BASE + 40 * PS + 16),
        (20 * PS, 20 * PS),
    ]


def test_memory_hole_is_a_fault_of_its_own(tmp_path):
    prog = ppc64_program()
    dumpfile.attach(prog, write_kdump(str(tmp_path / "d")))
    with pytest.raises(drgn.FaultError, match="no RAM"):
        prog.read(kernel.LINEAR_MAP_BASE + 10 * PS, 8)
    assert dumpfile.filtered_reads(prog) == []


@pytest.mark.parametrize("cut", [100, PS + 50, 2 * PS + 10])
def test_truncated_kdump_header_is_one_clear_error(tmp_path, cut):
    path = write_kdump(str(tmp_path / "d"), truncate_at=cut)
    with pytest.raises(dumpfile.DumpFormatError, match="truncated kdump"):
        dumpfile.read_dump_file(path)
    with pytest.raises(TargetError) as e:
        target.open_vmcore(path, [], default_debug_info=False)
    assert "\n" not in str(e.value)


def test_page_that_does_not_decompress_is_a_fault(tmp_path):
    path = write_kdump(str(tmp_path / "d"))
    prog = ppc64_program()
    dumpfile.attach(prog, path)
    with open(path, "r+b") as f:  # corrupt the first zlib page's data (pfn 1)
        f.seek(4 * PS + 24)
        offset = struct.unpack("<q", f.read(8))[0]
        f.seek(offset)
        f.write(b"\xff" * 16)
    with pytest.raises(drgn.FaultError, match="cannot be decompressed"):
        prog.read(PS, 8, True)
