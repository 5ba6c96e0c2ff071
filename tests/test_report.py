"""
The triage report a support engineer acts on, on the committed real-kernel
fixtures: the verdict first (summary, at most 15 lines), the stalled
transition as a finding, the compact default JSON, guidance per finding kind.

The kernel's own views are the oracle: the scenario's pids (the guest's
ps), truth/dmesg (the guest's dmesg before the capture), the transition
the guest's sysfs showed.
"""

import json
import os
import re
import subprocess
import sys

import pytest

from lpdebug import guidance, render, sample
from lpdebug import triage as tr
from lpdebug.summary import crash_report, strip_timestamp
from test_fixtures import FIXTURES, NAMES, truth

pytestmark = pytest.mark.fixtures

_results = {}


def result(name):
    if name not in _results:
        _results[name] = tr.triage(sample.open_fixture(os.path.join(FIXTURES, name)))
    return _results[name]


def scenario_meta(name):
    return sample.load_fixture(os.path.join(FIXTURES, name))["scenario"]


def cli(name, *args):
    paths = sample.fixture_paths(os.path.join(FIXTURES, name))
    target = ["-c", paths["vmcore"], "-s", paths["vmlinux"]]
    for ko in paths["modules"]:
        target += ["-s", ko]
    return subprocess.run([sys.executable, "-m", "lpdebug.commands.cli", *args[:1], *target,
                           *args[1:]], capture_output=True, text=True, timeout=900)


# --- the verdict -------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_summary_opens_the_report_in_at_most_15_lines(name):
    r = result(name)
    text = render.render_triage(r)
    assert text.startswith("Summary\n-------\n")
    summary = text.split("\n\n", 1)[0].splitlines()[2:]
    assert 3 <= len(summary) <= 15, summary
    assert summary == render.render_summary(r.summary, r.kernel).splitlines()
    enabled = sum(1 for p in r.livepatch.patches if p.enabled)
    assert f"livepatches: {enabled} enabled of {len(r.livepatch.patches)}" in text


@pytest.mark.parametrize("name", NAMES)
def test_summary_says_crashed_exactly_for_the_crash_dump(name):
    s = result(name).summary
    assert s.crashed == scenario_meta(name)["crashed"]
    assert (s.crashed_task is not None) == scenario_meta(name)["crashed"]


def test_toc_crash_summary_names_the_crashed_task_and_its_frames():
    s = result("toc-crash").summary
    pid = scenario_meta("toc-crash")["lpd_pids"]["lpd_crash"]
    assert (s.crashed_task.pid, s.crashed_task.comm) == (pid, "lpd_crash")
    assert s.crashed_task.top_frames[0].startswith("lpd_crash_victim+")
    assert s.crashed_task.top_frames[0].endswith("[lpd_toc_crash]")
    text = render.render_summary(s)
    assert text.splitlines()[0].startswith("CRASHED")
    assert f"crashed task: PID {pid} (lpd_crash) on CPU" in text


def test_toc_crash_message_comes_from_the_log_buffer():
    # The kernel's oops report (arch/powerpc/kernel/traps.c die(), show_regs()) names the task
    # with "CPU: N ... PID: P Comm: C"; the log before the crash is what the guest's dmesg said.
    r = result("toc-crash")
    assert r.kernel_log.error is None, r.kernel_log.error
    s = r.summary
    pid = scenario_meta("toc-crash")["lpd_pids"]["lpd_crash"]
    assert s.crash_message and s.crash_message.startswith(("BUG:", "Oops:", "Kernel panic")), s
    tail = [strip_timestamp(line) for line in r.kernel_log.tail]
    assert any(re.search(rf"PID: {pid} .*Comm: lpd_crash", line) for line in tail), tail
    assert s.panic_message is None or s.panic_message.startswith("Kernel panic - not syncing")


