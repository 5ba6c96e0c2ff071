# SPDX-License-Identifier: GPL-2.0-or-later
"""
Kernel virtual memory of hash-MMU ppc64 (Book3S-64) kernels, served to drgn.

drgn 0.3.0 translates ppc64 kernel virtual addresses only under the radix MMU.
On a hash-MMU kernel every read it has to translate itself (module text and
data, ``klp_patch`` objects of livepatch modules, anything vmalloc'd, and on a
live QMP target even vmlinux data) raises ``NotImplementedError``.  This module
adds memory segments to the program that do the translation instead, so every
walker works unchanged:

* the linear map ``[LINEAR_MAP_BASE, __kernel_virt_start)``: virtual = LINEAR_MAP_BASE +
  physical, a fixed offset (only where drgn cannot already read it, e.g. over
  QMP; a kdump vmcore carries the linear map in its program headers);
* the vmalloc and I/O-remap region ``[__kernel_virt_start, __kernel_io_end)``:
  a walk of the kernel's own Linux page tables rooted at ``init_mm.pgd``;
* the vmemmap region: the ``vmemmap_list`` of ``struct vmemmap_backing`` (on
  hash the kernel maps vmemmap only in the hash page table, bolted, and keeps
  this list of its blocks).

Later drgn segments take precedence over earlier ones, so these shadow drgn's
own page-table reader.  A page that is not mapped raises ``drgn.FaultError``
naming the virtual address; nothing is ever guessed.

The geometry is read from the target, never from a version string: the
runtime variables ``__pte_index_size``, ``__pmd_index_size``,
``__pud_index_size``, ``__pgd_index_size`` (one kernel image serves radix and
hash, so they are variables), ``__kernel_virt_start``, ``__kernel_io_start``,
``__kernel_io_end``, ``vmemmap`` and the page size (vmcoreinfo ``PAGESIZE``).
These variables came with the radix/hash split of the Book3S-64 page tables
(around Linux 4.7, not tried on such an old kernel); a kernel without them,
whose hash PTE format was different, is refused with a clear error.

Page-table entry format and geometry (read in the 6.1 and 6.12 sources, where
they are identical: ``arch/powerpc/include/asm/book3s/64/{pgtable,hash,
hash-4k,hash-64k,pgalloc}.h``, ``arch/powerpc/include/asm/page.h``,
``arch/powerpc/mm/book3s64/hash_utils.c`` (``hash__early_init_mmu`` sets the
runtime variables), ``arch/powerpc/mm/init_64.c`` (vmemmap_list); and checked
on real 6.12 4K, 6.12 64K and 6.1 4K hash-MMU guests against the kernel's
own ``vm_struct->pages``):

* every entry is a ``__be64``: big-endian in memory, also on ppc64le;
* ``_PAGE_PRESENT`` = bit 63, ``_PAGE_PTE`` = bit 62 (a leaf at any level),
  ``_PAGE_INVALID`` = bit 61 (a present leaf invalidated for an update; the
  kernel's ``pte_present()`` counts it as present);
* a directory entry (PGD/PUD/PMD) is ``__pa(next table) | 0x8000000000000000``
  on hash; the next table is ``entry & ~0xc0000000000000ff``;
* a leaf's real page number is ``entry & PTE_RPN_MASK`` with
  ``PTE_RPN_MASK = ((1 << 53) - 1) & PAGE_MASK``; the hash-only bits
  (``H_PAGE_HASHPTE``, ``H_PAGE_F_GIX``, ``H_PAGE_F_SECOND``, ``H_PAGE_COMBO``,
  ``H_PAGE_BUSY``) fall outside that mask;
* geometry: hash 4K: PTE 9, PMD 7, PUD 9, PGD 9 bits (vmalloc at
  0xc0003d0000000000, 1 TB regions); hash 64K: PTE 8, PMD 10, PUD 10, PGD 8
  (vmalloc at 0xc008000000000000, 512 TB regions);
* leaves above the PTE level: a PMD or PUD entry with ``_PAGE_PTE``.  Their size
  is the level's span, except on hash with 4K pages, where the kernel's
  ``pmd_leaf_size()``/``pud_leaf_size()`` say 16M and 16G (a 16M page is held
  by several contiguous PMD entries); the offset is taken within that size.

Left out (none of it is used by the kernel's vmalloc/module mappings on hash):

* hugepd directory entries (hugetlb pages on hash 4K up to 6.11; only in user
  page tables): a directory entry with any of the low 6 bits set is refused
  with an error naming the address;
* ``H_PAGE_4K_PFN`` PTEs of 64K kernels (a 4K PFN in a 64K PTE, made only by
  ``remap_4k_pfn`` for user mappings): refused with an error;
* mappings the kernel bolts into the hash page table without a Linux PTE
  (early ``ioremap`` before the slab allocator is up): reported as not mapped;
* kernels without ``__pte_index_size`` (pre-4.7, different PTE format): refused;
Also:

* on a live target the vmemmap block list is read once (memory hotplug after
  that is not followed); page tables are re-read on every access there;
* drgn's own helpers that need its direct-mapping offset (``virt_to_phys``,
  ``virt_to_page``, ``follow_page``) still fail on hash; use ``translate()``.

Order of use: load vmlinux's debug info, call ``add_hash_mmu_segments``, then
load the modules' debug info (drgn finds loaded modules by reading
``struct module``, which lives in vmalloc space).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import drgn
from drgn import FaultError

from . import kernel
from .kernel import LINEAR_MAP_BASE

__all__ = [
    "Geometry",
    "HASH_4K",
    "HASH_64K",
    "RADIX_4K",
    "RADIX_64K",
    "PageTableWalker",
    "HashMmu",
    "mmu_type",
    "add_linear_map_segment",
    "add_hash_mmu_segments",
    "kernel_page_tables",
    "translate",
]

# --- constants (arch/powerpc/include/asm/book3s/64/pgtable.h, page.h) --------

_PA_MASK = 0x0FFFFFFFFFFFFFFF  # __pa(x) = x & 0x0fffffffffffffff

_PAGE_PRESENT = 1 << 63
_PAGE_PTE = 1 << 62
_PAGE_INVALID = 1 << 61  # _RPAGE_SW0
_PAGE_PA_MAX = 53
_MASKED_BITS = 0xC0000000000000FF  # PMD/PUD/P4D_MASKED_BITS
_HUGEPD_SHIFT_MASK = 0x3F
_H_PAGE_4K_PFN_64K = 0x2000  # _RPAGE_RPN1, PTE level of 64K hash only

# Keys in kernel.program_state: what add_hash_mmu_segments registered, and the
# size of the linear-map segment lpdebug added (0: none).
_STATE_KEY = "hash_mmu"
_LINEAR_STATE_KEY = "linear_map_size"

_LEVEL_NAMES = ("PTE", "PMD", "PUD", "PGD")

_BE64 = struct.Struct(">Q")


# --- geometry ----------------------------------------------------------------


@dataclass(frozen=True)
class Geometry:
    """Shape of a Book3S-64 Linux page table.

    ``index_bits`` is (PTE, PMD, PUD, PGD): the runtime values of
    ``__pte_index_size`` ... ``__pgd_index_size``.  ``mmu`` is "hash" or
    "radix"; it decides the leaf sizes above the PTE level and whether hugepd
    entries can occur.
    """

    page_shift: int
    index_bits: Tuple[int, int, int, int]
    mmu: str = "hash"

    def __post_init__(self) -> None:
        if self.page_shift not in (12, 16):
            raise ValueError("unsupported page shift %d" % self.page_shift)
        if len(self.index_bits) != 4 or not all(0 < b <= 16 for b in self.index_bits):
            raise ValueError("implausible page-table index sizes %r" % (self.index_bits,))
        if self.mmu not in ("hash", "radix"):
            raise ValueError("mmu must be 'hash' or 'radix', not %r" % self.mmu)
        if self.page_shift + sum(self.index_bits) > 60:
            raise ValueError("page-table index sizes %r span more than 60 bits"
                             % (self.index_bits,))

    @property
    def page_size(self) -> int:
        return 1 << self.page_shift

    def shift(self, level: int) -> int:
        """Address bit where the index into a table of ``level`` starts
        (0 = PTE table, 3 = PGD)."""
        return self.page_shift + sum(self.index_bits[:level])

    @property
    def eaddr_bits(self) -> int:
        """Bits of effective address the tables map (H_PGTABLE_EADDR_SIZE)."""
        return self.shift(3) + self.index_bits[3]

    def table_size(self, level: int) -> int:
        return 8 << self.index_bits[level]

    def leaf_shift(self, level: int) -> int:
        """log2 of the size a leaf entry at ``level`` maps."""
        if level == 0:
            return self.page_shift
        if self.mmu == "hash" and self.page_shift == 12:
            # pmd_leaf_size()/pud_leaf_size(): SZ_16M / SZ_16G on hash 4K.
            if level == 1:
                return 24
            if level == 2:
                return 34
        return self.shift(level)


# Compile-time values, for tests and as documentation; the walker of a real
# target uses the runtime variables.
HASH_4K = Geometry(12, (9, 7, 9, 9), "hash")
HASH_64K = Geometry(16, (8, 10, 10, 8), "hash")
RADIX_4K = Geometry(12, (9, 9, 9, 13), "radix")
RADIX_64K = Geometry(16, (5, 9, 9, 13), "radix")


# --- the walker: a pure function of read_phys and the geometry --------------


def _fault(message: str, address: int) -> FaultError:
    return FaultError(message, address)


class PageTableWalker:
    """Translate kernel virtual addresses through a Book3S-64 Linux page table.

    ``read_phys(address, size) -> bytes`` reads physical memory and raises
    ``drgn.FaultError`` where it cannot.  ``pgd_phys`` is the physical address
    of the top-level table (``__pa(init_mm.pgd)``).  With ``cache=True`` every
    page-table table read is kept (right for a vmcore; for a live target the
    tables change, so read each entry afresh).
    """

    def __init__(self, read_phys: Callable[[int, int], bytes], pgd_phys: int,
                 geometry: Geometry, cache: bool = True) -> None:
        self.read_phys = read_phys
        self.pgd_phys = pgd_phys
        self.geometry = geometry
        self.cache = cache
        self._tables: Dict[Tuple[int, int], bytes] = {}
        # page number -> (physical address of the page, leaf shift); cache only
        self._pages: Dict[int, Tuple[int, int]] = {}
        self._page_shift = geometry.page_shift
        self._page_mask = geometry.page_size - 1
        self._rpn_mask = ((1 << _PAGE_PA_MAX) - 1) & ~(geometry.page_size - 1)
        # per level: (shift, index mask, leaf shift)
        self._levels = [
            (geometry.shift(lvl), (1 << geometry.index_bits[lvl]) - 1,
             geometry.leaf_shift(lvl))
            for lvl in range(4)
        ]
        self.table_reads = 0
        self._who = "%s MMU" % geometry.mmu

    def clear_cache(self) -> None:
        self._tables.clear()
        self._pages.clear()

    def _entry(self, table: int, index: int, level: int, vaddr: int) -> int:
        try:
            if self.cache:
                key = (table, level)
                buf = self._tables.get(key)
                if buf is None:
                    buf = bytes(self.read_phys(table, self.geometry.table_size(level)))
                    self.table_reads += 1
                    self._tables[key] = buf
                return _BE64.unpack_from(buf, 8 * index)[0]
            self.table_reads += 1
            return _BE64.unpack(bytes(self.read_phys(table + 8 * index, 8)))[0]
        except FaultError as e:
            raise _fault(
                "%s: cannot read the %s table at physical 0x%x (%s) to translate kernel "
                "virtual address" % (self._who, _LEVEL_NAMES[level], table, e), vaddr) from None

    def translate(self, vaddr: int) -> Tuple[int, int]:
        """Physical address of ``vaddr`` and log2 of the size of the mapping
        that holds it.  Raises ``drgn.FaultError`` naming ``vaddr`` where the
        page tables do not map it."""
        hit = self._pages.get(vaddr >> self._page_shift)
        if hit is not None:
            return hit[0] | (vaddr & self._page_mask), hit[1]
        phys, leaf_shift = self._walk(vaddr)
        if self.cache:
            self._pages[vaddr >> self._page_shift] = (phys & ~self._page_mask, leaf_shift)
        return phys, leaf_shift

    def _walk(self, vaddr: int) -> Tuple[int, int]:
        geom = self.geometry
        table = self.pgd_phys
        for level in (3, 2, 1, 0):
            shift, mask, leaf_shift = self._levels[level]
            entry = self._entry(table, (vaddr >> shift) & mask, level, vaddr)
            if level == 0 or entry & _PAGE_PTE:
                if not entry & (_PAGE_PRESENT | _PAGE_INVALID):
                    raise _fault("%s: page not mapped in the kernel page tables "
                                 "(empty %s entry) at virtual address"
                                 % (self._who, _LEVEL_NAMES[level]), vaddr)
                if level == 3:
                    raise _fault("%s: unexpected leaf entry 0x%x in the PGD for "
                                 "virtual address" % (self._who, entry), vaddr)
                if (level == 0 and geom.mmu == "hash" and geom.page_shift == 16
                        and entry & _H_PAGE_4K_PFN_64K):
                    raise _fault("hash MMU: PTE 0x%x maps a 4K PFN (H_PAGE_4K_PFN), "
                                 "not supported, at virtual address" % entry, vaddr)
                size_mask = (1 << leaf_shift) - 1
                return (entry & self._rpn_mask & ~size_mask) | (vaddr & size_mask), leaf_shift
            if not entry & _PAGE_PRESENT:
                raise _fault("%s: page not mapped in the kernel page tables "
                             "(empty %s entry) at virtual address"
                             % (self._who, _LEVEL_NAMES[level]), vaddr)
            if geom.mmu == "hash" and entry & _HUGEPD_SHIFT_MASK:
                raise _fault("hash MMU: %s entry 0x%x is a hugepd directory, not "
                             "supported, at virtual address" % (_LEVEL_NAMES[level], entry),
                             vaddr)
            table = entry & ~_MASKED_BITS
        raise AssertionError("unreachable")

    def read(self, vaddr: int, size: int) -> bytes:
        """Read ``size`` bytes at kernel virtual address ``vaddr``, page by
        page, merging physically contiguous runs into one physical read."""
        phys, lshift = self.translate(vaddr)
        if (vaddr & ((1 << lshift) - 1)) + size <= (1 << lshift):  # one mapping
            return self._read_run(vaddr, phys, size)
        out = bytearray()
        end = vaddr + size
        addr = vaddr
        run_v = run_p = run_n = 0
        while addr < end:
            phys, lshift = self.translate(addr)
            n = min(end, (addr | ((1 << lshift) - 1)) + 1) - addr
            if run_n and run_p + run_n == phys:
                run_n += n
            else:
                if run_n:
                    out += self._read_run(run_v, run_p, run_n)
                run_v, run_p, run_n = addr, phys, n
            addr += n
        if run_n:
            out += self._read_run(run_v, run_p, run_n)
        return bytes(out)

    def _read_run(self, vaddr: int, phys: int, size: int) -> bytes:
        try:
            return self.read_phys(phys, size)
        except FaultError as e:
            bad = e.address
            where = vaddr + (bad - phys) if phys <= bad < phys + size else vaddr
            raise _fault("%s: physical memory 0x%x behind kernel virtual address "
                         "cannot be read" % (self._who, phys + (where - vaddr)),
                         where) from None


# --- reading the target ------------------------------------------------------


def _read_ulong(prog: drgn.Program, name: str) -> Optional[int]:
    """Value of the unsigned long (or pointer) kernel variable ``name``;
    None when the kernel has no such symbol."""
    address = kernel.symbol_address(prog, name)
    if address is None:
        return None
    return prog.read_u64(address)


def _linear_readable(prog: drgn.Program) -> bool:
    """Can drgn read vmlinux data (linear map) without our help?"""
    for name in ("swapper_pg_dir", "init_mm", "cur_cpu_spec", "init_task"):
        address = kernel.symbol_address(prog, name)
        if address is None:
            continue
        try:
            prog.read(address, 8)
            return True
        except Exception:
            # FaultError, or drgn's own translation refusing: NotImplementedError
            # (hash), LookupError (no cur_cpu_spec to tell the MMU), ...
            return False
    return False


def add_linear_map_segment(prog: drgn.Program, size: Optional[int] = None) -> None:
    """Serve ``[LINEAR_MAP_BASE, LINEAR_MAP_BASE + size)`` as LINEAR_MAP_BASE + physical.

    ``size`` defaults to :data:`lpdebug.kernel.LINEAR_MAP_MIN_SIZE` (the
    smallest linear-map region of any Book3S-64 layout: it covers the kernel
    image, so the runtime variables can be read; the exact region end comes
    from ``__kernel_virt_start`` afterwards).  The same on radix and hash:
    their linear maps are both this fixed offset.
    """
    if size is None:
        size = kernel.LINEAR_MAP_MIN_SIZE

    def read_linear(address: int, count: int, offset: int, physical: bool) -> bytes:
        phys = address - LINEAR_MAP_BASE
        try:
            return prog.read(phys, count, True)
        except FaultError as e:
            bad = e.address
            where = address + (bad - phys) if phys <= bad < phys + count else address
            raise FaultError("no physical memory 0x%x behind linear-map address"
                             % (where - LINEAR_MAP_BASE), where) from None

    prog.add_memory_segment(LINEAR_MAP_BASE, size, read_linear)
    state = kernel.program_state(prog)
    state[_LINEAR_STATE_KEY] = max(size, state.get(_LINEAR_STATE_KEY, 0))


def _ensure_linear(prog: drgn.Program) -> bool:
    """Make vmlinux data readable; True if we had to add a segment."""
    if kernel.program_state(prog).get(_LINEAR_STATE_KEY):
        return True
    if _linear_readable(prog):
        return False
    add_linear_map_segment(prog)
    return True


def mmu_type(prog: drgn.Program) -> Optional[str]:
    """:func:`lpdebug.kernel.mmu`, first making vmlinux data readable.

    Reading ``cur_cpu_spec`` on a hash kernel may need the linear-map
    segment; this adds it when drgn cannot read vmlinux data by itself.
    """
    result = kernel.mmu(prog)
    if (result is None and kernel.is_ppc64(prog)
            and kernel.symbol_address(prog, "interrupt_base_book3e") is None
            and _ensure_linear(prog)):
        result = kernel.mmu(prog)
    return result


def _page_shift(prog: drgn.Program) -> int:
    try:
        return prog["PAGE_SHIFT"].value_()
    except (LookupError, FaultError, NotImplementedError):
        pass
    size = kernel.vmcoreinfo(prog).get("PAGESIZE")
    if size is None:
        raise LookupError("cannot tell the kernel's page size (no PAGE_SHIFT, no "
                          "PAGESIZE in vmcoreinfo)")
    return int(size).bit_length() - 1


def _pgd_address(prog: drgn.Program) -> int:
    """Virtual address of the kernel's top-level table (init_mm.pgd)."""
    try:
        return prog["init_mm"].pgd.value_()
    except (LookupError, AttributeError, FaultError):
        pass
    address = kernel.symbol_address(prog, "swapper_pg_dir")  # init_mm.pgd = swapper_pg_dir
    if address is None:
        raise LookupError("neither init_mm nor swapper_pg_dir is known")
    return address


