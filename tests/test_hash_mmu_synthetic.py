# SPDX-License-Identifier: GPL-2.0-or-later
"""Synthetic tests of lpdebug.hash_mmu: Book3S-64 Linux page tables built in
fake physical memory for the hash 4K and 64K geometries (and radix, which
shares the entry format), walked by the pure walker and through a mock drgn
kernel program."""

import struct

import pytest
from drgn import (Architecture, FaultError, Platform, PlatformFlags, Program, Symbol,
                  SymbolBinding, SymbolKind)

from lpdebug import hash_mmu, kernel
from lpdebug.hash_mmu import HASH_4K, HASH_64K, RADIX_4K, RADIX_64K, PageTableWalker
from lpdebug.kernel import LINEAR_MAP_BASE as PAGE_OFFSET

pytestmark = pytest.mark.synthetic

PRESENT = 1 << 63
PTE = 1 << 62
INVALID = 1 << 61
# kernel RW leaf: _PAGE_PRESENT | _PAGE_PTE | PRIVILEGED | RW | DIRTY | ACCESSED
LEAF = PRESENT | PTE | 0x8 | 0x6 | 0x80 | 0x100
H_PAGE_HASHPTE_64K = 0x0080000000000000  # _RPAGE_RPN43
H_PAGE_COMBO_64K = 0x1000
H_PAGE_4K_PFN_64K = 0x2000
H_PAGE_F_GIX_4K = 0x00E0000000000000  # RPN43|42|41
H_PAGE_F_SECOND_4K = 0x0200000000000000
H_PAGE_BUSY = 0x40


class FakePhys:
    """Sparse physical memory, 4K frames, zero-filled on first write."""

    def __init__(self, limit=1 << 40):
        self.frames = {}
        self.limit = limit
        self.reads = 0

    def write(self, addr, data):
        while data:
            frame, off = addr >> 12, addr & 0xFFF
            n = min(len(data), 0x1000 - off)
            buf = self.frames.setdefault(frame, bytearray(0x1000))
            buf[off:off + n] = data[:n]
            addr += n
            data = data[n:]

    def write_be64(self, addr, value):
        self.write(addr, struct.pack(">Q", value))

    def read(self, addr, size):
        self.reads += 1
        out = bytearray()
        while size:
            frame, off = addr >> 12, addr & 0xFFF
            n = min(size, 0x1000 - off)
            if frame not in self.frames:
                raise FaultError("no such physical memory", addr)
            out += self.frames[frame][off:off + n]
            addr += n
            size -= n
        return bytes(out)


