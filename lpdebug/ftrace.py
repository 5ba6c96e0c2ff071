# SPDX-License-Identifier: GPL-2.0-or-later
"""
ftrace state: the registered ``ftrace_ops`` and every ``dyn_ftrace`` record.

Flag bits moved between kernel releases. Both flag sets are anonymous enums
in ``include/linux/ftrace.h``, so the kernel's own values are read from the
debug info when it has them; otherwise a table chosen from type facts is
used (see :func:`ops_flag_bits`, :func:`record_flag_bits`).

Records are read in bulk: one ``prog.read`` per ``ftrace_page``, an array of
words sliced over them, then names through the :class:`Symbolizer` in one pass
over the records and the symbol table, which is what makes a full table of
tens of thousands of records cheap.
"""

from __future__ import annotations

import array
import struct
import sys
import time
from itertools import compress
from typing import Dict, Iterator, List, Literal, NamedTuple, Optional, Protocol, Sequence, Set, Tuple

import drgn

from . import kernel
from .diagnostics import corrupt, cycle, from_exception
from .model import Diagnostic, FtraceOps, FtraceRecord, FtraceState
from .symbols import Symbolizer

__all__ = (
    "for_each_ftrace_ops",
    "ftrace_ops",
    "ftrace_records",
    "RecordTable",
    "record_table",
    "build_records",
    "read_ftrace_state",
    "ftrace_state",
    "ops_flag_bits",
    "record_flag_bits",
    "refcount_shift",
    "decode_flags",
    "hash_ips",
    "enabled_functions_flags",
)

# The stage of lpdebug.report.triage the ftrace walkers run in.
STAGE = "ftrace"

# --- flag facts -------------------------------------------------------------
#
# The kernel's own values come first: FTRACE_OPS_FL_* and FTRACE_FL_* are
# anonymous enums in include/linux/ftrace.h, and GCC keeps them in the DWARF
# (seen in every testbed vmlinux: Debian's 5.10.223, 6.1.192 and 6.12.117
# sources built with gcc 12, DWARF 4 and 5; tests/test_ftrace_testbed.py checks
# the tables below against them). The tables are the fallback for debug info
# without the enum (a pruned or stripped DWARF). Each layout says where its
# rows were read; a layout is chosen by type facts, each citing the kernel
# change it detects.

# FTRACE_OPS_FL_* layouts, index = bit.
_OPS_4_15 = [
    "ENABLED", "DYNAMIC", "SAVE_REGS", "SAVE_REGS_IF_SUPPORTED", "RECURSION_SAFE",
    "STUB", "INITIALIZED", "DELETED", "ADDING", "REMOVING", "MODIFYING",
    "ALLOC_TRAMP", "IPMODIFY", "PID", "RCU", "TRACE_ARRAY",
]
_OPS_TABLES = {
    # v4.4 include/linux/ftrace.h: CONTROL at bit 2 (the perf per-cpu control
    # ops); not rechecked against a 4.4 source here.
    "4.4": ["ENABLED", "DYNAMIC", "CONTROL", "SAVE_REGS", "SAVE_REGS_IF_SUPPORTED",
            "RECURSION_SAFE", "STUB", "INITIALIZED", "DELETED", "ADDING", "REMOVING",
            "MODIFYING", "ALLOC_TRAMP", "IPMODIFY", "PID"],
    # v4.9 include/linux/ftrace.h: CONTROL renamed PER_CPU, RCU added at 15;
    # not rechecked against a 4.9 source here.
    "4.9": ["ENABLED", "DYNAMIC", "PER_CPU", "SAVE_REGS", "SAVE_REGS_IF_SUPPORTED",
            "RECURSION_SAFE", "STUB", "INITIALIZED", "DELETED", "ADDING", "REMOVING",
            "MODIFYING", "ALLOC_TRAMP", "IPMODIFY", "PID", "RCU"],
    # b3a88803ac5b "ftrace: Kill FTRACE_OPS_FL_PER_CPU" (v4.15) moved every
    # later bit down by one; TRACE_ARRAY took bit 15. Bits 0-15 equal 5.10.223's.
    "4.15": _OPS_4_15,
    # "ftrace: Introduce PERMANENT ftrace_ops flag" and "ftrace: Add
    # register_ftrace_direct()" (v5.5) added PERMANENT 16 and DIRECT 17: read
    # in Debian's 5.10.223 and 6.1.192 include/linux/ftrace.h.
    "5.7": _OPS_4_15 + ["PERMANENT", "DIRECT"],
    # Debian's 6.12.117 include/linux/ftrace.h: SUBOP 18 (with subop_list).
    "6.12": _OPS_4_15 + ["PERMANENT", "DIRECT", "SUBOP"],
}