def _is_live(prog: drgn.Program) -> bool:
    return bool(prog.flags & drgn.ProgramFlags.IS_LIVE)


def kernel_page_tables(prog: drgn.Program, mmu: Optional[str] = None,
                       cache: Optional[bool] = None) -> PageTableWalker:
    """A walker over the target's ``init_mm`` page tables, geometry from the
    runtime variables.  Works for radix too (same entry format), which lets
    the walker be checked against drgn's own radix translation."""
    if mmu is None:
        mmu = mmu_type(prog)
    if mmu not in ("hash", "radix"):
        raise ValueError("not a Book3S-64 kernel with a known MMU type")
    _ensure_linear(prog)
    bits = []
    for name in ("__pte_index_size", "__pmd_index_size", "__pud_index_size",
                 "__pgd_index_size"):
        value = _read_ulong(prog, name)
        if value is None:
            raise LookupError(
                "kernel has no %s: a Book3S-64 kernel older than the radix/hash "
                "page-table split (Linux 4.7), whose hash PTE format is not supported"
                % name)
        bits.append(value)
    geometry = Geometry(_page_shift(prog), (bits[0], bits[1], bits[2], bits[3]), mmu)
    pgd = _pgd_address(prog)
    if cache is None:
        cache = not _is_live(prog)

    def read_phys(address: int, size: int) -> bytes:
        return prog.read(address, size, True)

    return PageTableWalker(read_phys, pgd & _PA_MASK, geometry, cache=cache)


