# SPDX-License-Identifier: GPL-2.0-or-later
"""
Build synthetic (mock) kernels for tests: a :class:`drgn.Program` whose
types, variables, symbols and memory are made up in the test.

Use them only for states no real kernel of the testbed reaches: old
structure layouts, big-endian ELFv1, corrupt or cyclic data, faulting reads.
Tests that use them carry the ``synthetic`` marker and say so in their name.

    mk = MockKernel()
    mk.struct("list_head", [("struct list_head *", "next"), ("struct list_head *", "prev")])
    head = mk.variable("klp_patches", "struct list_head")
    mk.list_init(head)
    prog = mk.prog

Member types are C type strings: ``"int"``, ``"unsigned long"``, ``"bool"``,
``"char *"``, ``"struct foo *"``, ``"struct foo"`` (by value, defined
earlier), with an optional array suffix ``"[4]"``. Pointers to structs may
name structs defined later. Layout follows natural alignment. Memory lives in
one arena; any address outside it faults (``FAULT_ADDRESS`` is a handy one).
"""

from __future__ import annotations

import re
import struct as _struct
from typing import Dict, List, Optional, Sequence, Tuple, Union

import drgn

ARENA_BASE = 0xC000000002000000
FAULT_ADDRESS = 0xC0000000DEAD0000

_ARRAY = re.compile(r"^(.*?)\s*\[(\d+)\]$")


