"""
Damage a kernel core dump and its debug files the way a bad disk, a broken
copy or a hostile user would, deterministically from a random generator.

A :class:`Core` is an ELF64 core read into memory: its header, program
headers, notes (VMCOREINFO, NT_PRSTATUS) and PT_LOAD data. Each mutator takes
a ``random.Random`` and the inputs of one run (:class:`Inputs`), changes a
copy, and returns one line saying what it did (to reproduce and to read).
"""

from __future__ import annotations

import os
import random
import shutil
import struct
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

PT_LOAD = 1
PT_NOTE = 4
NT_PRSTATUS = 1
PAGE = 4096
LINEAR_MAP_BASE = 0xC000000000000000
# include/linux/poison.h: LIST_POISON1 on 64-bit with the default POISON_POINTER_DELTA.
LIST_POISON1 = 0x100
# VMCOREINFO keys whose loss or damage changes how a dump is read.
IMPORTANT_KEYS = (b"NUMBER(RADIX_MMU)", b"PAGESIZE", b"OSRELEASE", b"BUILD-ID", b"KERNELOFFSET",
                  b"SYMBOL(swapper_pg_dir)", b"NUMBER(VMALLOC_START)", b"SYMBOL(vmemmap)",
                  b"SYMBOL(_stext)", b"NUMBER(MAX_PHYSMEM_BITS)")


@dataclass
class Segment:
    index: int  # program header index
    type: int
    offset: int  # in the file
    filesz: int
    vaddr: int
    paddr: int


@dataclass
class Note:
    type: int
    name: bytes
    desc_offset: int  # in the file
    desc_size: int


class Core:
    """An ELF64 core file, parsed just enough to damage it where it matters."""

    def __init__(self, data: bytes) -> None:
        self.data = bytearray(data)
        if self.data[:4] != b"\x7fELF" or self.data[4] != 2:
            raise ValueError("not an ELF64 core")
        self.end = "<" if self.data[5] == 1 else ">"
        (self.phoff,) = struct.unpack_from(self.end + "Q", self.data, 32)
        (self.phentsize, self.phnum) = struct.unpack_from(self.end + "HH", self.data, 54)
        self.segments: List[Segment] = []
        for i in range(self.phnum):
            at = self.phoff + i * self.phentsize
            p_type, _, offset, vaddr, paddr, filesz = struct.unpack_from(self.end + "IIQQQQ", self.data, at)
            self.segments.append(Segment(i, p_type, offset, filesz, vaddr, paddr))
        self.notes: List[Note] = []
        for seg in self.segments:
            if seg.type != PT_NOTE:
                continue
            at, stop = seg.offset, seg.offset + seg.filesz
            while at + 12 <= stop:
                namesz, descsz, ntype = struct.unpack_from(self.end + "III", self.data, at)
                name = bytes(self.data[at + 12:at + 12 + namesz]).rstrip(b"\0")
                desc = at + 12 + ((namesz + 3) & ~3)
                if desc + descsz > stop:
                    break
                self.notes.append(Note(ntype, name, desc, descsz))
                at = desc + ((descsz + 3) & ~3)

    @property
    def loads(self) -> List[Segment]:
        return [s for s in self.segments if s.type == PT_LOAD and s.filesz]

    def vmcoreinfo(self) -> Optional[Note]:
        return next((n for n in self.notes if n.name == b"VMCOREINFO"), None)

    def offset_of_vaddr(self, vaddr: int) -> Optional[int]:
        """File offset of kernel virtual address ``vaddr`` (linear map or any PT_LOAD's vaddr)."""
        for seg in self.loads:
            for base in (seg.vaddr, LINEAR_MAP_BASE + seg.paddr):
                if base <= vaddr < base + seg.filesz:
                    return seg.offset + vaddr - base
        return None

    def vaddr_of_offset(self, offset: int) -> Optional[int]:
        for seg in self.loads:
            if seg.offset <= offset < seg.offset + seg.filesz:
                return LINEAR_MAP_BASE + seg.paddr + offset - seg.offset
        return None

    def load_data_offsets(self) -> List[Tuple[int, int]]:
        return [(s.offset, s.filesz) for s in self.loads]

    def random_data_offset(self, rng: random.Random, align: int = 1) -> int:
        loads = self.loads
        total = sum(s.filesz for s in loads)
        pick = rng.randrange(total)
        for seg in loads:
            if pick < seg.filesz:
                return (seg.offset + pick) // align * align
            pick -= seg.filesz
        raise AssertionError("unreachable")

    def word(self, offset: int) -> int:
        return struct.unpack_from(self.end + "Q", self.data, offset)[0]

    def set_word(self, offset: int, value: int) -> None:
        struct.pack_into(self.end + "Q", self.data, offset, value & 0xFFFFFFFFFFFFFFFF)


