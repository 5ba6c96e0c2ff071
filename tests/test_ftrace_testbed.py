# SPDX-License-Identifier: GPL-2.0-or-later
"""
End-to-end tests of lpdebug.ftrace on the real-kernel testbed: every line of
the kernel's own tracefs enabled_functions (and touched_functions, where the
kernel has it) must appear among lpdebug's records with the same name,
module, reference count and flag columns, and the other way round.
"""

import collections
import os
import re

import pytest

from lpdebug import ftrace
from test_livepatch_testbed import LIVEPATCH_SCENARIOS, NO_LIVEPATCH_SCENARIOS, open_scenario
from testbed import scenario

pytestmark = pytest.mark.testbed

SCENARIOS = LIVEPATCH_SCENARIOS + NO_LIVEPATCH_SCENARIOS

# t_show(): "name [module] (refcount)", flag columns (" R"/"  ", " I", and on newer
# kernels " D", " O", " M "), then tab-separated trampoline/ops details. Trailing
# blanks of the flag columns are not compared.
LINE = re.compile(r"^(\S+)(?: \[(\S+)\])? \((\d+)\)([^\t]*)")


def parse_tracefs(path):
    lines = collections.Counter()
    with open(path) as f:
        for line in f:
            m = LINE.match(line.rstrip("\n"))
            assert m, f"unexpected line in {path}: {line!r}"
            lines[(m.group(1), m.group(2), int(m.group(3)), m.group(4).rstrip())] += 1
    return lines


def as_lines(records, flag, flag_bits):
    return collections.Counter(
        # tracefs names with kallsyms, which knows no symbol sizes: a record past its symbol's
        # end (symbol None) is named after that symbol there
        (r.symbol or r.past_end_of, r.module, r.refcount,
         ftrace.enabled_functions_flags(r, flag_bits).rstrip())
        for r in records if flag in r.flags
    )


@pytest.mark.parametrize("name", SCENARIOS)
def test_enabled_functions_match_records(name):
    truth = parse_tracefs(os.path.join(scenario(name)["truth"], "enabled_functions"))
    errors = []
    records = ftrace.ftrace_records(open_scenario(name), diagnostics=errors)
    ours = as_lines(records, "ENABLED", ftrace.record_flag_bits(open_scenario(name)))
    assert errors == []
    assert sum(truth.values()) > 0
    assert dict(truth - ours) == {}, "enabled_functions lines without a matching record"
    assert dict(ours - truth) == {}, "enabled records the kernel did not list"


@pytest.mark.parametrize("name", SCENARIOS)
def test_touched_functions_match_records(name):
    path = os.path.join(scenario(name)["truth"], "touched_functions")
    prog = open_scenario(name)
    if not os.path.exists(path):
        # Kernels before 6.4 have neither the file nor the flag.
        assert "TOUCHED" not in ftrace.record_flag_bits(prog)
        return
    truth = parse_tracefs(path)
    assert dict(truth) == dict(as_lines(ftrace.ftrace_records(prog), "TOUCHED", ftrace.record_flag_bits(prog)))


@pytest.mark.parametrize("name", SCENARIOS)
def test_attached_ops_count_is_the_kernels_refcount(name):
    # The kernel counts, per record, the enabled ops whose hashes select it;
    # lpdebug's ops matching must find exactly as many.
    prog = open_scenario(name)
    records = [r for r in ftrace.ftrace_records(prog) if "ENABLED" in r.flags]
    assert records
    wrong = [(r.symbol, r.refcount, len(r.ops)) for r in records if len(r.ops) != r.refcount]
    assert wrong == []


@pytest.mark.parametrize("name", SCENARIOS)
def test_ops_list_has_named_handlers(name):
    prog = open_scenario(name)
    errors = []
    ops = ftrace.ftrace_ops(prog, errors)
    assert errors == [] and ops
    assert all(o.func_symbol for o in ops)
    klp = [o for o in ops if o.func_symbol == "klp_ftrace_handler"]
    truth_patched = _patched_functions(scenario(name)["truth"])
    # One klp ops per patched old function, each filtering exactly that function.
    assert sorted({sym for o in klp for sym in o.filter_symbols}) == truth_patched
    for o in klp:
        assert "IPMODIFY" in o.flags and len(o.filter) == 1