# FTRACE_FL_* of struct dyn_ftrace: (name, bit), newest bits last. The bits
# never moved; new ones were added below the old, and FTRACE_REF_MAX_SHIFT,
# the lowest flag bit, went down with them. Read in Debian's 5.10.223 and
# 6.1.192 (ENABLED 31 .. DIRECT_EN 23, shift 23) and 6.12.117 (.. MODIFIED 19,
# shift 19) include/linux/ftrace.h.
_REC_BITS = [
    ("ENABLED", 31), ("REGS", 30), ("REGS_EN", 29), ("TRAMP", 28), ("TRAMP_EN", 27),
    ("IPMODIFY", 26), ("DISABLED", 25), ("DIRECT", 24), ("DIRECT_EN", 23),
    ("CALL_OPS", 22), ("CALL_OPS_EN", 21), ("TOUCHED", 20), ("MODIFIED", 19),
]
# Lowest flag bit (FTRACE_REF_MAX_SHIFT) by layout:
_REC_TABLES = {
    "4.4": 26,  # IPMODIFY 26 was the lowest; not rechecked against a 4.4 source here
    "4.9": 25,  # DISABLED 25 added; not rechecked against a 4.9 source here
    "5.7": 23,  # DIRECT 24, DIRECT_EN 23 (v5.5, with register_ftrace_direct()): 5.10.223, 6.1.192
    "6.3": 21,  # CALL_OPS 22, CALL_OPS_EN 21 (cbad0fb2d8d9 "ftrace: Add DYNAMIC_FTRACE_WITH_CALL_OPS", v6.3)
    "6.4": 19,  # TOUCHED 20, MODIFIED 19 (touched_functions, v6.4); 6.12.117 has 19..31
}
# The records of one ftrace_page are one __get_free_pages() block
# (ftrace_allocate_records()), at most PAGE_SIZE << the largest page order:
# 16 MiB on ppc64 with 4K or 64K pages (ARCH_FORCE_MAX_ORDER 12 / 8 in 6.12's
# arch/powerpc/Kconfig; FORCE_MAX_ZONEORDER 13 / 9, one past the largest
# order, in 5.10's). A page claiming more records is corrupt.
_RECORD_BLOCK_MAX = 16 << 20


def _ops_table_name(prog: drgn.Program) -> str:
    # subop_list and FTRACE_OPS_FL_SUBOP: 5fccc7552ccb ("ftrace: Add subops
    # logic to allow one ops to manage many", v6.12).
    has = lambda m: kernel.has_member(prog, "struct ftrace_ops", m)  # noqa: E731
    if has("subop_list"):  # with SUBOP in 6.12.117 (absent in 6.1.192)
        return "6.12"
    # ftrace_ops.list (fc0ea795f53c "ftrace: Add symbols for ftrace
    # trampolines", v5.9) and ftrace_func_entry.direct (763e34e74bb7 "ftrace:
    # Add register_ftrace_direct()", v5.5) are both in 5.10.223, where
    # PERMANENT and DIRECT are 16, 17.
    if has("list") or kernel.has_member(prog, "struct ftrace_func_entry", "direct"):
        return "5.7"
    # ftrace_hash.flags is in the 4.15 layout and not in 4.9's (not rechecked
    # against those sources here; 5.10.223 kernel/trace/trace.h has it)
    if kernel.has_member(prog, "struct ftrace_hash", "flags"):
        return "4.15"
    if has("nr_trampolines"):  # only 4.4's ftrace_ops has it
        return "4.4"
    return "4.9"


