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
from lpdebug import report, schema
from lpdebug.summary import crash_report, strip_timestamp
from test_fixtures import FIXTURES, NAMES, truth

pytestmark = pytest.mark.fixtures

_results = {}


def result(name):
    if name not in _results:
        _results[name] = report.triage(sample.open_fixture(os.path.join(FIXTURES, name)))
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
    # the result line first (complete or not, findings), then the verdict
    assert text.startswith("Result: ")
    assert text.splitlines()[2:4] == ["Summary", "-------"]
    summary = text.split("\n\n", 2)[1].splitlines()[2:]
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


@pytest.mark.parametrize("name", [n for n in NAMES if not n.startswith("stuck")])
def test_no_transition_blocked_without_a_transition(name):
    assert not [f for f in result(name).findings if f.kind == "transition_blocked"]


# --- compact JSON --------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_default_json_is_under_200_kb_and_lists_the_texts_records(name):
    r = result(name)
    text = schema.dumps(r)
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


# --- naming past a symbol's end ------------------------------------------------------------

# arch/powerpc/include/asm/ftrace.h (6.12, -mprofile-kernel): ftrace marks a record DISABLED when
# kallsyms names it at an offset beyond this (test_for_valid_rec(): "Weak functions can cause
# invalid addresses"). 6.1 has no such limit on powerpc.
FTRACE_MCOUNT_MAX_OFFSET = 16

_records = {}


def all_records(name):
    if name not in _records:
        from lpdebug import ftrace
        from lpdebug.symbols import Symbolizer

        prog = sample.open_fixture(os.path.join(FIXTURES, name))
        _records[name] = (ftrace.ftrace_records(prog, True), Symbolizer(prog), prog)
    return _records[name]


@pytest.mark.parametrize("name", NAMES)
def test_records_past_their_symbols_end_are_unnamed(name):
    records, sym, prog = all_records(name)
    for r in records:
        info = sym.nearest(r.ip)
        if r.symbol is not None:
            # never named after a symbol whose ELF size it lies beyond
            assert info is not None and info.name == r.symbol and info.offset <= info.size, \
                (hex(r.ip), r.symbol)
        elif r.past_end_of is not None:
            assert info.name == r.past_end_of and info.offset > info.size
    if not result(name).kernel.release.startswith("6.12"):
        return
    # The kernel's own view: ftrace disabled exactly the records kallsyms names at an offset
    # past FTRACE_MCOUNT_MAX_OFFSET, and every one of them lies past its symbol's end.
    disabled = {r.ip for r in records if "DISABLED" in r.flags}
    far = {r.ip for r in records
           if sym.nearest(r.ip) is not None and sym.nearest(r.ip).offset > FTRACE_MCOUNT_MAX_OFFSET}
    assert disabled == far
    unnamed = {r.ip for r in records if r.symbol is None}
    assert disabled <= unnamed


def test_sample_sys_acct_rows_past_its_16_bytes_are_unnamed():
    records, sym, prog = all_records("settled")
    acct = prog.symbol("sys_acct")
    assert acct.size == 16
    past = [r for r in records if r.past_end_of == "sys_acct"]
    assert len(past) == 3 and all(r.ip > acct.address + acct.size for r in past)
    assert all(r.flags == ["DISABLED"] and r.symbol is None for r in past)
    assert [r.symbol for r in records if r.ip == acct.address + 4] == ["sys_acct"]
    assert sym.describe(past[0].ip) == f"sys_acct+{past[0].ip - acct.address:#x} (past end)"
    assert sum(1 for r in records if r.past_end_of and r.flags == ["DISABLED"]) == 98


def test_summary_of_a_long_oops_stays_within_15_lines():
    # A crashed result with every part of the summary filled: the text never grows past 15
    # lines, and the crashed task's frames are its true backtrace's innermost ones.
    r = result("toc-crash")
    log = ["[    1.000000] BUG: Unable to handle kernel data access on read at 0xc00000deadb08000"]
    log += [f"[    1.0000{i:02d}] line {i}" for i in range(80)]
    log += ["[    2.000000] Kernel panic - not syncing: Fatal exception"]
    from lpdebug.summary import summarize

    s = summarize(r, log, coverage="coverage: vmlinux and 4 modules with debug info")
    assert s.crash_lines == ["line 0", "line 1", "line 2"]
    assert s.panic_message == "Kernel panic - not syncing: Fatal exception"
    text = render.render_summary(s, r.kernel).splitlines()
    assert len(text) <= render.SUMMARY_MAX_LINES
    assert text[-1].startswith("coverage:")
    trace = next(t for t in r.tasks if t.crashed)
    assert len(s.crashed_task.top_frames) == min(5, len(trace.frames))