# --- vmemmap (hash: vmemmap_list) ---------------------------------------------


class _VmemmapMap:
    """vmemmap translation from the kernel's ``vmemmap_list``
    (``struct vmemmap_backing {list, phys, virt_addr}``), built on first use."""

    def __init__(self, prog: drgn.Program, head_address: int) -> None:
        self.prog = prog
        self.head_address = head_address
        self._blocks: Optional[Dict[int, int]] = None
        self.block_shift = 0

    def _load(self) -> Dict[int, int]:
        if self._blocks is not None:
            return self._blocks
        prog = self.prog
        try:
            vb = prog.type("struct vmemmap_backing")
            off_list = drgn.offsetof(vb, "list")
            off_phys = drgn.offsetof(vb, "phys")
            off_virt = drgn.offsetof(vb, "virt_addr")
            defs = prog["mmu_psize_defs"]
            shift = defs[prog["mmu_vmemmap_psize"].value_()].shift.value_()
        except (LookupError, FaultError):
            info = kernel.vmcoreinfo(prog)
            try:
                off_list = int(info["OFFSET(vmemmap_backing.list)"])
                off_phys = int(info["OFFSET(vmemmap_backing.phys)"])
                off_virt = int(info["OFFSET(vmemmap_backing.virt_addr)"])
                defs_addr = int(info["SYMBOL(mmu_psize_defs)"], 16)
                psize = prog.read_u32(int(info["SYMBOL(mmu_vmemmap_psize)"], 16))
                def_size = int(info["SIZE(mmu_psize_def)"])
                shift = prog.read_u32(defs_addr + psize * def_size
                                      + int(info["OFFSET(mmu_psize_def.shift)"]))
            except (KeyError, ValueError) as e:
                raise FaultError("hash MMU: cannot read vmemmap_list (%s) for vmemmap "
                                 "address" % e, self.head_address) from None
        self.block_shift = shift
        blocks: Dict[int, int] = {}
        node = prog.read_u64(self.head_address)
        seen = 0
        while node:
            seen += 1
            if seen > (1 << 24):
                raise FaultError("hash MMU: vmemmap_list does not end", node)
            blocks[prog.read_u64(node + off_virt)] = prog.read_u64(node + off_phys)
            node = prog.read_u64(node + off_list)
        self._blocks = blocks
        return blocks

    def read(self, vaddr: int, size: int) -> bytes:
        blocks = self._load()
        bsize = 1 << self.block_shift
        out = bytearray()
        addr, end = vaddr, vaddr + size
        while addr < end:
            base = addr & ~(bsize - 1)
            phys = blocks.get(base)
            if phys is None:
                raise FaultError("hash MMU: vmemmap address not backed (not in "
                                 "vmemmap_list)", addr)
            n = min(end, base + bsize) - addr
            try:
                out += self.prog.read(phys + (addr - base), n, True)
            except FaultError:
                raise FaultError("hash MMU: physical memory 0x%x behind vmemmap address "
                                 "cannot be read" % (phys + addr - base), addr) from None
            addr += n
        return bytes(out)