@kernel.cached
def ops_flag_bits(prog: drgn.Program) -> Dict[str, int]:
    """``{name: mask}`` of FTRACE_OPS_FL_* for this kernel (prefix stripped)."""
    enum = kernel.enum_values(prog, "FTRACE_OPS_FL_")
    if enum:
        bits = {name[len("FTRACE_OPS_FL_"):]: value for name, value in enum.items()}
    else:
        bits = {name: 1 << i for i, name in enumerate(_OPS_TABLES[_ops_table_name(prog)])}
        if "RECURSION_SAFE" in bits and kernel.has_member(prog, "struct ftrace_ops", "ops_func"):
            # a25d036d939a "ftrace: Reverse what the RECURSION flag means in
            # the ftrace_ops" (v5.11) renamed it RECURSION, same bit; ops_func
            # (53cd885bc5c3 "ftrace: Allow IPMODIFY and DIRECT ops on the same
            # function", v6.0) tells a kernel after it (6.1.192 has both,
            # 5.10.223 neither).
            bits["RECURSION"] = bits.pop("RECURSION_SAFE")
    return bits


def _rec_table_name(prog: drgn.Program) -> str:
    # Without the enum in the debug info, tell the layouts apart by the
    # functions that came with the new bits: ftrace_find_unique_ops with
    # CALL_OPS (cbad0fb2d8d9 "ftrace: Add DYNAMIC_FTRACE_WITH_CALL_OPS", v6.3),
    # ftrace_find_rec_direct with DIRECT (763e34e74bb7 "ftrace: Add
    # register_ftrace_direct()", v5.5).
    if kernel.has_object(prog, "ftrace_touched_open") or kernel.has_object(prog, "touched_functions"):
        return "6.4"
    if kernel.has_object(prog, "ftrace_find_unique_ops"):
        return "6.3"
    # ftrace_func_entry.direct is unconditional in 5.10.223; ftrace_find_rec_direct
    # exists only with DYNAMIC_FTRACE_WITH_DIRECT_CALLS (x86 there)
    if (kernel.has_member(prog, "struct ftrace_func_entry", "direct")
            or kernel.has_object(prog, "ftrace_find_rec_direct")):
        return "5.7"
    if (kernel.has_member(prog, "struct ftrace_hash", "flags")
            or not kernel.has_member(prog, "struct ftrace_ops", "nr_trampolines")):
        return "4.9"
    return "4.4"


@kernel.cached
def record_flag_bits(prog: drgn.Program) -> Dict[str, int]:
    """``{name: mask}`` of the FTRACE_FL_* flags of ``struct dyn_ftrace`` for this kernel."""
    enum = kernel.enum_values(prog, "FTRACE_FL_")
    if enum:
        bits = {name[len("FTRACE_FL_"):]: value for name, value in enum.items()}
    else:
        shift = _REC_TABLES[_rec_table_name(prog)]
        bits = {name: 1 << bit for name, bit in _REC_BITS if bit >= shift}
    return bits


def fallback_flag_bits(prog: drgn.Program) -> Tuple[Dict[str, int], Dict[str, int]]:
    """The (ops, record) flag bits the fallback tables give this kernel,
    whatever its debug info holds: for checking the tables against the DWARF."""
    ops = {name: 1 << i for i, name in enumerate(_OPS_TABLES[_ops_table_name(prog)])}
    if "RECURSION_SAFE" in ops and kernel.has_member(prog, "struct ftrace_ops", "ops_func"):
        ops["RECURSION"] = ops.pop("RECURSION_SAFE")
    shift = _REC_TABLES[_rec_table_name(prog)]
    return ops, {name: 1 << bit for name, bit in _REC_BITS if bit >= shift}


