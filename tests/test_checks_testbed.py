# SPDX-License-Identifier: GPL-2.0-or-later
"""
TOC findings on the real-kernel testbed.

- toc-corrupt: a module wrote wrong TOCs into two sleeping kthreads' stacks
  and logged each write; truth/injected.json lists them. Each must be
  flagged exactly (kind, pid, slot, expected and written TOC), and nothing
  else may be.
- toc-crash: a kthread returned through a corrupted TOC save slot and
  oopsed on its next TOC-relative load; the crashed CPU's r2 and the frame
  whose slot carried the bad TOC must both be flagged.
- Clean scenarios: not one finding across all tasks.
"""

from __future__ import annotations

import json
from typing import Dict, List

import pytest

from test_backtrace_testbed import program, read_truth, traces
from testbed import scenario

pytestmark = pytest.mark.testbed

CLEAN = ["settled", "settled-6.1", "settled-64k", "stuck", "stacked", "nolivepatch", "settled-5.10",
         "stuck-5.10", "panic-5.10"]
INJECTED_KIND = {"frame_toc": "frame_toc_mismatch",
                 "livepatch_stack_toc": "livepatch_stack_toc_mismatch"}

_FINDINGS: Dict[str, list] = {}


def findings(name: str):
    if name not in _FINDINGS:
        from lpdebug.checks import all_findings
        from lpdebug.livepatch import livepatch_state
        from lpdebug.toc import module_tocs

        prog = program(name)
        _FINDINGS[name] = all_findings(prog, traces(name), module_tocs(prog),
                                       livepatch_state(prog))
    return _FINDINGS[name]


def injected(name: str) -> List[dict]:
    text = read_truth(name, "injected.json")
    assert text is not None, f"{name}: truth/injected.json is missing"
    try:
        records = json.loads(text)
    except json.JSONDecodeError:
        # One record per line: read those, whatever else the guest's log
        # collection let into the file.
        records = [json.loads(line.strip().rstrip(","))
                   for line in text.splitlines() if line.strip().startswith("{")]
    if isinstance(records, dict):
        records = records.get("records") or records.get("injected") or [records]
    assert records, f"{name}: injected.json lists no fault"
    return records


def _describe(found) -> str:
    return "\n".join(f"{f.kind} pid={f.pid} frame={f.frame} slot={f.slot} "
                     f"expected={f.expected_toc} actual={f.actual_toc}: {f.message}"
                     for f in found)


@pytest.mark.parametrize("name", CLEAN)
def test_clean_scenarios_have_no_findings(name):
    found = findings(name)
    assert not found, _describe(found)


@pytest.mark.parametrize("name", ["toc-corrupt", "toc-corrupt-5.10"])
def test_toc_corrupt_flags_exactly_the_injected_faults(name):
    found = list(findings(name))
    for record in injected(name):
        kind = INJECTED_KIND[record["kind"]]
        match = [f for f in found
                 if f.kind == kind and f.pid == record["pid"] and f.slot == record["slot_address"]]
        assert len(match) == 1, f"{record} flagged {len(match)} times in:\n{_describe(found)}"
        f = match[0]
        assert f.expected_toc == record["expected_toc"], _describe([f])
        assert f.actual_toc == record["written_value"], _describe([f])
        found.remove(f)
    assert not found, "findings beyond the injected faults:\n" + _describe(found)


@pytest.mark.parametrize("name", ["toc-crash", "toc-crash-5.10"])
def test_toc_crash_flags_the_crashed_cpu_and_the_frame_that_carried_the_bad_toc(name):
    found = findings(name)
    (record,) = injected(name)
    crashed = [t for t in traces(name) if t.crashed]
    assert [t.pid for t in crashed] == [record["pid"]], \
        "the crashed CPU must be running the injected thread"
    cpu = [f for f in found if f.kind == "crashed_cpu_toc_mismatch"]
    assert len(cpu) == 1, _describe(found)
    assert cpu[0].pid == record["pid"]
    assert cpu[0].actual_toc == record["written_value"]
    assert cpu[0].expected_toc == record["expected_toc"]
    assert cpu[0].expected_module == "lpd_toc_crash"
    frame = [f for f in found if f.kind == "frame_toc_mismatch"]
    assert len(frame) == 1, _describe(found)
    assert frame[0].pid == record["pid"] and frame[0].slot == record["slot_address"]
    assert frame[0].actual_toc == record["written_value"]
    assert frame[0].expected_toc == record["expected_toc"]
    others = [f for f in found if f not in cpu + frame]
    assert not others, _describe(others)


@pytest.mark.parametrize("name", ["toc-crash", "toc-crash-5.10", "panic-5.10"])
def test_crash_scenario_is_a_real_crash(name):
    assert scenario(name).get("crashed") is True
