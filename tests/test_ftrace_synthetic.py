# SPDX-License-Identifier: GPL-2.0-or-later
"""
Synthetic tests of lpdebug.ftrace: mock kernels for the flag layouts of
releases the testbed does not build (4.4, and the choice between the DWARF
enum and the fallback tables), cyclic ops lists and page chains, faulting
record pages, and the ops-to-record matching rule of hash_contains_ip().
"""

import pytest

import drgn

from lpdebug import ftrace
from lpdebug.model import DiagnosticKind
from synthetic import FAULT_ADDRESS, MockKernel, define_list_head

pytestmark = pytest.mark.synthetic

TEXT = 0xC000000000010000
MOD_TEXT = 0xC008000000200000


def build(mk, *, release="6.1", enum=None, ops_enum=None):
    define_list_head(mk)
    mk.symbol("_text", 0xC000000000000000, 0, kind=drgn.SymbolKind.UNKNOWN)
    mk.symbol("_end", 0xC000000001000000, 0, kind=drgn.SymbolKind.UNKNOWN)
    for i, name in enumerate(["func_a", "func_b", "func_c", "func_d", "tracer_func"]):
        mk.symbol(name, TEXT + 0x100 * i, 0x100)
    mk.struct("ftrace_hash", [("unsigned long", "size_bits"), ("struct hlist_head *", "buckets"),
                              ("unsigned long", "count")]
              + ([("unsigned long", "flags")] if release != "4.4" else []))
    mk.struct("ftrace_func_entry", [("struct hlist_node", "hlist"), ("unsigned long", "ip")]
              + ([("unsigned long", "direct")] if release not in ("4.4",) else []))
    mk.struct("ftrace_ops_hash", [("struct ftrace_hash *", "notrace_hash"), ("struct ftrace_hash *", "filter_hash")])
    ops_members = [("void *", "func"), ("struct ftrace_ops *", "next"), ("unsigned long", "flags"),
                   ("void *", "private"), ("void *", "saved_func")]
    if release == "4.4":
        ops_members.append(("int", "nr_trampolines"))
    ops_members += [("struct ftrace_ops_hash", "local_hash"), ("struct ftrace_ops_hash *", "func_hash"),
                    ("struct ftrace_ops_hash", "old_hash"), ("unsigned long", "trampoline"),
                    ("unsigned long", "trampoline_size")]
    if release != "4.4":
        ops_members.append(("struct list_head", "list"))
    if release == "6.12":
        ops_members.append(("struct list_head", "subop_list"))
    mk.struct("ftrace_ops", ops_members)
    mk.struct("dyn_ftrace", [("unsigned long", "ip"), ("unsigned long", "flags"), ("void *", "mod")])
    mk.struct("ftrace_page", [("struct ftrace_page *", "next"), ("struct dyn_ftrace *", "records"),
                              ("int", "index"), ("int", "order")])
    if release == "6.1":
        mk.variable("ftrace_find_rec_direct", "int")  # stands for the 5.7+ function
    if enum is not None:
        mk.enum(None, enum)
    if ops_enum is not None:
        mk.enum(None, ops_enum)
    end = mk.variable("ftrace_list_end", "struct ftrace_ops")
    head = mk.variable("ftrace_ops_list", "struct ftrace_ops *")
    mk.write_int(head, end)
    mk.variable("ftrace_pages_start", "struct ftrace_page *")
    return end


def add_hash(mk, ips):
    buckets = mk.alloc(4 * 8)
    h = mk.new("struct ftrace_hash", size_bits=2, buckets=buckets, count=len(ips))
    for i, ip in enumerate(ips):
        entry = mk.new("struct ftrace_func_entry", ip=ip)
        slot = buckets + (i % 4) * 8
        mk.write_int(entry, mk.read_int(slot))  # push on the bucket's chain
        mk.write_int(slot, entry)
    return h


def add_ops(mk, func, flags, filter_ips=(), notrace_ips=()):
    ops = mk.new("struct ftrace_ops", func=func, flags=flags)
    lh = ops + drgn.offsetof(mk.type("struct ftrace_ops"), "local_hash")
    mk.set(ops, "struct ftrace_ops", "func_hash", lh)
    mk.set(ops, "struct ftrace_ops", "local_hash.filter_hash", add_hash(mk, list(filter_ips)))
    mk.set(ops, "struct ftrace_ops", "local_hash.notrace_hash", add_hash(mk, list(notrace_ips)))
    # Push on ftrace_ops_list like add_ftrace_ops().
    head = mk.prog["ftrace_ops_list"].address_
    mk.set(ops, "struct ftrace_ops", "next", mk.read_int(head))
    mk.write_int(head, ops)
    return ops