# --- the segments ------------------------------------------------------------


@dataclass
class HashMmu:
    """What ``add_hash_mmu_segments`` registered (kept in ``kernel.program_state``)."""

    walker: PageTableWalker
    linear: Optional[Tuple[int, int]]  # (start, end) or None if drgn reads it natively
    vmalloc: Tuple[int, int]  # page-table region: vmalloc + I/O remap
    vmemmap: Optional[Tuple[int, int]]
    notes: List[str] = field(default_factory=list)

    def translate(self, vaddr: int) -> int:
        if self.vmalloc[0] <= vaddr < self.vmalloc[1]:
            return self.walker.translate(vaddr)[0]
        if self.linear and self.linear[0] <= vaddr < self.linear[1]:
            return vaddr - LINEAR_MAP_BASE
        raise FaultError("hash MMU: no translation for address outside the "
                         "page-table region", vaddr)


def add_hash_mmu_segments(prog: drgn.Program) -> Optional[HashMmu]:
    """On a hash-MMU ppc64 kernel, add memory segments so drgn reads the
    linear map, vmalloc/module/ioremap memory and vmemmap.

    Idempotent (the result is kept in :func:`lpdebug.kernel.program_state`).  Returns None and adds
    nothing on radix or on a program that is not a ppc64 Book3S-64 kernel
    (apart from the linear-map segment that ``mmu_type`` adds when drgn could
    not read vmlinux data at all; it returns the same bytes drgn would).

    Call it once vmlinux's symbols are loaded and before module debug info is
    loaded: drgn finds the loaded modules by reading ``struct module``, which
    on ppc64 lives in vmalloc space.
    """
    state = kernel.program_state(prog)
    if _STATE_KEY in state:
        return state[_STATE_KEY]
    if not kernel.is_ppc64(prog):
        return None
    mmu = mmu_type(prog)
    if mmu != "hash":
        if mmu is not None:
            state[_STATE_KEY] = None
        return None

    notes: List[str] = []
    added_linear = _ensure_linear(prog)
    virt_start = _read_ulong(prog, "__kernel_virt_start")
    if virt_start is None:
        virt_start = _read_ulong(prog, "__vmalloc_start")
    io_start = _read_ulong(prog, "__kernel_io_start")
    io_end = _read_ulong(prog, "__kernel_io_end")
    if io_end is None:
        io_end = _read_ulong(prog, "__vmalloc_end")
        notes.append("no __kernel_io_end: page-table segment ends at __vmalloc_end")
    if virt_start is None or io_end is None:
        raise LookupError("hash MMU: no symbol __kernel_virt_start/__vmalloc_start or "
                          "__kernel_io_end/__vmalloc_end (are vmlinux's symbols loaded?)")
    if not LINEAR_MAP_BASE < virt_start < io_end:
        raise ValueError("implausible kernel virtual layout: virt start 0x%x, io end 0x%x"
                         % (virt_start, io_end))

    walker = kernel_page_tables(prog, "hash")
    geometry = walker.geometry
    if (io_end - 1 - LINEAR_MAP_BASE) >> geometry.eaddr_bits:
        raise ValueError("page-table region up to 0x%x is larger than the %d bits the "
                         "page tables map" % (io_end, geometry.eaddr_bits))

    linear = None
    if added_linear:
        # The bootstrap segment covered the smallest layout; cover the exact
        # linear region [LINEAR_MAP_BASE, __kernel_virt_start).
        if virt_start - LINEAR_MAP_BASE > state.get(_LINEAR_STATE_KEY, 0):
            add_linear_map_segment(prog, virt_start - LINEAR_MAP_BASE)
        linear = (LINEAR_MAP_BASE, virt_start)
    else:
        notes.append("linear map already readable (core dump segments or an earlier segment)")

    def read_vmalloc(address: int, count: int, offset: int, physical: bool) -> bytes:
        return walker.read(address, count)

    prog.add_memory_segment(virt_start, io_end - virt_start, read_vmalloc)

    vmemmap_range = None
    vmemmap_start = _read_ulong(prog, "vmemmap")
    head = kernel.symbol_address(prog, "vmemmap_list")
    if vmemmap_start and head is not None and io_start is not None and io_end > io_start:
        vmap = _VmemmapMap(prog, head)
        vmemmap_size = io_end - io_start  # H_VMEMMAP_SIZE = H_KERN_IO_SIZE

        def read_vmemmap(address: int, count: int, offset: int, physical: bool) -> bytes:
            return vmap.read(address, count)

        prog.add_memory_segment(vmemmap_start, vmemmap_size, read_vmemmap)
        vmemmap_range = (vmemmap_start, vmemmap_start + vmemmap_size)
    else:
        notes.append("vmemmap not served (no vmemmap_list or region bounds)")

    result = HashMmu(walker, linear, (virt_start, io_end), vmemmap_range, notes)
    state[_STATE_KEY] = result
    return result