@dataclass
class Inputs:
    """The files of one run: a vmcore, its vmlinux and its modules (paths; copies once damaged)."""

    name: str  # the fixture
    vmcore: str
    vmlinux: str
    modules: List[str] = field(default_factory=list)

    def argv(self) -> List[str]:
        argv = ["-c", self.vmcore, "-s", self.vmlinux]
        for module in self.modules:
            argv += ["-s", module]
        return argv


# --- mutators over the core --------------------------------------------------------


def _flip_bits(rng: random.Random, core: Core) -> str:
    n = rng.randint(1, 8)
    where = []
    for _ in range(n):
        at = core.random_data_offset(rng)
        bit = rng.randrange(8)
        core.data[at] ^= 1 << bit
        where.append(f"{at:#x}.{bit}")
    return f"flipped {n} bit(s) in PT_LOAD data at {', '.join(where)}"


def _random_words(rng: random.Random, core: Core) -> str:
    n = rng.randint(1, 4)
    where = []
    for _ in range(n):
        at = core.random_data_offset(rng, 8)
        value = rng.getrandbits(64)
        core.set_word(at, value)
        where.append(f"{at:#x}={value:#x}")
    return f"{n} random word(s) in PT_LOAD data: {', '.join(where)}"


def _pointer_words(rng: random.Random, core: Core) -> str:
    n = rng.randint(1, 4)
    where = []
    for _ in range(n):
        at = core.random_data_offset(rng, 8)
        here = core.vaddr_of_offset(at) or LINEAR_MAP_BASE
        choice = rng.randrange(7)
        if choice == 0:
            value, what = here, "itself"
        elif choice == 1:
            value, what = 0, "NULL"
        elif choice == 2:
            other = core.random_data_offset(rng, 8)
            value, what = core.word(other), "another word's value"
        elif choice == 3:
            value, what = core.vaddr_of_offset(core.random_data_offset(rng, 8)) or here, "a word in the dump"
        elif choice == 4:
            value, what = LINEAR_MAP_BASE + rng.randrange(1 << 32) * 8, "the linear map"
        elif choice == 5:
            value, what = LIST_POISON1 + 0xDEAD000000000000, "LIST_POISON1"
        else:
            value, what = here - 8 * rng.randint(1, 64), "just below itself"
        core.set_word(at, value)
        where.append(f"{at:#x}={value:#x} ({what})")
    return f"{n} pointer-like word(s) in PT_LOAD data: {', '.join(where)}"