def add_page(mk, records):
    recs = mk.alloc(24 * max(len(records), 1))
    for i, (ip, flags) in enumerate(records):
        mk.write_int(recs + 24 * i, ip)
        mk.write_int(recs + 24 * i + 8, flags)
    page = mk.new("struct ftrace_page", records=recs, index=len(records))
    # Append at the end of the page chain.
    slot = mk.prog["ftrace_pages_start"].address_
    while mk.read_int(slot):
        slot = mk.read_int(slot)  # next is the first member
    mk.write_int(slot, page)
    return page


def test_fallback_table_6_1_synthetic():
    # No enum in the debug info: 6.1's bits come from the 5.7 table (REF_MAX_SHIFT 23),
    # so bit 20 (TOUCHED on 6.4+) is part of the reference count.
    mk = MockKernel()
    build(mk, release="6.1")
    add_page(mk, [(TEXT + 8, (1 << 31) | (1 << 30) | (1 << 29) | 2), (TEXT + 0x108, (1 << 31) | (1 << 20) | 1),
                  (TEXT + 0x208, 0)])
    recs = ftrace.ftrace_records(mk.prog)
    assert [(r.symbol, r.flags, r.refcount) for r in recs] == [
        ("func_a", ["ENABLED", "REGS", "REGS_EN"], 2),
        ("func_b", ["ENABLED"], (1 << 20) | 1),
    ]
    assert ftrace.refcount_shift(mk.prog) == 23
    # 6.1's t_show prints R, I and D columns only.
    assert ftrace.enabled_functions_flags(recs[0], ftrace.record_flag_bits(mk.prog)) == " R    "


def test_enum_from_debug_info_wins_synthetic():
    # With the enum present its values are used even where they differ from any table.
    mk = MockKernel()
    build(mk, release="6.12", enum={"FTRACE_FL_ENABLED": 1 << 31, "FTRACE_FL_IPMODIFY": 1 << 26,
                                    "FTRACE_FL_TOUCHED": 1 << 20, "FTRACE_FL_MADEUP": 1 << 17})
    add_page(mk, [(TEXT + 8, (1 << 31) | (1 << 20) | (1 << 17) | 3)])
    (rec,) = ftrace.ftrace_records(mk.prog)
    assert rec.flags == ["ENABLED", "TOUCHED", "MADEUP"]
    assert rec.refcount == 3
    # Only the columns of flags this kernel has: R and I always, no D, O or M here.
    assert ftrace.enabled_functions_flags(rec, ftrace.record_flag_bits(mk.prog)) == "    "


def test_ops_flags_4_4_table_synthetic():
    mk = MockKernel()
    build(mk, release="4.4")
    add_ops(mk, TEXT + 0x400, (1 << 0) | (1 << 2) | (1 << 13))
    (ops,) = ftrace.ftrace_ops(mk.prog)
    assert ops.flags == ["IPMODIFY", "CONTROL", "ENABLED"]
    assert ops.func_symbol == "tracer_func"


def test_ops_flags_6_12_subop_table_synthetic():
    mk = MockKernel()
    build(mk, release="6.12")
    add_ops(mk, TEXT + 0x400, (1 << 18) | (1 << 16) | 1)
    (ops,) = ftrace.ftrace_ops(mk.prog)
    assert ops.flags == ["SUBOP", "PERMANENT", "ENABLED"]


