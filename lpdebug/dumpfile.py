"""
What a vmcore file holds, read from the file itself: its format, makedumpfile's
dump level, and which pages the dump's filter excluded; and the pages of
makedumpfile's kdump-compressed format, served to drgn.

Two formats reach a support engineer:

- ELF, as the kernel's ``/proc/vmcore`` writes it, or as ``makedumpfile -E``
  writes it filtered. makedumpfile drops a run of 256 or more excluded pages
  by ending the PT_LOAD's file data early: ``p_filesz < p_memsz``
  (``write_elf_pages_cyclic()`` in makedumpfile.c). drgn reads that tail as
  zeros, so without a look at the program headers a filtered page is
  indistinguishable from a page of zeros.
- kdump-compressed (``makedumpfile -c``, ``-l``, ``-p``, ``-z``): a header,
  two page bitmaps (1st: the page is RAM; 2nd: the page is in the dump), one
  ``page_desc`` per dumped page, the page data (IMPLEMENTATION and
  diskdump_mod.h in makedumpfile's sources). A page in the 1st bitmap but not
  the 2nd was excluded by the filter (``-d``).

drgn reads kdump-compressed files through libkdumpfile, whose ppc64 address
translation (libaddrxlat 0.5) knows only 64K pages and the pre-radix layout:
on a 4K-page ppc64 kernel every read fails, physical ones included ("Unsupported
page shift: 12", then "No way to translate"). :func:`attach` serves such a
file's pages itself, physically and in the linear map; vmalloc and module
addresses then go through drgn's own page-table walk (radix) or lpdebug's
hash-MMU walk, which read page tables physically.

A read that lands in an excluded page fails, with a :class:`drgn.FaultError`
that names the filter, instead of returning zeros as drgn does for the
excluded tails of an ELF vmcore: zeros where a magic number or a list
pointer should be would read as corruption. Every such page is recorded:
:func:`filtered_reads` lists them, so that a report says which address the
dump's filter took away.
"""

from __future__ import annotations

import array
import bisect
import ctypes
import ctypes.util
import struct
import sys
import zlib
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import drgn

from . import kernel

__all__ = (
    "DumpFile",
    "FilteredRead",
    "DumpFormatError",
    "read_dump_file",
    "sniff_format",
    "attach",
    "dump_file",
    "filtered_reads",
    "excluded_by",
)

_STATE_KEY = "dumpfile"  # in kernel.program_state(): the reader lives as long as the Program

KDUMP_SIGNATURE = b"KDUMP   "
FLATTENED_SIGNATURE = b"makedumpfile"
ELF_MAGIC = b"\x7fELF"

# page_desc.flags (diskdump_mod.h)
DUMP_DH_COMPRESSED_ZLIB = 0x1
DUMP_DH_COMPRESSED_LZO = 0x2
DUMP_DH_COMPRESSED_SNAPPY = 0x4
DUMP_DH_COMPRESSED_ZSTD = 0x20

# makedumpfile -d bits (makedumpfile.8)
DUMP_LEVEL_BITS = (
    (1, "zero"),
    (2, "cache"),
    (4, "cache private"),
    (8, "user"),
    (16, "free"),
)


class DumpFormatError(Exception):
    """The file claims a format whose headers do not hold together."""


def describe_dump_level(level: Optional[int]) -> str:
    """``31`` -> ``"zero, cache, cache private, user, free pages"``."""
    if level is None:
        return "unknown page classes"
    names = [name for bit, name in DUMP_LEVEL_BITS if level & bit]
    return (", ".join(names) + " pages") if names else "no pages"