class PageTableBuilder:
    """Builds Linux page tables the way the kernel does on Book3S-64:
    directory entry = __pa(table) | 0x8000000000000000 (hash; radix adds the
    next level's index size in the low bits), big-endian entries."""

    def __init__(self, mem, geometry, table_base=0x100000):
        self.mem = mem
        self.g = geometry
        self.next_table = table_base
        self.pgd = self._alloc(3)

    def _alloc(self, level):
        size = self.g.table_size(level)
        align = max(size, 256)
        addr = (self.next_table + align - 1) & ~(align - 1)
        self.next_table = addr + size
        self.mem.write(addr, bytes(size))
        return addr

    def _index(self, vaddr, level):
        return (vaddr >> self.g.shift(level)) & ((1 << self.g.index_bits[level]) - 1)

    def _dir_val(self, table, child_level):
        val = table | PRESENT
        if self.g.mmu == "radix":
            val |= self.g.index_bits[child_level]  # RADIX_*_VAL_BITS: NLS
        return val

    def entry_addr(self, vaddr, level):
        """Address of the entry for vaddr at level, allocating directories."""
        table = self.pgd
        for lvl in range(3, level, -1):
            ea = table + 8 * self._index(vaddr, lvl)
            entry = struct.unpack(">Q", self.mem.read(ea, 8))[0]
            if not entry:
                child = self._alloc(lvl - 1)
                self.mem.write_be64(ea, self._dir_val(child, lvl - 1))
                entry = self._dir_val(child, lvl - 1)
            assert not entry & PTE, "leaf in the way"
            table = entry & ~0xC0000000000000FF
        return table + 8 * self._index(vaddr, level)

    def set_entry(self, vaddr, level, value):
        self.mem.write_be64(self.entry_addr(vaddr, level), value)

    def map_page(self, vaddr, phys, extra=0):
        self.set_entry(vaddr, 0, LEAF | phys | extra)

    def map_leaf(self, vaddr, phys, level, leaf_size, increment=False):
        """A leaf at PMD/PUD level; a leaf larger than the level's span is
        written into every covered entry (same value, as set_huge_pte_at does
        for hash 4K 16M/16G pages, or incremented when increment=True)."""
        span = 1 << self.g.shift(level)
        for i in range(max(1, leaf_size // span)):
            rpn = phys + (i * span if increment else 0)
            self.set_entry(vaddr + i * span, level, LEAF | rpn)


def fill(mem, phys, size, seed):
    data = bytes((seed + i * 7) & 0xFF for i in range(size))
    mem.write(phys, data)
    return data


def vstart(geom):
    """Start of the vmalloc region in the layout of geom."""
    if geom.mmu == "radix" or geom.page_shift == 16:
        return 0xC008000000000000
    return 0xC0003D0000000000


GEOMETRIES = [pytest.param(HASH_4K, id="hash4k"), pytest.param(HASH_64K, id="hash64k")]


@pytest.mark.parametrize("geom", GEOMETRIES)
@pytest.mark.parametrize("cache", [True, False])
def test_synthetic_pte_pages(geom, cache):
    mem = FakePhys()
    b = PageTableBuilder(mem, geom)
    ps = geom.page_size
    base = vstart(geom) + 0x1234 * ps
    # three virtually contiguous pages: two physically contiguous, one not
    phys = [0x4000000, 0x4000000 + ps, 0x9000000]
    data = b""
    for i, p in enumerate(phys):
        b.map_page(base + i * ps, p)
        data += fill(mem, p, ps, i)
    w = PageTableWalker(mem.read, b.pgd, geom, cache=cache)
    assert w.translate(base + 5) == (phys[0] + 5, geom.page_shift)
    assert w.translate(base + ps + ps - 1) == (phys[1] + ps - 1, geom.page_shift)
    assert w.translate(base + 2 * ps)[0] == phys[2]
    assert w.read(base + 3, 3 * ps - 3) == data[3:]
    # 3 pages, 2 contiguous runs -> 2 physical data reads
    reads = mem.reads
    w.read(base, 3 * ps)
    if cache:
        assert mem.reads - reads == 2


@pytest.mark.parametrize("geom", GEOMETRIES)
def test_synthetic_hash_bits_ignored(geom):
    """Hash-only bits in a PTE (HPTE slot, busy, combo) are not part of the RPN."""
    mem = FakePhys()
    b = PageTableBuilder(mem, geom)
    va = vstart(geom) + 0x10 * geom.page_size
    if geom.page_shift == 16:
        extra = H_PAGE_HASHPTE_64K | H_PAGE_COMBO_64K | H_PAGE_BUSY
    else:
        extra = H_PAGE_F_GIX_4K | H_PAGE_F_SECOND_4K | H_PAGE_BUSY | (1 << 56)
    b.map_page(va, 0x7770000, extra)
    w = PageTableWalker(mem.read, b.pgd, geom)
    assert w.translate(va + 0x123)[0] == 0x7770123


@pytest.mark.parametrize("geom", GEOMETRIES)
def test_synthetic_invalid_leaf_still_present(geom):
    """_PAGE_INVALID without _PAGE_PRESENT is a present leaf mid-update
    (pte_present() counts it)."""
    mem = FakePhys()
    b = PageTableBuilder(mem, geom)
    va = vstart(geom) + 0x20 * geom.page_size
    b.set_entry(va, 0, (LEAF & ~PRESENT) | INVALID | 0x5550000)
    w = PageTableWalker(mem.read, b.pgd, geom)
    assert w.translate(va)[0] == 0x5550000


def test_synthetic_leaf_pmd_64k():
    """64K hash: a PMD leaf maps 16M (PMD_SIZE), a PUD leaf 16G."""
    geom = HASH_64K
    mem = FakePhys()
    b = PageTableBuilder(mem, geom)
    assert geom.leaf_shift(1) == 24 and geom.shift(1) == 24
    assert geom.leaf_shift(2) == 34
    va = vstart(geom) + 5 * (1 << 24)
    b.map_leaf(va, 0x40000000, 1, 1 << 24)
    fill(mem, 0x40000000 + 0xABC000, 0x100, 3)
    w = PageTableWalker(mem.read, b.pgd, geom)
    assert w.translate(va + 0xABC010) == (0x40000000 + 0xABC010, 24)
    assert w.read(va + 0xABC000, 0x100) == mem.read(0x40000000 + 0xABC000, 0x100)
    va2 = vstart(geom) + 3 * (1 << 34)
    b.map_leaf(va2, 0x400000000, 2, 1 << 34)
    w.clear_cache()  # the tables changed under the cached walker
    assert w.translate(va2 + 0x123456789) == (0x400000000 + 0x123456789, 34)


@pytest.mark.parametrize("increment", [False, True])
def test_synthetic_leaf_pmd_pud_4k(increment):
    """4K hash: PMD spans 2M but a PMD leaf is 16M (pmd_leaf_size), held by 8
    contiguous entries; a PUD spans 256M, a PUD leaf 16G (64 entries)."""
    geom = HASH_4K
    mem = FakePhys()
    b = PageTableBuilder(mem, geom)
    assert geom.shift(1) == 21 and geom.leaf_shift(1) == 24
    assert geom.shift(2) == 28 and geom.leaf_shift(2) == 34
    va = vstart(geom) + 7 * (1 << 24)
    b.map_leaf(va, 0x20000000, 1, 1 << 24, increment)
    w = PageTableWalker(mem.read, b.pgd, geom)
    # an address in the 6th 2M chunk of the 16M page
    off = 5 * (1 << 21) + 0x1234
    assert w.translate(va + off) == (0x20000000 + off, 24)
    va2 = vstart(geom) + 2 * (1 << 34)
    b.map_leaf(va2, 0x800000000, 2, 1 << 34, increment)
    w.clear_cache()
    off2 = 37 * (1 << 28) + 0x55555
    assert w.translate(va2 + off2) == (0x800000000 + off2, 34)


@pytest.mark.parametrize("geom", GEOMETRIES + [pytest.param(RADIX_4K, id="radix4k"),
                                               pytest.param(RADIX_64K, id="radix64k")])
def test_synthetic_unmapped_names_address(geom):
    mem = FakePhys()
    b = PageTableBuilder(mem, geom)
    ps = geom.page_size
    base = vstart(geom) + 0x40 * ps
    b.map_page(base, 0x3000000)
    fill(mem, 0x3000000, ps, 1)
    w = PageTableWalker(mem.read, b.pgd, geom)
    # empty PTE in an existing PTE table
    with pytest.raises(FaultError) as e:
        w.translate(base + ps)
    assert e.value.address == base + ps and "not mapped" in str(e.value)
    assert "%x" % (base + ps) in str(e.value)
    # empty PGD/PUD/PMD entries
    for far in (base + (1 << geom.shift(3)), base + (1 << geom.shift(2)),
                base + (1 << geom.shift(1))):
        with pytest.raises(FaultError) as e:
            w.translate(far + 8)
        assert e.value.address == far + 8
    # a read running off the mapped page fails naming the first unmapped byte
    with pytest.raises(FaultError) as e:
        w.read(base + ps - 4, 8)
    assert e.value.address == base + ps
    # a cleared leaf (neither present nor invalid) is unmapped
    b.set_entry(base + 2 * ps, 0, PTE | 0x3000000)
    w.clear_cache()
    with pytest.raises(FaultError):
        w.translate(base + 2 * ps)


@pytest.mark.parametrize("geom", GEOMETRIES)
def test_synthetic_physical_fault_names_virtual(geom):
    mem = FakePhys()
    b = PageTableBuilder(mem, geom)
    va = vstart(geom) + 0x80 * geom.page_size
    b.map_page(va, 0x6000000)  # never written: not in the "dump"
    w = PageTableWalker(mem.read, b.pgd, geom)
    with pytest.raises(FaultError) as e:
        w.read(va + 16, 8)
    assert e.value.address == va + 16
    # a page-table table that is missing from memory
    b.set_entry(va + (1 << geom.shift(2)), 2, PRESENT | 0x7F000000)
    w.clear_cache()
    with pytest.raises(FaultError) as e:
        w.translate(va + (1 << geom.shift(2)))
    assert e.value.address == va + (1 << geom.shift(2))
    assert "PMD table" in str(e.value)


def test_synthetic_hugepd_and_4k_pfn_refused():
    mem = FakePhys()
    b = PageTableBuilder(mem, HASH_4K)
    va = vstart(HASH_4K) + (1 << 30)
    # hugepd at PMD level: present, not a leaf, shift in the low bits
    b.set_entry(va, 1, PRESENT | 0x7000000 | 24)
    w = PageTableWalker(mem.read, b.pgd, HASH_4K)
    with pytest.raises(FaultError, match="hugepd") as e:
        w.translate(va)
    assert e.value.address == va

    mem = FakePhys()
    b = PageTableBuilder(mem, HASH_64K)
    va = vstart(HASH_64K) + 0x10000
    b.map_page(va, 0x7770000, H_PAGE_4K_PFN_64K)
    w = PageTableWalker(mem.read, b.pgd, HASH_64K)
    with pytest.raises(FaultError, match="4K PFN"):
        w.translate(va)


def test_synthetic_radix_directory_bits_are_not_hugepd():
    """Radix directory entries carry the next level size (NLS) in the low bits;
    the same walker follows them."""
    for geom in (RADIX_4K, RADIX_64K):
        mem = FakePhys()
        b = PageTableBuilder(mem, geom)
        va = 0xC008000000000000 + 0x77 * geom.page_size
        b.map_page(va, 0x1230000)
        w = PageTableWalker(mem.read, b.pgd, geom)
        assert w.translate(va + 9)[0] == 0x1230009
        # radix 2M PMD leaf
        va2 = 0xC008000000000000 + (1 << 30)
        b.map_leaf(va2, 0x40000000, 1, 1 << 21)
        w.clear_cache()
        assert w.translate(va2 + 0x1FFFFF) == (0x40000000 + 0x1FFFFF, 21)


def test_synthetic_geometry_values():
    """The compile-time constants of 6.1/6.12 (hash-4k.h, hash-64k.h)."""
    assert HASH_4K.eaddr_bits == 46 and HASH_64K.eaddr_bits == 52
    assert [HASH_4K.table_size(i) for i in range(4)] == [4096, 1024, 4096, 4096]
    assert [HASH_64K.table_size(i) for i in range(4)] == [2048, 8192, 8192, 2048]
    with pytest.raises(ValueError):
        hash_mmu.Geometry(14, (9, 7, 9, 9))


# --- a mock drgn kernel program -----------------------------------------------

KERNEL_VARS = {
    # name: physical address in the fake kernel image (virtual = PAGE_OFFSET + it)
    "__pte_index_size": 0x10000,
    "__pmd_index_size": 0x10008,
    "__pud_index_size": 0x10010,
    "__pgd_index_size": 0x10018,
    "__kernel_virt_start": 0x10020,
    "__kernel_io_start": 0x10028,
    "__kernel_io_end": 0x10030,
    "__vmalloc_start": 0x10038,
    "__vmalloc_end": 0x10040,
    "vmemmap": 0x10048,
    "cur_cpu_spec": 0x10050,
    "the_cpu_spec": 0x10100,
    "init_task": 0x10200,
    "vmemmap_list": 0x10300,
    "mmu_vmemmap_psize": 0x10308,
    "mmu_psize_defs": 0x10400,
}
SWAPPER_PG_DIR = 0x20000
MMU_FEATURES_OFFSET = 0x14


VMEMMAP_BLOCKS = [(0, 0x30000000), (1 << 24, 0x31000000)]  # (offset in vmemmap, phys)


def make_kernel_program(geom, radix_number=True, mmu_features=None, symbols=True,
                        live=False, little_endian=True):
    """A drgn kernel program over fake physical memory (the way a QMP target
    is set up: physical segment + set_linux_kernel_custom) with hash page
    tables of ``geom`` rooted at swapper_pg_dir."""
    mem = FakePhys()
    b = PageTableBuilder(mem, geom, table_base=0x100000)
    # put the PGD where swapper_pg_dir is
    mem.write(SWAPPER_PG_DIR, mem.read(b.pgd, geom.table_size(3)))
    b.pgd = SWAPPER_PG_DIR
    virt = vstart(geom)
    region = (1 << 40) if (geom.page_shift == 12 and geom.mmu == "hash") else (1 << 49)
    values = {
        "__pte_index_size": geom.index_bits[0],
        "__pmd_index_size": geom.index_bits[1],
        "__pud_index_size": geom.index_bits[2],
        "__pgd_index_size": geom.index_bits[3],
        "__kernel_virt_start": virt,
        "__vmalloc_start": virt,
        "__vmalloc_end": virt + region,
        "__kernel_io_start": virt + region,
        "__kernel_io_end": virt + 2 * region,
        "vmemmap": virt + 2 * region,
        "cur_cpu_spec": PAGE_OFFSET + KERNEL_VARS["the_cpu_spec"],
    }
    e = "<" if little_endian else ">"  # the target's byte order (page tables: always BE)
    for name, value in values.items():
        mem.write(KERNEL_VARS[name], struct.pack(e + "Q", value))
    if mmu_features is None:
        mmu_features = 0x40 if geom.mmu == "radix" else 0x0
    mem.write(KERNEL_VARS["the_cpu_spec"] + MMU_FEATURES_OFFSET,
              struct.pack(e + "I", mmu_features))
    mem.write(KERNEL_VARS["init_task"], b"init_task-data\0")
    # vmemmap_list: struct vmemmap_backing {list, phys, virt_addr}, 16M blocks
    # (mmu_psize_defs[mmu_vmemmap_psize = 2].shift = 24, struct size 0x40)
    mem.write(KERNEL_VARS["mmu_vmemmap_psize"], struct.pack(e + "i", 2))
    mem.write(KERNEL_VARS["mmu_psize_defs"] + 2 * 0x40, struct.pack(e + "I", 24))
    node_phys = 0x10500
    mem.write(KERNEL_VARS["vmemmap_list"], struct.pack(e + "Q", PAGE_OFFSET + node_phys))
    for i, (off, phys) in enumerate(VMEMMAP_BLOCKS):
        this = node_phys + 0x18 * i
        nxt = PAGE_OFFSET + this + 0x18 if i + 1 < len(VMEMMAP_BLOCKS) else 0
        mem.write(this, struct.pack(e + "QQQ", nxt, phys, values["vmemmap"] + off))

    flags = PlatformFlags.IS_64_BIT
    if little_endian:
        flags |= PlatformFlags.IS_LITTLE_ENDIAN
    prog = Program(Platform(Architecture.PPC64, flags))
    prog.add_memory_segment(0, 1 << 40, lambda a, c, o, p: mem.read(a, c), True)
    vmcoreinfo = ("OSRELEASE=6.12.0-synthetic\nPAGESIZE=%d\nSYMBOL(swapper_pg_dir)=%x\n"
                  "SYMBOL(cur_cpu_spec)=%x\nOFFSET(cpu_spec.mmu_features)=%d\n"
                  % (geom.page_size, PAGE_OFFSET + SWAPPER_PG_DIR,
                     PAGE_OFFSET + KERNEL_VARS["cur_cpu_spec"], MMU_FEATURES_OFFSET))
    vmcoreinfo += ("SYMBOL(vmemmap_list)=%x\nSYMBOL(mmu_vmemmap_psize)=%x\n"
                   "SYMBOL(mmu_psize_defs)=%x\nSIZE(vmemmap_backing)=24\n"
                   "OFFSET(vmemmap_backing.list)=0\nOFFSET(vmemmap_backing.phys)=8\n"
                   "OFFSET(vmemmap_backing.virt_addr)=16\nSIZE(mmu_psize_def)=64\n"
                   "OFFSET(mmu_psize_def.shift)=0\n"
                   % tuple(PAGE_OFFSET + KERNEL_VARS[n] for n in
                           ("vmemmap_list", "mmu_vmemmap_psize", "mmu_psize_defs")))
    if radix_number:
        vmcoreinfo += "NUMBER(RADIX_MMU)=%d\n" % (geom.mmu == "radix")
    prog.set_linux_kernel_custom(vmcoreinfo, live)

    if symbols:
        syms = [Symbol(n, PAGE_OFFSET + a, 8, SymbolBinding.GLOBAL, SymbolKind.OBJECT)
                for n, a in KERNEL_VARS.items()]
        syms.append(Symbol("swapper_pg_dir", PAGE_OFFSET + SWAPPER_PG_DIR,
                           geom.table_size(3), SymbolBinding.GLOBAL, SymbolKind.OBJECT))

        def finder(prog, name, address, one):
            out = [s for s in syms
                   if (name is None or s.name == name)
                   and (address is None or s.address <= address < s.address + s.size)]
            return out[:1] if one else out

        prog.register_symbol_finder("synthetic", finder, enable_index=0)
    return prog, mem, b


@pytest.mark.needs_drgn("0.1.0", "the synthetic kernel program is made with Program.set_linux_kernel_custom")
@pytest.mark.parametrize("little_endian", [True, False], ids=["le", "be"])
@pytest.mark.parametrize("geom", GEOMETRIES)
def test_synthetic_program_hash_segments(geom, little_endian):
    prog, mem, b = make_kernel_program(geom, little_endian=little_endian)
    ps = geom.page_size
    va = vstart(geom) + 0x123 * ps  # "module data"
    b.map_page(va, 0x8000000)
    b.map_page(va + ps, 0x8000000 + 3 * ps)
    data = fill(mem, 0x8000000, ps, 9) + fill(mem, 0x8000000 + 3 * ps, ps, 11)
    # drgn alone cannot read it (nor, over QMP, even vmlinux data)
    with pytest.raises(NotImplementedError):
        prog.read(va, 8)
    with pytest.raises(NotImplementedError):
        prog.read(PAGE_OFFSET + KERNEL_VARS["init_task"], 8)

    assert hash_mmu.mmu_type(prog) == "hash"
    hm = hash_mmu.add_hash_mmu_segments(prog)
    assert hm is not None and hm.walker.geometry == geom
    assert hash_mmu.add_hash_mmu_segments(prog) is hm  # idempotent
    # The segments are program state, not a cached fact: dropping the facts
    # (as gdb does before every command) must not register them again.
    kernel.invalidate(prog)
    assert hash_mmu.add_hash_mmu_segments(prog) is hm

    assert prog.read(PAGE_OFFSET + KERNEL_VARS["init_task"], 9) == b"init_task"
    assert prog.read(va + 100, 2 * ps - 200) == data[100:-100]
    assert prog.read_u64(va) == struct.unpack("<Q" if little_endian else ">Q", data[:8])[0]
    assert hash_mmu.translate(prog, va + ps + 5) == 0x8000000 + 3 * ps + 5
    with pytest.raises(FaultError) as e:
        prog.read(va + 2 * ps - 8, 16)
    assert e.value.address == va + 2 * ps
    assert "%x" % (va + 2 * ps) in str(e.value)
    # beyond RAM in the linear map: a FaultError naming the virtual address
    with pytest.raises(FaultError) as e:
        prog.read(PAGE_OFFSET + (1 << 41), 8)
    assert e.value.address == PAGE_OFFSET + (1 << 41)
    assert hm.linear == (PAGE_OFFSET, vstart(geom))


@pytest.mark.needs_drgn("0.1.0", "the synthetic kernel program is made with Program.set_linux_kernel_custom")
def test_synthetic_program_mmu_from_cpu_spec():
    """No NUMBER(RADIX_MMU) (kernels before 6.7): cur_cpu_spec->mmu_features,
    which on hash needs the linear-map segment first."""
    prog, mem, b = make_kernel_program(HASH_4K, radix_number=False)
    assert hash_mmu.mmu_type(prog) == "hash"
    prog, mem, b = make_kernel_program(HASH_64K, radix_number=False)
    assert hash_mmu.add_hash_mmu_segments(prog) is not None
    va = vstart(HASH_64K)
    b.map_page(va, 0x2000000)
    fill(mem, 0x2000000, 64, 4)
    assert prog.read(va, 64) == mem.read(0x2000000, 64)


@pytest.mark.needs_drgn("0.1.0", "the synthetic kernel program is made with Program.set_linux_kernel_custom")
def test_synthetic_program_vmcoreinfo_symbols_only():
    """Without vmlinux symbols the root comes from SYMBOL(swapper_pg_dir), the
    MMU from NUMBER(RADIX_MMU); the layout needs vmlinux symbols: a clear error."""
    prog, mem, b = make_kernel_program(HASH_4K, symbols=False)
    assert hash_mmu.mmu_type(prog) == "hash"
    with pytest.raises(LookupError, match="vmlinux's symbols"):
        hash_mmu.add_hash_mmu_segments(prog)


@pytest.mark.needs_drgn("0.1.0", "the synthetic kernel program is made with Program.set_linux_kernel_custom")
@pytest.mark.parametrize("geom", [RADIX_4K, RADIX_64K])
def test_synthetic_program_radix_noop(geom):
    prog, mem, b = make_kernel_program(geom, radix_number=False)
    assert hash_mmu.mmu_type(prog) == "radix"
    assert hash_mmu.add_hash_mmu_segments(prog) is None
    # vmlinux data became readable (the linear-map segment mmu_type added: a
    # QMP target of a kernel without NUMBER(RADIX_MMU) needs it on radix too)
    assert prog.read(PAGE_OFFSET + KERNEL_VARS["init_task"], 9) == b"init_task"
    # the walker reads the radix geometry from the runtime variables
    va = 0xC008000000000000 + 0x42 * geom.page_size
    b.map_page(va, 0x8000000)
    w = hash_mmu.kernel_page_tables(prog)
    assert w.geometry == geom
    assert w.translate(va + 3)[0] == 0x8000003


def test_synthetic_not_ppc64():
    prog = Program(Platform(Architecture.X86_64))
    assert hash_mmu.mmu_type(prog) is None
    assert hash_mmu.add_hash_mmu_segments(prog) is None


@pytest.mark.needs_drgn("0.1.0", "the synthetic kernel program is made with Program.set_linux_kernel_custom")
@pytest.mark.parametrize("geom", GEOMETRIES)
def test_synthetic_program_vmemmap(geom):
    prog, mem, b = make_kernel_program(geom)
    hm = hash_mmu.add_hash_mmu_segments(prog)
    assert hm.vmemmap is not None
    vmemmap = hm.vmemmap[0]
    fill(mem, 0x31000000 + 0x100, 64, 8)
    assert prog.read(vmemmap + (1 << 24) + 0x100, 64) == mem.read(0x31000000 + 0x100, 64)
    with pytest.raises(FaultError) as e:
        prog.read(vmemmap + (2 << 24) + 8, 8)
    assert e.value.address == vmemmap + (2 << 24) + 8


@pytest.mark.needs_drgn("0.1.0", "the synthetic kernel program is made with Program.set_linux_kernel_custom")
@pytest.mark.parametrize("live", [False, True])
def test_synthetic_program_live_no_stale_tables(live):
    """A live target's page tables change: the walker must not cache them."""
    geom = HASH_4K
    prog, mem, b = make_kernel_program(geom, live=live)
    hm = hash_mmu.add_hash_mmu_segments(prog)
    assert hm.walker.cache is (not live)
    va = vstart(geom) + 0x1000
    b.map_page(va, 0x8000000)
    fill(mem, 0x8000000, 16, 1)
    assert prog.read(va, 16) == mem.read(0x8000000, 16)
    b.map_page(va + 0x1000, 0x9000000)  # a new mapping in the same PTE table
    fill(mem, 0x9000000, 16, 2)
    if live:
        assert prog.read(va + 0x1000, 16) == mem.read(0x9000000, 16)
    else:
        with pytest.raises(FaultError):  # a vmcore does not change
            prog.read(va + 0x1000, 16)