def refcount_shift(prog: drgn.Program) -> int:
    """FTRACE_REF_MAX_SHIFT: the reference count is ``flags & ((1 << shift) - 1)``.
    A #define, so not in the DWARF: it is the lowest flag bit (23 in 5.10.223
    and 6.1.192, 19 in 6.12.117, each the lowest FTRACE_FL_* there)."""
    bits = record_flag_bits(prog)
    return min(mask.bit_length() - 1 for mask in bits.values()) if bits else 0


def decode_flags(value: int, bits: Dict[str, int]) -> List[str]:
    """Names of the flags set in ``value``, highest bit first; unknown bits as hex."""
    names = []
    known = 0
    for name, mask in sorted(bits.items(), key=lambda kv: -kv[1]):
        known |= mask
        if value & mask:
            names.append(name)
    rest = value & ~known
    if rest:
        names.append(f"{rest:#x}")
    return names


def enabled_functions_flags(record: FtraceRecord, flag_bits: Dict[str, int]) -> str:
    """
    The flag columns tracefs ``enabled_functions`` prints after the count
    (``t_show``): " R", " I", then " D", " O" and " M " on kernels that have
    those flags (``flag_bits``, from :func:`record_flag_bits`), blanks where
    a flag is clear.
    """
    flags = set(record.flags)
    columns = [("REGS", " R", "  "), ("IPMODIFY", " I", "  "), ("DIRECT", " D", "  "),
               ("CALL_OPS", " O", "  "), ("MODIFIED", " M ", "   ")]
    return "".join(
        (on if name in flags else off)
        for name, on, off in columns
        if name in flag_bits or name in ("REGS", "IPMODIFY")
    )


# --- ftrace_ops -------------------------------------------------------------


def for_each_ftrace_ops(prog: drgn.Program,
                        diagnostics: Optional[List[Diagnostic]] = None) -> Iterator[drgn.Object]:
    """
    The registered ``struct ftrace_ops *``: the chain from ``ftrace_ops_list``
    through ``->next`` up to ``&ftrace_list_end``. Cycles and unreadable ops
    end the walk with a :class:`~lpdebug.model.Diagnostic` in ``diagnostics``.
    """
    errs = diagnostics if diagnostics is not None else []
    try:
        op = prog["ftrace_ops_list"].read_()
    except (LookupError, drgn.FaultError) as e:
        errs.append(from_exception(STAGE, "ftrace_ops_list", e))
        return
    try:
        end = prog["ftrace_list_end"].address_of_().value_()
    except (LookupError, drgn.FaultError):
        end = None  # static in some kernels: the chain then ends at a self-link or NULL
    seen: Set[int] = set()
    try:
        while op.value_() and op.value_() != end:
            addr = op.value_()
            if addr in seen:
                errs.append(cycle(STAGE, addr, f"ftrace_ops_list: cycle at {addr:#x}, walk stopped"))
                return
            if len(seen) >= kernel.WALK_LIMIT:
                errs.append(corrupt(STAGE, addr, "ftrace_ops_list: too long, walk stopped"))
                return
            seen.add(addr)
            nxt = op.next.read_()
            if end is None and nxt.value_() == addr:
                return
            yield op
            op = nxt
    except drgn.FaultError as e:
        errs.append(from_exception(STAGE, "ftrace_ops_list: an ops (the walk stopped there) is", e))