class MockKernel:
    def __init__(self, *, little_endian: bool = True, arena_size: int = 1 << 20,
                 arch: drgn.Architecture = drgn.Architecture.PPC64) -> None:
        flags = drgn.PlatformFlags.IS_64_BIT
        if little_endian:
            flags |= drgn.PlatformFlags.IS_LITTLE_ENDIAN
        self.little_endian = little_endian
        self.endian = "<" if little_endian else ">"
        self.prog = drgn.Program(drgn.Platform(arch, flags))
        self.arena = bytearray(arena_size)
        self._next = 0x100
        self._types: Dict[Tuple[drgn.TypeKind, str], drgn.Type] = {}
        self._objects: Dict[str, drgn.Object] = {}
        self._symbols: List[drgn.Symbol] = []
        self.prog.add_memory_segment(ARENA_BASE, arena_size, self._read)
        self.prog.register_type_finder("mock", self._find_type, enable_index=0)
        self.prog.register_object_finder("mock", self._find_object, enable_index=0)
        self.prog.register_symbol_finder("mock", self._find_symbols, enable_index=0)

    # -- drgn callbacks -------------------------------------------------------

    def _read(self, address: int, count: int, offset: int, physical: bool) -> bytes:
        return bytes(self.arena[offset : offset + count])

    def _find_type(self, prog, kinds, name, filename):  # type: ignore[no-untyped-def]
        for kind in kinds:
            tp = self._types.get((kind, name))
            if tp is not None:
                return tp
        return None

    def _find_object(self, prog, name, flags, filename):  # type: ignore[no-untyped-def]
        return self._objects.get(name)

    def _find_symbols(self, prog, name, address, one):  # type: ignore[no-untyped-def]
        found = [
            s for s in self._symbols
            if (name is None or s.name == name)
            and (address is None or s.address <= address < s.address + max(s.size, 1))
        ]
        return found[:1] if one else found

    # -- types ----------------------------------------------------------------

    def type(self, spec: str) -> drgn.Type:
        spec = spec.strip()
        m = _ARRAY.match(spec)
        if m:
            return self.prog.array_type(self.type(m.group(1)), int(m.group(2)))
        if spec.endswith("*"):
            inner = spec[:-1].strip()
            return self.prog.pointer_type(self.type(inner) if inner != "void" else self.prog.void_type())
        if spec == "bool":
            return self.prog.bool_type("_Bool", 1)
        if spec == "void":
            return self.prog.void_type()
        for kw, kind in (("struct ", drgn.TypeKind.STRUCT), ("enum ", drgn.TypeKind.ENUM)):
            if spec.startswith(kw):
                tag = spec[len(kw):]
                tp = self._types.get((kind, tag))
                if tp is None:
                    # Forward reference: an incomplete type, completed later by name lookup.
                    return self.prog.struct_type(tag) if kind == drgn.TypeKind.STRUCT else self.prog.enum_type(tag)
                return tp
        return self.prog.type(spec)

    def _member_type(self, spec: str):  # type: ignore[no-untyped-def]
        spec = spec.strip()
        if spec.endswith("*") and spec.startswith("struct "):
            # Pointers to structs resolve lazily so structs may refer to each other.
            return (lambda: self.type(spec)), 8, 8
        tp = self.type(spec)
        return tp, drgn.sizeof(tp), drgn.alignof(tp)

    def struct(self, tag: str, members: Sequence[Tuple[str, str]]) -> drgn.Type:
        """Define ``struct tag`` with members ``(type spec, name)``, naturally aligned."""
        offset = 0
        align_max = 1
        built = []
        for spec, name in members:
            tp, size, align = self._member_type(spec)
            offset = (offset + align - 1) // align * align
            built.append(drgn.TypeMember(tp, name, offset * 8))
            offset += size
            align_max = max(align_max, align)
        size = (offset + align_max - 1) // align_max * align_max
        tp = self.prog.struct_type(tag, size, built)
        self._types[(drgn.TypeKind.STRUCT, tag)] = tp
        return tp

    def enum(self, tag: Optional[str], values: Dict[str, int], size: int = 8) -> drgn.Type:
        """An enum whose enumerators are also found as constants by name."""
        compat = self.prog.int_type("unsigned long" if size == 8 else "unsigned int", size, False)
        tp = self.prog.enum_type(tag, compat, [drgn.TypeEnumerator(k, v) for k, v in values.items()])
        if tag:
            self._types[(drgn.TypeKind.ENUM, tag)] = tp
        for name, value in values.items():
            self._objects[name] = drgn.Object(self.prog, tp, value)
        return tp

    # -- memory ---------------------------------------------------------------

    def alloc(self, size_or_type: Union[int, str], align: int = 16) -> int:
        """Zeroed memory in the arena; returns its address."""
        size = size_or_type if isinstance(size_or_type, int) else drgn.sizeof(self.type(size_or_type))
        start = (self._next + align - 1) // align * align
        if start + size > len(self.arena):
            raise MemoryError("mock arena full")
        self._next = start + size
        return ARENA_BASE + start

    def write(self, address: int, data: bytes) -> None:
        offset = address - ARENA_BASE
        if not 0 <= offset <= len(self.arena) - len(data):
            raise ValueError(f"{address:#x} is outside the mock arena")
        self.arena[offset : offset + len(data)] = data

    def write_int(self, address: int, value: int, size: int = 8) -> None:
        fmt = {1: "B", 2: "H", 4: "I", 8: "Q"}[size]
        if value < 0:
            value &= (1 << (size * 8)) - 1
        self.write(address, _struct.pack(self.endian + fmt, value))

    def read_int(self, address: int, size: int = 8) -> int:
        fmt = {1: "B", 2: "H", 4: "I", 8: "Q"}[size]
        offset = address - ARENA_BASE
        return _struct.unpack_from(self.endian + fmt, self.arena, offset)[0]

    def set(self, address: int, type_spec: str, member: str, value: int) -> None:
        """Store integer/pointer ``value`` in ``member`` of the object at ``address``."""
        tp = self.type(type_spec)
        offset = drgn.offsetof(tp, member)
        mtype = tp
        for part in re.split(r"[.\[]", member):
            part = part.rstrip("]")
            if part.isdigit():
                mtype = mtype.type
            else:
                while mtype.kind == drgn.TypeKind.TYPEDEF:
                    mtype = mtype.type
                mtype = mtype.member(part).type
        self.write_int(address + offset, value, drgn.sizeof(mtype))

    def new(self, type_spec: str, **values: int) -> int:
        """Allocate a zeroed object and set members given as keywords."""
        address = self.alloc(type_spec)
        for member, value in values.items():
            self.set(address, type_spec, member, value)
        return address

    def string(self, text: str) -> int:
        data = text.encode() + b"\0"
        address = self.alloc(len(data), align=8)
        self.write(address, data)
        return address

    def variable(self, name: str, type_spec: str, address: Optional[int] = None) -> int:
        """A global variable (allocated unless ``address`` is given); returns its address."""
        if address is None:
            address = self.alloc(type_spec)
        tp = self.type(type_spec)
        self._objects[name] = drgn.Object(self.prog, tp, address=address)
        self.symbol(name, address, drgn.sizeof(tp), kind=drgn.SymbolKind.OBJECT)
        return address

    def constant(self, name: str, type_spec: str, value: int) -> None:
        self._objects[name] = drgn.Object(self.prog, self.type(type_spec), value)

    def symbol(self, name: str, address: int, size: int, *,
               kind: drgn.SymbolKind = drgn.SymbolKind.FUNC,
               binding: drgn.SymbolBinding = drgn.SymbolBinding.GLOBAL) -> None:
        self._symbols.append(drgn.Symbol(name, address, size, binding, kind))

    # -- kernel lists ---------------------------------------------------------

    def list_init(self, head: int) -> None:
        self.write_int(head, head)
        self.write_int(head + 8, head)

    def list_add_tail(self, head: int, node: int) -> None:
        prev = self.read_int(head + 8)
        self.write_int(node, head)
        self.write_int(node + 8, prev)
        self.write_int(prev, node)
        self.write_int(head + 8, node)


def define_list_head(mk: MockKernel) -> None:
    mk.struct("list_head", [("struct list_head *", "next"), ("struct list_head *", "prev")])
    mk.struct("hlist_node", [("struct hlist_node *", "next"), ("struct hlist_node **", "pprev")])
    mk.struct("hlist_head", [("struct hlist_node *", "first")])