def test_crash_report_of_a_powerpc_oops():
    # The lines a 6.12 ppc64le guest printed for a bad r2-relative load (arch/powerpc/mm/fault.c,
    # traps.c), as dmesg shows them.
    log = [
        "[   40.100000] lpd_toc_crash: trigger",
        "[   40.200000] BUG: Unable to handle kernel data access on read at 0xc00000deadb08000",
        "[   40.200001] Faulting instruction address: 0xc00800000003a04c",
        "[   40.200002] Oops: Kernel access of bad area, sig: 11 [#1]",
        "[   40.200003] LE PAGE_SIZE=4K MMU=Radix  SMP NR_CPUS=4 NUMA pSeries",
        "[   40.200004] Modules linked in: lpd_toc_crash",
        "[   40.300000] Kernel panic - not syncing: Fatal exception",
    ]
    message, lines, panic = crash_report(log)
    assert message == "BUG: Unable to handle kernel data access on read at 0xc00000deadb08000"
    assert lines == ["Faulting instruction address: 0xc00800000003a04c",
                     "Oops: Kernel access of bad area, sig: 11 [#1]",
                     "LE PAGE_SIZE=4K MMU=Radix  SMP NR_CPUS=4 NUMA pSeries"]
    assert panic == "Kernel panic - not syncing: Fatal exception"
    assert crash_report(log[:1]) == (None, [], None)


# --- the stalled transition ----------------------------------------------------------------


def test_stuck_gives_one_transition_blocked_finding_and_exit_1():
    blocked = [f for f in result("stuck").findings if f.kind == "transition_blocked"]
    assert len(blocked) == 1, blocked
    f = blocked[0]
    assert f.severity == "warning"
    pid = scenario_meta("stuck")["lpd_pids"]["lpd_stuck"]
    assert [(b.pid, b.comm, b.function) for b in f.transition.blocking] == \
        [(pid, "lpd_stuck", "lpd_stuck_func")]
    assert "lpd_stuck" in f.message and "lpd_stuck_func" in f.message
    assert f.transition.patch == "lpd_stuck_patch" and f.transition.target_state == "patched"
    # the transition the guest's sysfs showed
    t = truth("stuck")
    assert t["sys_kernel_livepatch/lpd_stuck_patch/transition"].strip() == b"1"
    # the kernel counts its failed tries; signals go out every 15 of them
    assert f.transition.attempts and f.transition.attempts > 0
    assert f.transition.signals_sent == (f.transition.attempts - 1) // 15
    # the blocking frame is the old function, on the task's true backtrace
    trace = next(t for t in result("stuck").tasks if t.pid == pid)
    assert trace.frames[f.transition.blocking[0].frame].symbol == "lpd_stuck_func"
    proc = cli("stuck", "triage")
    assert proc.returncode == 1, proc.stderr
    assert "transition_blocked" in proc.stdout


@pytest.mark.parametrize("name", [n for n in NAMES if n != "stuck"])
def test_no_transition_blocked_without_a_transition(name):
    assert not [f for f in result(name).findings if f.kind == "transition_blocked"]


# --- compact JSON --------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_default_json_is_under_200_kb_and_lists_the_texts_records(name):
    r = result(name)
    text = tr.dumps(r)
    assert len(text.encode()) < 200 * 1024, len(text)
    doc = json.loads(text)
    assert doc["ftrace"]["selection"] == "notable"
    report = render.render_triage(r)
    section = report[report.index("dyn_ftrace records that matter"):report.index("Module TOCs")]
    text_ips = {int(m, 16) for m in re.findall(r"^(0x[0-9a-f]+)\s", section, re.M)}
    assert text_ips == {rec["ip"] for rec in doc["ftrace"]["records"]}


def test_stuck_records_include_the_livepatched_function():
    r = result("stuck")
    old = {f.old_addr: f.name for p in r.livepatch.patches for o in p.objects for f in o.funcs}
    named = {rec.symbol for rec in r.ftrace.records}
    assert set(old.values()) <= named


# --- guidance ------------------------------------------------------------------------------


def test_docs_findings_md_is_generated_from_the_guidance():
    with open(os.path.join(os.path.dirname(FIXTURES), "..", "docs", "findings.md")) as f:
        assert f.read() == guidance.findings_markdown(), \
            "docs/findings.md is stale: regenerate it from lpdebug.guidance.findings_markdown()"


def test_every_finding_kind_has_guidance_and_the_report_shows_it():
    from test_triage_schema import load_schema

    kinds = set(load_schema()["$defs"]["finding"]["properties"]["kind"]["enum"])
    assert kinds == set(guidance.GUIDANCE)
    report = render.render_triage(result("toc-crash"))
    for f in result("toc-crash").findings:
        assert f"{f.kind}: {guidance.next_step(f.kind)}" in report
        assert guidance.GUIDANCE[f.kind].severity == f.severity