def hash_ips(hash_ptr: drgn.Object, diagnostics: Optional[List[Diagnostic]] = None) -> List[int]:
    """The IPs in a ``struct ftrace_hash *`` (empty for NULL or an empty hash)."""
    errs = diagnostics if diagnostics is not None else []
    prog = hash_ptr.prog_
    if not hash_ptr.value_():
        return []
    try:
        count = hash_ptr.count.value_()
        if not count:
            return []
        nbuckets = 1 << hash_ptr.size_bits.value_()
        buckets = hash_ptr.buckets.value_()
        raw = prog.read(buckets, nbuckets * 8)
    except drgn.FaultError as e:
        errs.append(from_exception(STAGE, f"ftrace_hash {hash_ptr.value_():#x}", e))
        return []
    entry_type = prog.type("struct ftrace_func_entry")
    ip_offset = drgn.offsetof(entry_type, "ip")
    fmt = "<Q" if kernel.is_little_endian(prog) else ">Q"
    ips: List[int] = []
    for (node,) in struct.iter_unpack(fmt, raw):
        hops = 0
        while node:
            hops += 1
            if len(ips) > count or hops > count:
                errs.append(cycle(STAGE, node, f"ftrace_hash {hash_ptr.value_():#x}: more entries "
                                  f"than its count {count}"))
                return ips
            try:
                ips.append(prog.read_u64(node + ip_offset))
                node = prog.read_u64(node)  # hlist_node.next is the first member
            except drgn.FaultError as e:
                errs.append(from_exception(STAGE, f"ftrace_hash {hash_ptr.value_():#x}: an entry is", e,
                                           node))
                break
    return sorted(ips)


def _ops_hashes(op: drgn.Object, diagnostics: List[Diagnostic]) -> Tuple[List[int], List[int]]:
    if not kernel.has_member(op.prog_, "struct ftrace_ops", "func_hash"):
        return [], []
    func_hash = op.func_hash.read_()
    if not func_hash.value_():
        return [], []
    return hash_ips(func_hash.filter_hash.read_(), diagnostics), hash_ips(func_hash.notrace_hash.read_(), diagnostics)


def ftrace_ops(prog: drgn.Program, diagnostics: Optional[List[Diagnostic]] = None) -> List[FtraceOps]:
    """Every registered ftrace_ops as :class:`FtraceOps`, in list order."""
    errs = diagnostics if diagnostics is not None else []
    sym = Symbolizer(prog)
    bits = ops_flag_bits(prog)
    has_tramp = kernel.has_member(prog, "struct ftrace_ops", "trampoline")
    result = []
    for op in for_each_ftrace_ops(prog, errs):
        try:
            func = op.func.value_()
            flags = op.flags.value_()
            filter_ips, notrace_ips = _ops_hashes(op, errs)
            result.append(FtraceOps(
                address=op.value_(),
                func=func,
                func_symbol=sym.name_of(func),
                owner=sym.module_of(func),
                flags=decode_flags(flags, bits),
                flags_raw=flags,
                filter=filter_ips,
                notrace=notrace_ips,
                filter_symbols=[sym.name_of(ip) for ip in filter_ips],
                notrace_symbols=[sym.name_of(ip) for ip in notrace_ips],
                trampoline=op.trampoline.value_() if has_tramp else 0,
                trampoline_size=op.trampoline_size.value_() if has_tramp else 0,
            ))
        except drgn.FaultError as e:
            errs.append(from_exception(STAGE, f"ftrace_ops at {op.value_():#x}", e))
    return result


# --- dyn_ftrace records -----------------------------------------------------


def _for_each_ftrace_page(prog: drgn.Program, diagnostics: List[Diagnostic]) -> Iterator[drgn.Object]:
    try:
        page = prog["ftrace_pages_start"].read_()
    except (LookupError, drgn.FaultError) as e:
        diagnostics.append(from_exception(STAGE, "ftrace_pages_start (the dyn_ftrace records)", e))
        return
    seen: Set[int] = set()
    try:
        while page.value_():
            if page.value_() in seen:
                diagnostics.append(cycle(STAGE, page.value_(),
                                    f"ftrace pages: cycle at {page.value_():#x}, walk stopped"))
                return
            seen.add(page.value_())
            yield page
            page = page.next.read_()
    except drgn.FaultError as e:
        diagnostics.append(from_exception(STAGE, "ftrace pages: a page (the walk stopped there) is", e))


def _record_layout(prog: drgn.Program) -> Tuple[int, int, int, int, bool]:
    """
    The layout of one ``struct dyn_ftrace`` (from the debug info): its size,
    the offsets of ip and flags, the word size, and whether it is little-endian.
    """
    rec_type = prog.type("struct dyn_ftrace")
    return (drgn.sizeof(rec_type), drgn.offsetof(rec_type, "ip"), drgn.offsetof(rec_type, "flags"),
            drgn.sizeof(prog.type("unsigned long")), kernel.is_little_endian(prog))