@dataclass(frozen=True)
class DumpFile:
    """What a vmcore file holds, from its own headers."""

    path: str
    format: str  # "elf", "kdump" (makedumpfile's kdump-compressed) or "flattened"
    page_size: int
    # makedumpfile's -d, from the kdump sub header; None for ELF (makedumpfile
    # -E does not record it) and for a file that is not makedumpfile's
    dump_level: Optional[int]
    # physical [start, end) ranges the dump's filter excluded, sorted, merged
    excluded: Tuple[Tuple[int, int], ...] = ()
    # end of the physical memory the file describes (RAM and holes)
    phys_end: int = 0
    # pages of RAM the file describes, dumped or not (holes, such as the capture kernel's own
    # memory in a kdump /proc/vmcore, excluded)
    ram_pages: int = 0
    # kdump-compressed only: the compressions its first page descriptors use ("zlib", "lzo", "none"...)
    compression: Optional[str] = None

    @property
    def excluded_pages(self) -> int:
        return sum(end - start for start, end in self.excluded) // self.page_size

    def is_excluded(self, phys: int) -> bool:
        i = bisect.bisect_right(self.excluded, (phys, 1 << 64)) - 1
        return i >= 0 and self.excluded[i][0] <= phys < self.excluded[i][1]


@dataclass(frozen=True)
class FilteredRead:
    """A page lpdebug (or drgn for it) read that the dump's filter had excluded."""

    physical: int  # the page's physical address
    address: int  # the first address read in it, as asked for: virtual where the read was virtual
    order: int  # how many filtered pages were read before this one


def _runs(pfns_bits: int, npfns: int, page_size: int) -> Tuple[Tuple[int, int], ...]:
    """[start, end) physical ranges of the set bits of ``pfns_bits`` (bit n = pfn n)."""
    runs: List[Tuple[int, int]] = []
    pfn = 0
    bits = pfns_bits
    while bits and pfn < npfns:
        low = (bits & -bits).bit_length() - 1  # skip to the next set bit
        bits >>= low
        pfn += low
        run = (~bits & (bits + 1)).bit_length() - 1  # length of the run of ones
        runs.append((pfn * page_size, min(pfn + run, npfns) * page_size))
        bits >>= run
        pfn += run
    return tuple(runs)


