# SPDX-License-Identifier: GPL-2.0-or-later
"""lpdebug.render on hand-built model objects: what each table must show."""

import re

from lpdebug import model, render
from test_triage_json import LPH, MOD_TOC, RTH, _result, _task


def describe(addr):
    names = {LPH + 0x30: "livepatch_handler+0x30", RTH: "return_to_handler"}
    return names.get(addr, f"{addr:#x}")


def test_backtrace_shows_where_each_return_address_came_from():
    text = render.render_backtrace(_task(42, with_stacks=True), describe)
    lines = text.splitlines()
    assert lines[0].startswith("PID 42 (task42) state S, patch_state 1")
    frame1 = next(line for line in lines if line.startswith("#1 "))
    assert re.search(r"victim_thread\+0x44 \[victim\]\s+0xc000000004a3fe00\s+livepatch\s+"
                     r"livepatch_handler\+0x30$", frame1), frame1
    frame0 = next(line for line in lines if line.startswith("#0 "))
    assert frame0.rstrip().endswith("unwound"), "raw pc shown although it equals pc"


def test_shadow_stacks_flag_bad_magic_and_name_toc_owners():
    trace = _task(42, with_stacks=True)
    trace.livepatch_stack.entries.append(model.LivepatchStackEntry(
        address=0xC000000004A3C020, toc=0x1234, lr=0xC008000000050100, real_lr=0xC008000000050100,
        magic=0xDEADBEEF, magic_ok=False))
    text = render.render_shadow_stacks(trace, describe,
                                       lambda toc: "victim" if toc == MOD_TOC else None)
    assert "Function-graph shadow stack" in text and "Livepatch stack" in text
    assert f"{MOD_TOC:#x} [victim]" in text
    assert "BAD 0xdeadbeef" in text
    assert "return_to_handler" in text  # saved LR named, with the real LR beside it


def test_triage_report_shows_the_tasks_worth_reading():
    result = _result()
    text = render.render_triage(result, describe)
    assert "release        6.12.57" in text
    assert "lp_test" in text and "victim_fn1" in text
    assert "patch lp_test is in transition to patched" in text
    assert re.search(r"^42\s+task42\s+0\s+victim_fn1\s+1$", text, re.M)
    assert "Findings (2)" in text and "frame_toc_mismatch" in text
    # what could not be checked comes first, after the verdict that says both
    assert text.startswith("Result: INCOMPLETE (1 thing could not be checked, listed below), "
                           "2 findings\n")
    could_not = text.index("Could not check (1)")
    assert could_not < text.index("Kernel")
    assert ("[ftrace] unreadable at 0xc000000003000000: records of ftrace page "
            "0xc000000003000000 unreadable") in text
    assert "PID 42 (task42)" in text
    assert "PID 7 (task7)" not in text  # nothing singles it out
    assert "PID 7 (task7)" in render.render_triage(result, describe, all_tasks=True)


def test_complete_report_says_so():
    result = _result()
    result.diagnostics = []
    text = render.render_triage(result, describe)
    assert text.startswith("Result: complete, 2 findings\n") and "Could not check" not in text


def test_triage_report_lists_targeted_records_only():
    result = _result()
    graph = model.FtraceOps(address=0xC000000001000000, func=0xC000000000400000,
                            func_symbol="ftrace_graph_func", owner=None, flags=["ENABLED"],
                            flags_raw=1)
    result.ftrace.ops.append(graph)
    result.ftrace.records.append(model.FtraceRecord(
        ip=0xC000000000123456, symbol="schedule", module=None, flags=["ENABLED"], flags_raw=1,
        refcount=1, ops=[graph.address]))
    text = render.render_triage(result, describe)
    records = text[text.index("dyn_ftrace records"):text.index("Module TOCs")]
    assert "victim_fn0 [victim]" in records and "victim_fn1 [victim]" in records
    assert "schedule" not in records
    assert "2 shown of 12830 in the kernel" in records


def test_findings_table_and_messages():
    text = render.render_findings(_result().findings)
    assert re.search(r"error\s+frame_toc_mismatch\s+42\s+#1\s+0xc008000000050044\s+"
                     rf"{MOD_TOC:#x} \[victim\]\s+0xc000000001a7b100$", text, re.M), text
    assert "1. frame #1 ..." in text
    assert render.render_findings([]) == "no findings"


def test_tocs_table():
    text = render.render_tocs(_result().tocs)
    lines = text.splitlines()
    assert lines[2].startswith("vmlinux") and "paca" in lines[2]
    assert "victim" in lines[3] and "3 agree" in lines[3]