def _decode_records(blob: bytes,
                    layout: Tuple[int, int, int, int, bool]) -> Tuple[Sequence[int], Sequence[int]]:
    """
    The ips and the flags of the records packed in ``blob``. When both are
    whole words of a record a whole number of words long (every kernel here:
    ip, flags, then the arch part), they are strided views of ``blob`` read
    as words: nothing is copied or turned into Python ints until used, and a
    report uses few. Otherwise (another byte order than this machine's, or
    odd offsets) they are copied out.
    """
    size, ip_off, flags_off, word, little = layout
    blob = blob[:len(blob) - len(blob) % size]
    typecode: Optional[Literal["Q", "I"]] = "Q" if word == 8 else "I" if word == 4 else None
    if (typecode is not None and array.array(typecode).itemsize == word
            and size % word == 0 and ip_off % word == 0 and flags_off % word == 0):
        stride = size // word
        if little == (sys.byteorder == "little"):
            words: Sequence[int] = memoryview(blob).cast(typecode)
        else:
            swapped = array.array(typecode)
            swapped.frombytes(blob)
            swapped.byteswap()
            words = swapped
        return words[ip_off // word::stride], words[flags_off // word::stride]
    code = "Q" if word == 8 else "I"
    rec = struct.Struct(f"{'<' if little else '>'}{size}s")
    ip_at = struct.Struct(f"{'<' if little else '>'}{ip_off}x{code}")
    flags_at = struct.Struct(f"{'<' if little else '>'}{flags_off}x{code}")
    records = [r for (r,) in rec.iter_unpack(blob)]
    return ([ip_at.unpack_from(r)[0] for r in records], [flags_at.unpack_from(r)[0] for r in records])


def _raw_records(prog: drgn.Program, diagnostics: List[Diagnostic],
                 timings: Dict[str, float]) -> Tuple[Sequence[int], Sequence[int]]:
    """The ips and the flags of every record, page by page, in the kernel's order."""
    layout = _record_layout(prog)
    size = layout[0]
    pages = []
    t0 = time.perf_counter()
    for page in _for_each_ftrace_page(prog, diagnostics):
        try:
            index = page.index.value_()
            records = page.records.value_()
        except drgn.FaultError as e:
            diagnostics.append(from_exception(STAGE, f"ftrace page {page.value_():#x}", e))
            continue
        if index < 0 or index * size > _RECORD_BLOCK_MAX:
            diagnostics.append(corrupt(STAGE, page.value_(),
                                  f"ftrace page {page.value_():#x}: implausible record count {index}"))
            continue
        pages.append((page.value_(), records, index))
    blobs = []
    for page_addr, records, index in pages:
        try:
            blobs.append(prog.read(records, index * size))
        except drgn.FaultError as e:
            diagnostics.append(from_exception(STAGE, f"records of ftrace page {page_addr:#x}", e, records))
    t1 = time.perf_counter()
    ips, flags = _decode_records(b"".join(blobs), layout)
    timings["read"] = timings.get("read", 0.0) + (t1 - t0)
    timings["decode"] = timings.get("decode", 0.0) + (time.perf_counter() - t1)
    return ips, flags


def _ops_matcher(ops_sets: Sequence[Tuple[int, Set[int], Set[int]]]):  # type: ignore[no-untyped-def]
    """
    A function ip -> addresses of the ops whose hashes select ip, in list
    order, by hash_contains_ip(): in the filter hash or the filter hash is
    empty, and not in the notrace hash. Indexed by ip, since a record table
    has thousands of entries and filters are small.
    """
    order = {addr: i for i, (addr, _, _) in enumerate(ops_sets)}
    unfiltered = [(addr, notrace) for addr, filt, notrace in ops_sets if not filt]
    by_ip: Dict[int, List[Tuple[int, Set[int]]]] = {}
    for addr, filt, notrace in ops_sets:
        for ip in filt:
            by_ip.setdefault(ip, []).append((addr, notrace))
    # Every ip outside all notrace hashes and all filters gets the same ops:
    # the unfiltered ones. Only the few others are worked out one by one.
    everywhere = [addr for addr, _ in unfiltered]
    special = set(by_ip).union(*(nt for _, nt in unfiltered))

    def match(ip: int) -> List[int]:
        if ip not in special:
            return list(everywhere)
        found = [a for a, nt in unfiltered if ip not in nt]
        extra = by_ip.get(ip)
        if extra:
            found.extend(a for a, nt in extra if ip not in nt)
            found.sort(key=order.__getitem__)
        return found

    return match


class RecordFilter(Protocol):
    """Which records :func:`build_records` builds (see lpdebug.notable.NotableRecordFilter)."""

    def candidates(self, ips: Sequence[int], flags: Sequence[int]) -> List[int]:
        """Indexes of the records that may be kept, whatever their ops: a superset, asked first."""

    def __call__(self, ip: int, flags: int, attached: List[int]) -> bool:
        """Whether the record with raw ``flags`` and ``attached`` ops is kept."""


class RecordTable(NamedTuple):
    """The dyn_ftrace records as read, in the kernel's order: ips and raw flags."""

    ips: Sequence[int]
    flags: Sequence[int]


def record_table(prog: drgn.Program, diagnostics: Optional[List[Diagnostic]] = None,
                 timings: Optional[Dict[str, float]] = None) -> RecordTable:
    """
    Every dyn_ftrace record of the kernel, read and decoded but neither named
    nor matched to ops: :func:`build_records` makes :class:`FtraceRecord` of
    those a report shows.
    """
    errs = diagnostics if diagnostics is not None else []
    times = timings if timings is not None else {}
    if not kernel.has_type(prog, "struct dyn_ftrace"):
        return RecordTable([], [])
    ips, flags = _raw_records(prog, errs, times)
    times["count"] = len(ips)
    return RecordTable(ips, flags)


def build_records(
    prog: drgn.Program,
    table: RecordTable,
    all_records: bool = False,
    *,
    ops: Sequence[FtraceOps],
    keep: Optional[RecordFilter] = None,
    timings: Optional[Dict[str, float]] = None,
) -> List[FtraceRecord]:
    """
    :class:`FtraceRecord` of the records of ``table``, in its order: those
    whose flags are not 0, or every one with ``all_records``, and of those
    only the ones ``keep`` accepts when given. Only the records kept are
    named. ``ops`` are the :func:`ftrace_ops` of the same kernel. Reads
    nothing from the target beyond the symbol table.
    """
    times = timings if timings is not None else {}
    t0 = time.perf_counter()
    bits = record_flag_bits(prog)
    shift = refcount_shift(prog)
    ref_mask = (1 << shift) - 1
    enabled_mask = bits.get("ENABLED", 0)
    ips, flags_of = table
    if keep is not None:  # first: it looks at the whole table at once, and keeps few
        maybe = keep.candidates(ips, flags_of)
        ips = [ips[i] for i in maybe]
        flags_of = [flags_of[i] for i in maybe]
    if not all_records:
        ips, flags_of = list(compress(ips, flags_of)), list(compress(flags_of, flags_of))
    ops_bits = ops_flag_bits(prog)
    # A record's reference count counts every ENABLED ops whose hashes select
    # it (__ftrace_hash_rec_update(), kernel/trace/ftrace.c, 5.10.223 and
    # 6.12.117), STUB ops included: 5.10's function-graph graph_ops is a STUB
    # (fgraph.c) and holds a reference on every record it traces.
    ops_sets = [
        (o.address, set(o.filter), set(o.notrace)) for o in ops
        if o.flags_raw & ops_bits.get("ENABLED", 0)
    ]
    attached = _ops_matcher(ops_sets)
    attached_ops = [attached(ip) if flags & enabled_mask else [] for ip, flags in zip(ips, flags_of)]
    if keep is not None:
        kept = [i for i, (ip, flags, on) in enumerate(zip(ips, flags_of, attached_ops)) if keep(ip, flags, on)]
        ips = [ips[i] for i in kept]
        flags_of = [flags_of[i] for i in kept]
        attached_ops = [attached_ops[i] for i in kept]
    t1 = time.perf_counter()

    sym = Symbolizer(prog)
    t2 = time.perf_counter()
    decoded: Dict[int, List[str]] = {}
    result = []
    module_of = sym.module_of
    for ip, flags, on, info in zip(ips, flags_of, attached_ops, sym.nearest_each(ips)):
        names = decoded.get(flags & ~ref_mask)
        if names is None:
            names = decoded[flags & ~ref_mask] = decode_flags(flags & ~ref_mask, bits)
        past_end = info is not None and info.offset > info.size
        result.append(FtraceRecord(
            ip=ip,
            symbol=info.name if info and not past_end else None,
            past_end_of=info.name if info is not None and past_end else None,
            module=info.module if info else module_of(ip),
            flags=list(names),  # not shared between records
            flags_raw=flags,
            refcount=flags & ref_mask,
            ops=on,
        ))
    t3 = time.perf_counter()
    times["select_and_ops"] = times.get("select_and_ops", 0.0) + (t1 - t0)
    times["symbolizer_build"] = times.get("symbolizer_build", 0.0) + (t2 - t1)
    times["name"] = times.get("name", 0.0) + (t3 - t2)
    return result


def ftrace_records(
    prog: drgn.Program,
    all_records: bool = False,
    *,
    ops: Optional[Sequence[FtraceOps]] = None,
    diagnostics: Optional[List[Diagnostic]] = None,
    timings: Optional[Dict[str, float]] = None,
) -> List[FtraceRecord]:
    """
    The dyn_ftrace records as :class:`FtraceRecord`, in the kernel's order.

    By default only records whose flags are not 0 (enabled, touched, or
    otherwise changed); ``all_records`` gives every record. Each enabled
    record lists the enabled ftrace_ops whose hashes select its ip. Pass
    ``ops`` to reuse an :func:`ftrace_ops` result, and a ``timings`` dict to
    get seconds spent reading, decoding, selecting, matching ops and naming.
    """
    errs = diagnostics if diagnostics is not None else []
    if not kernel.has_type(prog, "struct dyn_ftrace"):
        return []
    table = record_table(prog, errs, timings)
    if ops is None:
        ops = ftrace_ops(prog, errs)
    return build_records(prog, table, all_records, ops=ops, timings=timings)


def read_ftrace_state(prog: drgn.Program) -> Tuple[FtraceState, RecordTable]:
    """
    The reading part of :func:`ftrace_state`: ops, the record count and what
    could not be read, with ``records`` left empty, and the records as read,
    for :func:`build_records` to make the ones a report shows.
    """
    state = FtraceState()
    table = RecordTable([], [])
    if not kernel.has_type(prog, "struct ftrace_ops"):
        state.unavailable = "the kernel has no ftrace (no struct ftrace_ops)"
        return state, table
    if not kernel.has_type(prog, "struct dyn_ftrace"):
        state.unavailable = "the kernel has no dynamic ftrace (no struct dyn_ftrace): no records"
    try:
        state.ops = ftrace_ops(prog, state.diagnostics)
        table = record_table(prog, state.diagnostics)
        state.total_records = len(table.ips)
    except (drgn.FaultError, LookupError) as e:
        state.diagnostics.append(from_exception(STAGE, "ftrace state", e))
    return state, table


def ftrace_state(prog: drgn.Program, all_records: bool = False) -> FtraceState:
    """Ops and records together; problems in ``diagnostics``, never an exception."""
    state, table = read_ftrace_state(prog)
    try:
        state.records = build_records(prog, table, all_records, ops=state.ops)
    except (drgn.FaultError, LookupError) as e:
        state.diagnostics.append(from_exception(STAGE, "ftrace state", e))
    return state