_RADIX_STATE_KEY = "radix_page_table_segment"


def add_page_table_segments(prog: drgn.Program) -> Optional[Tuple[int, int]]:
    """On a radix-MMU ppc64 kernel, serve every kernel address above the
    linear map (vmalloc, modules, I/O remap, vmemmap: ``[__kernel_virt_start,
    end of what the page tables map)``) with a walk of ``init_mm``'s page
    tables, read physically; return that range.

    For a kdump-compressed file read by a drgn older than 0.2.0, which
    translates these addresses only through libkdumpfile, and that fails on
    ppc64 (:mod:`lpdebug.drgn_compat`); drgn 0.2.0 does the same walk itself.
    The entry format is the one the hash walk reads (the module docstring).
    Idempotent; None and nothing added on a hash-MMU kernel (see
    :func:`add_hash_mmu_segments`) or a program that is not ppc64 Book3S-64.
    """
    state = kernel.program_state(prog)
    if _RADIX_STATE_KEY in state:
        return state[_RADIX_STATE_KEY]  # type: ignore[no-any-return]
    if not kernel.is_ppc64(prog) or mmu_type(prog) != "radix":
        return None
    virt_start = _read_ulong(prog, "__kernel_virt_start")
    if virt_start is None:
        raise LookupError("radix MMU: no symbol __kernel_virt_start (are vmlinux's symbols loaded?)")
    walker = kernel_page_tables(prog, "radix")
    end = LINEAR_MAP_BASE + (1 << walker.geometry.eaddr_bits)
    if not LINEAR_MAP_BASE < virt_start < end:
        raise ValueError("implausible kernel virtual layout: virt start 0x%x, page tables end 0x%x"
                         % (virt_start, end))

    def read_mapped(address: int, count: int, offset: int, physical: bool) -> bytes:
        return walker.read(address, count)

    prog.add_memory_segment(virt_start, end - virt_start, read_mapped)
    state[_RADIX_STATE_KEY] = (virt_start, end)
    return (virt_start, end)


def translate(prog: drgn.Program, vaddr: int) -> int:
    """Physical address of kernel virtual address ``vaddr``: the linear-map
    offset below ``__kernel_virt_start``, else a walk of the target's own
    ``init_mm`` page tables (hash or radix geometry from the runtime
    variables).  Raises ``drgn.FaultError`` naming ``vaddr`` if unmapped."""
    if vaddr < LINEAR_MAP_BASE:
        raise FaultError("not a kernel address", vaddr)

    def build() -> Tuple[PageTableWalker, int]:
        hm = kernel.program_state(prog).get(_STATE_KEY)
        walker = hm.walker if hm is not None else kernel_page_tables(prog)
        start = _read_ulong(prog, "__kernel_virt_start")
        if start is None:
            raise LookupError("kernel has no __kernel_virt_start")
        return walker, start

    walker, start = kernel.cached_fact(prog, ("lpdebug.hash_mmu", "translate"), build)
    if vaddr < start:
        return vaddr - LINEAR_MAP_BASE
    return walker.translate(vaddr)[0]