def _patched_functions(truth_dir):
    root = os.path.join(truth_dir, "sys_kernel_livepatch")
    if not os.path.isdir(root):
        return []
    with open(os.path.join(truth_dir, "modules")) as f:
        loaded = {line.split()[0] for line in f if line.strip()}
    names = set()
    for patch in os.listdir(root):
        for obj in os.listdir(os.path.join(root, patch)):
            odir = os.path.join(root, patch, obj)
            if not os.path.isdir(odir):
                continue
            flag = os.path.join(odir, "patched")
            if os.path.exists(flag):
                patched = open(flag).read().strip() == "1"
            else:
                # no `patched` attribute before 6.1 (5.10.223): an object of an enabled, settled
                # patch is patched when its module is loaded (vmlinux always is)
                patched = obj == "vmlinux" or obj in loaded
            if patched:
                names.update(d.split(",")[0] for d in os.listdir(odir) if os.path.isdir(os.path.join(odir, d)))
    return sorted(names)


# Kernels built by the testbed, one scenario each (nolivepatch is Debian's own 6.1).
KERNEL_SCENARIOS = ["settled", "settled-6.1", "settled-64k", "settled-5.10", "nolivepatch"]


@pytest.mark.parametrize("name", KERNEL_SCENARIOS)
def test_fallback_flag_tables_equal_the_kernels_dwarf(name):
    """The fallback tables, chosen by type facts, give exactly the enums the
    kernel's own DWARF holds (the tables' rows for 5.10, 6.1 and 6.12)."""
    from lpdebug import kernel

    prog = open_scenario(name)
    ops = {n[len("FTRACE_OPS_FL_"):]: v for n, v in kernel.enum_values(prog, "FTRACE_OPS_FL_").items()}
    recs = {n[len("FTRACE_FL_"):]: v for n, v in kernel.enum_values(prog, "FTRACE_FL_").items()}
    assert ops and recs, f"{name}: the DWARF has no FTRACE_OPS_FL_/FTRACE_FL_ enum"
    assert ftrace.fallback_flag_bits(prog) == (ops, recs)


@pytest.mark.parametrize("name", ["stacked", "toc-crash", "settled-5.10", "nolivepatch"])
def test_notable_filter_builds_the_records_notable_records_picks(name):
    # A triage builds only the notable records (NotableRecordFilter over the records as read);
    # they must be those notable_records() picks from every record, here with findings
    # pointing at a spread of record ips besides the capture's livepatched functions.
    from lpdebug import livepatch
    from lpdebug.model import Finding, FtraceState
    from lpdebug.notable import NotableRecordFilter, notable_records

    prog = open_scenario(name)
    ops = ftrace.ftrace_ops(prog)
    patches = livepatch.livepatch_state(prog)
    table = ftrace.record_table(prog)
    every = ftrace.build_records(prog, table, ops=ops)
    findings = [Finding(kind="frame_toc_mismatch", severity="error", pid=None, frame=None, address=r.ip,
                        expected_toc=None, expected_module=None, actual_toc=None, actual_module=None,
                        message="") for r in every[::997]]
    for pointed in ([], findings):
        expected = notable_records(FtraceState(ops=ops, records=every), patches, pointed)
        keep = NotableRecordFilter(ops, patches, pointed, ftrace.record_flag_bits(prog))
        built = sorted(ftrace.build_records(prog, table, ops=ops, keep=keep), key=lambda r: r.ip)
        assert built == expected
        assert len(expected) >= len(pointed)
    if name != "nolivepatch":
        assert any(f.old_addr for p in patches.patches for o in p.objects for f in o.funcs)
        assert expected and any(r.ops for r in expected)