def _zero_pages(rng: random.Random, core: Core) -> str:
    n = rng.randint(1, 2)
    where = []
    for _ in range(n):
        seg = rng.choice(core.loads)
        page = seg.offset + rng.randrange(max(1, seg.filesz // PAGE)) * PAGE
        stop = min(page + PAGE, seg.offset + seg.filesz)
        core.data[page:stop] = bytes(stop - page)
        where.append(f"{page:#x}")
    return f"zeroed {n} page(s) of PT_LOAD data at {', '.join(where)}"


def _note_bits(rng: random.Random, core: Core) -> str:
    note = rng.choice(core.notes)
    n = rng.randint(1, 6)
    for _ in range(n):
        at = note.desc_offset + rng.randrange(max(1, note.desc_size))
        core.data[at] ^= 1 << rng.randrange(8)
    return f"flipped {n} bit(s) in the {note.name.decode(errors='replace')} note type {note.type}"


def _prstatus_words(rng: random.Random, core: Core) -> str:
    notes = [n for n in core.notes if n.type == NT_PRSTATUS]
    if not notes:
        return _note_bits(rng, core)
    note = rng.choice(notes)
    n = rng.randint(1, 4)
    for _ in range(n):
        at = note.desc_offset + rng.randrange(max(1, note.desc_size // 8)) * 8
        if at + 8 <= note.desc_offset + note.desc_size:
            core.set_word(at, rng.choice((0, rng.getrandbits(64), LINEAR_MAP_BASE + rng.randrange(1 << 30))))
    return f"{n} word(s) of an NT_PRSTATUS note overwritten"


def _vmcoreinfo_lines(core: Core) -> Tuple[Note, List[bytes]]:
    note = core.vmcoreinfo()
    assert note is not None
    text = bytes(core.data[note.desc_offset:note.desc_offset + note.desc_size])
    return note, text.split(b"\0", 1)[0].split(b"\n")


def _write_vmcoreinfo(core: Core, note: Note, lines: List[bytes]) -> None:
    text = b"\n".join(lines)[:note.desc_size]
    core.data[note.desc_offset:note.desc_offset + note.desc_size] = text.ljust(note.desc_size, b"\0")


def _vmcoreinfo_prune(rng: random.Random, core: Core) -> str:
    if core.vmcoreinfo() is None:
        return _note_bits(rng, core)
    note, lines = _vmcoreinfo_lines(core)
    keys = [line.split(b"=", 1)[0] for line in lines]
    if rng.random() < 0.5:
        wanted = [k for k in IMPORTANT_KEYS if k in keys]
        key = rng.choice(wanted) if wanted else rng.choice(keys)
    else:
        key = rng.choice(keys)
    lines = [line for line in lines if line.split(b"=", 1)[0] != key]
    _write_vmcoreinfo(core, note, lines)
    return f"VMCOREINFO without {key.decode(errors='replace')}"


def _vmcoreinfo_value(rng: random.Random, core: Core) -> str:
    if core.vmcoreinfo() is None:
        return _note_bits(rng, core)
    note, lines = _vmcoreinfo_lines(core)
    candidates = [i for i, line in enumerate(lines) if b"=" in line]
    if rng.random() < 0.5:
        important = [i for i in candidates if lines[i].split(b"=", 1)[0] in IMPORTANT_KEYS]
        i = rng.choice(important or candidates)
    else:
        i = rng.choice(candidates)
    key = lines[i].split(b"=", 1)[0]
    value = rng.choice((
        b"f" * 40, b"-1", b"0", b"99999999999999999999999", b"ffffffffffffffff", b"", b"zz",
        b"%x" % rng.getrandbits(64), b"%d" % rng.getrandbits(70),
    ))
    lines[i] = key + b"=" + value
    _write_vmcoreinfo(core, note, lines)
    return f"VMCOREINFO {key.decode(errors='replace')}={value.decode(errors='replace')}"


def _header(rng: random.Random, core: Core) -> str:
    # ELF header fields that locate everything else, or one program header's.
    if rng.random() < 0.4:
        fields = {"e_phoff": (32, "Q"), "e_phentsize": (54, "H"), "e_phnum": (56, "H"),
                  "e_type": (16, "H"), "e_machine": (18, "H"), "EI_CLASS": (4, "B"), "EI_DATA": (5, "B")}
        name = rng.choice(sorted(fields))
        at, fmt = fields[name]
    else:
        seg = rng.choice(core.segments)
        fields = {"p_type": (0, "I"), "p_offset": (8, "Q"), "p_vaddr": (16, "Q"), "p_paddr": (24, "Q"),
                  "p_filesz": (32, "Q"), "p_memsz": (40, "Q")}
        name = rng.choice(sorted(fields))
        off, fmt = fields[name]
        at = core.phoff + seg.index * core.phentsize + off
        name = f"phdr[{seg.index}].{name}"
    size = struct.calcsize(fmt)
    old = struct.unpack_from(core.end + fmt, core.data, at)[0]
    value = rng.choice((0, old ^ (1 << rng.randrange(size * 8)), rng.getrandbits(size * 8),
                        (1 << (size * 8)) - 1, old + rng.randint(1, 4096)))
    struct.pack_into(core.end + fmt, core.data, at, value & ((1 << (size * 8)) - 1))
    return f"ELF {name} {old:#x} -> {value & ((1 << (size * 8)) - 1):#x}"


def _truncate_core(rng: random.Random, core: Core) -> str:
    where = rng.choice(("header", "notes", "data", "end"))
    if where == "header":
        size = rng.randrange(0, 64 + core.phnum * core.phentsize)
    elif where == "notes" and core.notes:
        note = rng.choice(core.notes)
        size = note.desc_offset + rng.randrange(max(1, note.desc_size))
    elif where == "end":
        size = len(core.data) - rng.randint(1, PAGE)
    else:
        size = core.random_data_offset(rng)
    del core.data[size:]
    return f"vmcore truncated to {size} bytes (in the {where})"


CoreMutator = Callable[[random.Random, Core], str]

CORE_MUTATORS: Dict[str, Tuple[CoreMutator, int]] = {
    # name: (mutator, weight)
    "bitflip": (_flip_bits, 12),
    "random_word": (_random_words, 10),
    "pointer_word": (_pointer_words, 14),
    "zero_page": (_zero_pages, 10),
    "note_bits": (_note_bits, 4),
    "prstatus": (_prstatus_words, 4),
    "vmcoreinfo_prune": (_vmcoreinfo_prune, 5),
    "vmcoreinfo_value": (_vmcoreinfo_value, 5),
    "header": (_header, 5),
    "truncate_core": (_truncate_core, 5),
}


# --- mutators over the debug files ------------------------------------------------------


def _truncate_file(rng: random.Random, path: str, out: str) -> int:
    size = os.path.getsize(path)
    keep = rng.choice((rng.randrange(0, 64), rng.randrange(64, 4096), rng.randrange(size)))
    with open(path, "rb") as src, open(out, "wb") as dst:
        dst.write(src.read(keep))
    return keep


def _damage_file(rng: random.Random, path: str, out: str) -> int:
    shutil.copyfile(path, out)
    size = os.path.getsize(out)
    n = rng.randint(1, 16)
    with open(out, "r+b") as f:
        for _ in range(n):
            # Half in the ELF and section headers (the first and last pages), half anywhere.
            at = rng.choice((rng.randrange(min(size, 4096)), max(0, size - 1 - rng.randrange(min(size, 4096))),
                             rng.randrange(size)))
            f.seek(at)
            byte = f.read(1)
            f.seek(at)
            f.write(bytes([(byte[0] if byte else 0) ^ (1 << rng.randrange(8))]))
    return n


FILE_MUTATORS = {
    # name: weight
    "truncate_vmlinux": 3,
    "damage_vmlinux": 3,
    "truncate_module": 2,
    "damage_module": 2,
    "mismatch_vmlinux": 2,
    "mismatch_modules": 2,
}


def mutate(rng: random.Random, inputs: Inputs, others: List[Inputs], scratch: str) -> Tuple[str, str, Inputs]:
    """
    One damage, chosen and done with ``rng``: (mutator name, what it did,
    the damaged inputs, written under ``scratch``).
    """
    names = list(CORE_MUTATORS) + list(FILE_MUTATORS)
    weights = [w for _, w in CORE_MUTATORS.values()] + list(FILE_MUTATORS.values())
    name = rng.choices(names, weights)[0]
    os.makedirs(scratch, exist_ok=True)
    out = Inputs(inputs.name, inputs.vmcore, inputs.vmlinux, list(inputs.modules))
    if name in CORE_MUTATORS:
        with open(inputs.vmcore, "rb") as f:
            core = Core(f.read())
        what = CORE_MUTATORS[name][0](rng, core)
        out.vmcore = os.path.join(scratch, "vmcore")
        with open(out.vmcore, "wb") as f:
            f.write(core.data)
    elif name == "truncate_vmlinux":
        out.vmlinux = os.path.join(scratch, "vmlinux")
        what = f"vmlinux truncated to {_truncate_file(rng, inputs.vmlinux, out.vmlinux)} bytes"
    elif name == "damage_vmlinux":
        out.vmlinux = os.path.join(scratch, "vmlinux")
        what = f"{_damage_file(rng, inputs.vmlinux, out.vmlinux)} bit(s) flipped in vmlinux"
    elif name in ("truncate_module", "damage_module") and inputs.modules:
        i = rng.randrange(len(inputs.modules))
        out.modules[i] = os.path.join(scratch, os.path.basename(inputs.modules[i]))
        if name == "truncate_module":
            what = (f"{os.path.basename(inputs.modules[i])} truncated to "
                    f"{_truncate_file(rng, inputs.modules[i], out.modules[i])} bytes")
        else:
            what = (f"{_damage_file(rng, inputs.modules[i], out.modules[i])} bit(s) flipped in "
                    f"{os.path.basename(inputs.modules[i])}")
    elif name == "mismatch_vmlinux" and others:
        other = rng.choice(others)
        out.vmlinux = other.vmlinux
        what = f"vmlinux of {other.name}"
    elif name == "mismatch_modules" and others:
        other = rng.choice(others)
        out.modules = list(other.modules)
        what = f"modules of {other.name}"
    else:
        name = "truncate_vmlinux"
        out.vmlinux = os.path.join(scratch, "vmlinux")
        what = f"vmlinux truncated to {_truncate_file(rng, inputs.vmlinux, out.vmlinux)} bytes"
    return name, what, out


# --- targeted damage of a core file too big to hold in memory ----------------------------


def load_segments(path: str) -> Tuple[str, List[Segment]]:
    """(struct byte order, program headers) of the ELF64 core at ``path``, read from its headers only."""
    with open(path, "rb") as f:
        ident = f.read(64)
        end = "<" if ident[5] == 1 else ">"
        (phoff,) = struct.unpack_from(end + "Q", ident, 32)
        phentsize, phnum = struct.unpack_from(end + "HH", ident, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    segments = []
    for i in range(phnum):
        p_type, _, offset, vaddr, paddr, filesz = struct.unpack_from(end + "IIQQQQ", table, i * phentsize)
        segments.append(Segment(i, p_type, offset, filesz, vaddr, paddr))
    return end, segments


def file_offset(segments: List[Segment], vaddr: int) -> int:
    """File offset of kernel linear-map address ``vaddr`` in a core with these program headers."""
    for seg in segments:
        if seg.type != PT_LOAD:
            continue
        for base in (seg.vaddr, LINEAR_MAP_BASE + seg.paddr):
            if base and base <= vaddr < base + seg.filesz:
                return seg.offset + vaddr - base
    raise LookupError(f"{vaddr:#x} is not in the core's PT_LOAD data")


def damaged_copy(src: str, dst: str, patches: Dict[int, bytes]) -> None:
    """Copy the core ``src`` to ``dst`` with the bytes at each kernel address of ``patches`` replaced."""
    shutil.copyfile(src, dst)
    _, segments = load_segments(dst)
    with open(dst, "r+b") as f:
        for vaddr, data in sorted(patches.items()):
            f.seek(file_offset(segments, vaddr))
            f.write(data)