def test_ops_matching_follows_hash_contains_ip_synthetic():
    mk = MockKernel()
    build(mk, release="6.1")
    a = add_ops(mk, TEXT + 0x400, 1, filter_ips=[TEXT + 8])
    b = add_ops(mk, TEXT + 0x400, 1, notrace_ips=[TEXT + 0x108])
    add_ops(mk, TEXT + 0x400, 0, filter_ips=[TEXT + 8])  # not enabled: never attached
    add_page(mk, [(TEXT + 8, (1 << 31) | 2), (TEXT + 0x108, (1 << 31) | 0), (TEXT + 0x208, (1 << 31) | 1),
                  (TEXT + 0x308, 1)])
    ops = ftrace.ftrace_ops(mk.prog)
    assert [o.filter_symbols for o in ops][1:] == [[], ["func_a"]]
    assert ops[1].notrace_symbols == ["func_b"]
    recs = {r.symbol: r for r in ftrace.ftrace_records(mk.prog, ops=ops)}
    assert sorted(recs["func_a"].ops) == sorted([a, b])
    assert recs["func_b"].ops == []
    assert recs["func_c"].ops == [b]
    assert recs["func_d"].ops == []  # not enabled: no ops listed


def test_all_records_and_faulting_page_synthetic():
    mk = MockKernel()
    build(mk, release="6.1")
    add_page(mk, [(TEXT + 8, 0), (TEXT + 0x108, 1 << 31)])
    bad = add_page(mk, [(TEXT + 0x208, 1 << 31)])
    add_page(mk, [(MOD_TEXT + 8, 1 << 25)])
    mk.set(bad, "struct ftrace_page", "records", FAULT_ADDRESS)
    errors = []
    timings = {}
    recs = ftrace.ftrace_records(mk.prog, all_records=True, diagnostics=errors, timings=timings)
    assert [r.ip for r in recs] == [TEXT + 8, TEXT + 0x108, MOD_TEXT + 8]
    assert recs[2].flags == ["DISABLED"] and recs[2].symbol is None
    assert len(errors) == 1 and "unreadable" in errors[0].message
    assert (errors[0].stage, errors[0].kind) == ("ftrace", DiagnosticKind.UNREADABLE)
    assert timings["count"] == 3


def test_cyclic_ops_list_and_page_chain_synthetic():
    mk = MockKernel()
    build(mk, release="6.1")
    a = add_ops(mk, TEXT + 0x400, 1)
    b = add_ops(mk, TEXT + 0x400, 1)
    mk.set(a, "struct ftrace_ops", "next", b)  # b -> a -> b ...
    p1 = add_page(mk, [(TEXT + 8, 1 << 31)])
    p2 = add_page(mk, [(TEXT + 0x108, 1 << 31)])
    mk.set(p2, "struct ftrace_page", "next", p1)
    state = ftrace.ftrace_state(mk.prog)
    assert [o.address for o in state.ops] == [b, a]
    assert [r.symbol for r in state.records] == ["func_a", "func_b"]
    assert any("ftrace_ops_list: cycle" in e.message for e in state.diagnostics)
    assert any("ftrace pages: cycle" in e.message for e in state.diagnostics)
    assert {e.kind for e in state.diagnostics} == {DiagnosticKind.CYCLE}


def test_kernel_without_ftrace_synthetic():
    mk = MockKernel()
    define_list_head(mk)
    state = ftrace.ftrace_state(mk.prog)
    assert state.ops == [] and state.records == []
    assert state.unavailable == "the kernel has no ftrace (no struct ftrace_ops)"
    assert state.diagnostics == []


@pytest.mark.parametrize("little", [True, False])
@pytest.mark.parametrize("layout", [(24, 0, 8, 8), (16, 8, 0, 8), (12, 0, 4, 4), (20, 4, 12, 8)])
def test_record_decoding_any_layout_and_byte_order_synthetic(layout, little):
    # (size, ip offset, flags offset, word): ppc64's (ip, flags, arch), flags first, a 32-bit
    # kernel, and a record whose words are not aligned (the struct.unpack path).
    size, ip_off, flags_off, word = layout
    records = [(0xC000000000010008 + 0x100 * i, (1 << 31) | i) for i in range(5)]
    if word == 4:
        records = [(ip & 0xFFFFFFFF, flags) for ip, flags in records]
    order = "little" if little else "big"
    blob = b""
    for ip, flags in records:
        rec = bytearray(b"\xa5" * size)
        rec[ip_off:ip_off + word] = ip.to_bytes(word, order)
        rec[flags_off:flags_off + word] = flags.to_bytes(word, order)
        blob += bytes(rec)
    ips, flags = ftrace._decode_records(blob, (size, ip_off, flags_off, word, little))
    assert list(zip(ips, flags)) == records