def _read_elf(path: str, f) -> DumpFile:  # type: ignore[no-untyped-def]
    ident = f.read(64)
    if len(ident) < 64 or ident[4] != 2:
        raise DumpFormatError(f"{path}: not an ELF64 core")
    end = "<" if ident[5] == 1 else ">"
    (e_type, _, _, _, e_phoff, _, _, _, e_phentsize, e_phnum) = struct.unpack_from(
        end + "HHIQQQIHHH", ident, 16
    )
    f.seek(e_phoff)
    ph = f.read(e_phentsize * e_phnum)
    if len(ph) < e_phentsize * e_phnum or e_phentsize < 56:
        raise DumpFormatError(f"{path}: truncated ELF program headers")
    excluded: List[Tuple[int, int]] = []
    phys_end = ram = 0
    for i in range(e_phnum):
        p_type, _, _, _, p_paddr, p_filesz, p_memsz, _ = struct.unpack_from(
            end + "IIQQQQQQ", ph, i * e_phentsize
        )
        if p_type != 1:  # PT_LOAD
            continue
        phys_end = max(phys_end, p_paddr + p_memsz)
        ram += p_memsz
        if p_memsz > p_filesz:
            excluded.append((p_paddr + p_filesz, p_paddr + p_memsz))
    page_size = _elf_page_size(f, ident, end, e_phoff, ph, e_phnum, e_phentsize)
    return DumpFile(path, "elf", page_size, None, _merge(excluded), phys_end, ram // page_size)


def _elf_page_size(f, ident, end, e_phoff, ph, e_phnum, e_phentsize) -> int:  # type: ignore[no-untyped-def]
    # PAGESIZE from the VMCOREINFO note, if the core has one; 4096 otherwise.
    for i in range(e_phnum):
        p_type, _, p_offset, _, _, p_filesz, _, _ = struct.unpack_from(end + "IIQQQQQQ", ph, i * e_phentsize)
        if p_type == 4 and p_filesz < (1 << 20):  # PT_NOTE
            f.seek(p_offset)
            notes = f.read(p_filesz)
            at = notes.find(b"PAGESIZE=")
            if at >= 0:
                value = notes[at + 9 : at + 30].split(b"\n", 1)[0]
                try:
                    return int(value)
                except ValueError:
                    pass
    return 4096


def _merge(ranges: List[Tuple[int, int]]) -> Tuple[Tuple[int, int], ...]:
    merged: List[Tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return tuple(merged)


@dataclass
class _KdumpLayout:
    block_size: int
    max_mapnr: int
    dump_level: int
    endian: str  # "<" or ">": the byte order of the machine that wrote the file
    bitmap1: int  # bit n: pfn n is RAM
    bitmap2: int  # bit n: pfn n is in the dump
    descs_offset: int  # file offset of the first page_desc
    rank: "array.array[int]" = field(default_factory=lambda: array.array("Q"))  # dumped pages before each word
    words: "array.array[int]" = field(default_factory=lambda: array.array("Q"))  # bitmap2 as 64-pfn words
    ram_words: "array.array[int]" = field(default_factory=lambda: array.array("Q"))  # bitmap1 as 64-pfn words


def _read_kdump_layout(path: str, f) -> _KdumpLayout:  # type: ignore[no-untyped-def]
    # struct disk_dump_header as makedumpfile writes it on a 64-bit machine,
    # in that machine's byte order: signature[8], header_version (int),
    # new_utsname (6 x 65 chars) padded to 408, timeval (2 x 8), then status,
    # block_size, sub_hdr_size, bitmap_blocks, max_mapnr (all 4 bytes).
    head = f.read(4096)
    if len(head) < 464:
        raise DumpFormatError(f"{path}: truncated kdump header")
    version = struct.unpack_from("<i", head, 8)[0]
    endian = "<"
    if not 0 < version < 100:
        endian = ">"
        version = struct.unpack_from(">i", head, 8)[0]
    if not 0 < version < 100:
        raise DumpFormatError(f"{path}: kdump header version {version} not understood")
    status, block_size, sub_hdr_size, bitmap_blocks, max_mapnr = struct.unpack_from(
        endian + "IiiII", head, 424
    )
    if block_size <= 0 or block_size & (block_size - 1) or block_size > (1 << 20):
        raise DumpFormatError(f"{path}: kdump block size {block_size} not understood")
    f.seek(block_size)
    sub = f.read(112)
    if len(sub) < 112:
        raise DumpFormatError(f"{path}: truncated kdump sub header")
    # struct kdump_sub_header: phys_base, dump_level, split, start_pfn, end_pfn,
    # offset/size of vmcoreinfo, note, eraseinfo, then (version 6+) 64-bit pfns
    dump_level = struct.unpack_from(endian + "i", sub, 8)[0]
    if version >= 6:
        max_mapnr = struct.unpack_from(endian + "Q", sub, 96)[0]
    bitmap_offset = block_size * (1 + sub_hdr_size)
    half = bitmap_blocks * block_size // 2
    if half * 8 < max_mapnr:
        raise DumpFormatError(f"{path}: kdump bitmaps ({half} bytes) too small for {max_mapnr} pages")
    f.seek(bitmap_offset)
    bitmaps = f.read(2 * half)
    if len(bitmaps) < 2 * half:
        raise DumpFormatError(f"{path}: truncated kdump bitmaps")
    nbytes = (max_mapnr + 7) // 8
    first = bitmaps[:nbytes]
    second = bitmaps[half : half + nbytes]
    layout = _KdumpLayout(
        block_size=block_size,
        max_mapnr=max_mapnr,
        dump_level=dump_level,
        endian=endian,
        bitmap1=int.from_bytes(first, "little"),
        bitmap2=int.from_bytes(second, "little"),
        descs_offset=bitmap_offset + 2 * half,
    )
    layout.words = _words(second)
    layout.ram_words = _words(first)
    total = 0
    rank = [0] * len(layout.words)
    for i, w in enumerate(layout.words):
        rank[i] = total
        total += bin(w).count("1")
    layout.rank = array.array("Q", rank)
    return layout


def _words(bitmap: bytes) -> "array.array[int]":
    # bit n of a makedumpfile bitmap is bit n % 8 of byte n // 8: little-endian 64-bit words
    words = array.array("Q")
    words.frombytes(bitmap + bytes(-len(bitmap) % 8))
    if sys.byteorder != "little":
        words.byteswap()
    return words


def read_dump_file(path: str) -> DumpFile:
    """The format, dump level and excluded pages of the vmcore at ``path``.

    Raises :class:`DumpFormatError` for a file whose headers do not hold
    together and OSError when it cannot be read.
    """
    return _read(path)[0]


def sniff_format(path: str) -> Optional[str]:
    """"elf", "kdump", "flattened" from the file's first bytes; None for anything else."""
    with open(path, "rb") as f:
        magic = f.read(16)
    for signature, name in ((ELF_MAGIC, "elf"), (KDUMP_SIGNATURE, "kdump"), (FLATTENED_SIGNATURE, "flattened")):
        if magic.startswith(signature):
            return name
    return None


def _read(path: str) -> Tuple[DumpFile, Optional[_KdumpLayout]]:
    with open(path, "rb") as f:
        magic = f.read(16)
        f.seek(0)
        if magic.startswith(ELF_MAGIC):
            return _read_elf(path, f), None
        if magic.startswith(KDUMP_SIGNATURE):
            layout = _read_kdump_layout(path, f)
            excluded = _runs(layout.bitmap1 & ~layout.bitmap2, layout.max_mapnr, layout.block_size)
            dump = DumpFile(path, "kdump", layout.block_size, layout.dump_level, excluded,
                            layout.max_mapnr * layout.block_size, bin(layout.bitmap1).count("1"),
                            _compressions(f, layout))
            return dump, layout
        if magic.startswith(FLATTENED_SIGNATURE):
            return DumpFile(path, "flattened", 0, None), None
    raise DumpFormatError(f"{path}: neither an ELF core nor a makedumpfile dump")


def _compressions(f, layout: _KdumpLayout) -> str:  # type: ignore[no-untyped-def]
    # The first dumped pages tell how the file was written (makedumpfile uses
    # one method for a file; a page that did not shrink is stored as it is).
    f.seek(layout.descs_offset)
    seen = set()
    for _ in range(64):
        desc = f.read(24)
        if len(desc) < 24:
            break
        _, size, flags, _ = struct.unpack(layout.endian + "qIIQ", desc)
        for bit, name in ((DUMP_DH_COMPRESSED_ZLIB, "zlib"), (DUMP_DH_COMPRESSED_LZO, "lzo"),
                          (DUMP_DH_COMPRESSED_SNAPPY, "snappy"), (DUMP_DH_COMPRESSED_ZSTD, "zstd")):
            if flags & bit:
                seen.add(name)
    return ",".join(sorted(seen)) or "none"


# --- decompression ------------------------------------------------------------


def _c_decompressor(libname: str, symbol: str) -> Optional[Callable]:  # type: ignore[type-arg]
    path = ctypes.util.find_library(libname)
    if path is None:
        return None
    try:
        return getattr(ctypes.CDLL(path), symbol)
    except (OSError, AttributeError):
        return None


class _Decompressors:
    # zlib is in Python's standard library; lzo, snappy and zstd come from the
    # C libraries makedumpfile itself links, when the system has them.
    def __init__(self) -> None:
        self._lzo: Optional[Callable] = None  # type: ignore[type-arg]
        self._snappy: Optional[Callable] = None  # type: ignore[type-arg]
        self._zstd: Optional[Callable] = None  # type: ignore[type-arg]
        self._loaded = False

    def _load(self) -> None:
        if not self._loaded:
            self._lzo = _c_decompressor("lzo2", "lzo1x_decompress_safe")
            self._snappy = _c_decompressor("snappy", "snappy_uncompress")
            self._zstd = _c_decompressor("zstd", "ZSTD_decompress")
            if self._zstd is not None:
                self._zstd.restype = ctypes.c_size_t  # type: ignore[attr-defined]
            self._loaded = True

    def decompress(self, flags: int, data: bytes, page_size: int) -> bytes:
        if flags & DUMP_DH_COMPRESSED_ZLIB:
            return zlib.decompress(data)
        self._load()
        out = ctypes.create_string_buffer(page_size)
        if flags & DUMP_DH_COMPRESSED_LZO:
            if self._lzo is None:
                raise DumpFormatError("lzo-compressed page, but liblzo2 is not installed")
            out_len = ctypes.c_ulong(page_size)
            rc = self._lzo(data, ctypes.c_ulong(len(data)), out, ctypes.byref(out_len), None)
            if rc != 0:
                raise DumpFormatError(f"lzo1x_decompress_safe failed ({rc})")
            return out.raw[: out_len.value]
        if flags & DUMP_DH_COMPRESSED_SNAPPY:
            if self._snappy is None:
                raise DumpFormatError("snappy-compressed page, but libsnappy is not installed")
            snappy_len = ctypes.c_size_t(page_size)
            rc = self._snappy(data, ctypes.c_size_t(len(data)), out, ctypes.byref(snappy_len))
            if rc != 0:
                raise DumpFormatError(f"snappy_uncompress failed ({rc})")
            return out.raw[: snappy_len.value]
        if flags & DUMP_DH_COMPRESSED_ZSTD:
            if self._zstd is None:
                raise DumpFormatError("zstd-compressed page, but libzstd is not installed")
            n = self._zstd(out, ctypes.c_size_t(page_size), data, ctypes.c_size_t(len(data)))
            if n > page_size:
                raise DumpFormatError("ZSTD_decompress failed")
            return out.raw[:n]
        return data


_DECOMPRESSORS = _Decompressors()


# --- serving the pages to drgn ------------------------------------------------


class _DumpReader:
    """Pages of one vmcore as drgn memory segments, with the filtered reads logged."""

    def __init__(self, dump: DumpFile, layout: Optional[_KdumpLayout]) -> None:
        self.dump = dump
        self.layout = layout
        self.filtered: Dict[int, FilteredRead] = {}
        self._file = open(dump.path, "rb") if layout is not None else None
        self._cache: Dict[int, bytes] = {}

    def _note_filtered(self, phys: int, address: int) -> None:
        page = phys - phys % self.dump.page_size
        if page not in self.filtered:
            self.filtered[page] = FilteredRead(page, address, len(self.filtered))

    def _page(self, pfn: int, address: int) -> bytes:
        cached = self._cache.get(pfn)
        if cached is not None:
            return cached
        layout = self.layout
        assert layout is not None and self._file is not None
        size = layout.block_size
        word, bit = divmod(pfn, 64)
        if pfn >= layout.max_mapnr or not (layout.ram_words[word] >> bit) & 1:
            raise drgn.FaultError("memory not in the dump (no RAM there)", address)
        if not (layout.words[word] >> bit) & 1:
            self.excluded(address, 1, pfn * size + address % size)
        index = layout.rank[word] + bin(layout.words[word] & ((1 << bit) - 1)).count("1")
        self._file.seek(layout.descs_offset + 24 * index)
        offset, length, flags, _ = struct.unpack(layout.endian + "qIIQ", self._file.read(24))
        self._file.seek(offset)
        data = self._file.read(length)
        try:
            page = _DECOMPRESSORS.decompress(flags, data, size)
        except (DumpFormatError, zlib.error) as e:
            raise drgn.FaultError(f"page of the dump cannot be decompressed: {e}", address) from None
        if len(page) != size:
            raise drgn.FaultError(f"page of the dump decompresses to {len(page)} bytes", address)
        if len(self._cache) >= 512:
            self._cache.clear()
        self._cache[pfn] = page
        return page

    def read_physical(self, address: int, count: int, phys: int) -> bytes:
        size = self.dump.page_size
        out = []
        while count > 0:
            pfn, in_page = divmod(phys, size)
            n = min(count, size - in_page)
            out.append(self._page(pfn, address)[in_page : in_page + n])
            phys += n
            address += n
            count -= n
        return b"".join(out)

    def excluded(self, address: int, count: int, phys: int) -> bytes:
        self._note_filtered(phys, address)
        raise drgn.FaultError(f"page excluded from the dump by {self.why}", address)

    @property
    def why(self) -> str:
        """What excluded the dump's pages, for a person."""
        if self.dump.format == "kdump":
            return f"makedumpfile -d {self.dump.dump_level} ({describe_dump_level(self.dump.dump_level)})"
        return "makedumpfile (the ELF segment's file data ends before it)"


def attach(prog: drgn.Program, path: str) -> DumpFile:
    """
    Serve the pages of the vmcore at ``path`` to ``prog`` (after
    ``prog.set_core_dump(path)``, or to a Program with no memory yet): for a
    kdump-compressed file, all of physical memory and the linear map; for an
    ELF file, only its excluded pages (as faults, where drgn gives zeros); for
    makedumpfile's flattened format, nothing. Returns what the file's headers
    say; raises :class:`DumpFormatError` or OSError as :func:`read_dump_file`.
    """
    dump, layout = _read(path)
    if dump.format == "flattened":
        return dump
    reader = _DumpReader(dump, layout)
    kernel.program_state(prog)[_STATE_KEY] = reader
    if layout is not None:
        size = dump.phys_end

        def read_phys(address: int, count: int, offset: int, physical: bool) -> bytes:
            return reader.read_physical(address, count, address)

        def read_linear(address: int, count: int, offset: int, physical: bool) -> bytes:
            return reader.read_physical(address, count, address - kernel.LINEAR_MAP_BASE)

        prog.add_memory_segment(0, size, read_phys, True)
        prog.add_memory_segment(kernel.LINEAR_MAP_BASE, size, read_linear)
        return dump
    for start, end in dump.excluded:

        def excluded_phys(address: int, count: int, offset: int, physical: bool) -> bytes:
            return reader.excluded(address, count, address)

        def excluded_linear(address: int, count: int, offset: int, physical: bool) -> bytes:
            return reader.excluded(address, count, address - kernel.LINEAR_MAP_BASE)

        prog.add_memory_segment(start, end - start, excluded_phys, True)
        prog.add_memory_segment(kernel.LINEAR_MAP_BASE + start, end - start, excluded_linear)
    return dump


def _reader(prog: drgn.Program) -> Optional["_DumpReader"]:
    if getattr(prog, "cache", None) is None:  # a stand-in Program of the tests
        return None
    return kernel.program_state(prog).get(_STATE_KEY)


def dump_file(prog: drgn.Program) -> Optional[DumpFile]:
    """The :class:`DumpFile` that :func:`attach` serves for ``prog``, None if none."""
    reader = _reader(prog)
    return reader.dump if reader is not None else None


def excluded_by(prog: drgn.Program) -> str:
    """What excluded pages from ``prog``'s dump, for a person ("makedumpfile -d 31 (...)")."""
    reader = _reader(prog)
    return reader.why if reader is not None else "the dump's filter"


def filtered_reads(prog: drgn.Program) -> List[FilteredRead]:
    """Every excluded page read so far, in the order first read."""
    reader = _reader(prog)
    if reader is None:
        return []
    return sorted(reader.filtered.values(), key=lambda r: r.order)
