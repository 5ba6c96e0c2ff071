"""
The report's verdict, kernel log and naming on the testbed's real captures,
against what the guest itself said (truth/: dmesg, /proc/kallsyms, sysfs).
"""

import bisect
import json
import re
import subprocess
import sys

import pytest

from testbed import scenario, truth

pytestmark = pytest.mark.testbed


def open_capture(name):
    from lpdebug import target

    s = scenario(name)
    return target.open_vmcore(s["vmcore"], [s["vmlinux"], *s["modules"]],
                              default_debug_info=False)


def cli(name, *args):
    s = scenario(name)
    target = ["-c", s["vmcore"], "-s", s["vmlinux"]]
    for ko in s["modules"]:
        target += ["-s", ko]
    return subprocess.run([sys.executable, "-m", "lpdebug.commands.cli", args[0], *target,
                           *args[1:]], capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("name", ["settled", "settled-6.1"])
def test_kernel_log_is_the_guests_dmesg(name):
    from lpdebug import kernel
    from lpdebug.summary import strip_timestamp

    log = [strip_timestamp(line) for line in kernel.kernel_log(open_capture(name))]
    with open(truth(name, "dmesg")) as f:
        guest = f.read().splitlines()
    assert guest and log[:len(guest)] == guest


def _kallsyms(name):
    """{address: {names}} of the text symbols in the guest's /proc/kallsyms."""
    out = {}
    with open(truth(name, "kallsyms")) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[1] in "tTwW":
                out.setdefault(int(parts[0], 16), set()).add(parts[2])
    return out


@pytest.mark.parametrize("name", ["settled", "settled-6.1"])
def test_records_are_named_as_kallsyms_names_them_and_unnamed_past_the_end(name):
    from lpdebug import ftrace

    prog = open_capture(name)
    kallsyms = _kallsyms(name)
    starts = sorted(kallsyms)
    records = ftrace.ftrace_records(prog, True)
    past = 0
    for r in records:
        nearest = kallsyms[starts[bisect.bisect_right(starts, r.ip) - 1]]
        assert (r.symbol or r.past_end_of) in nearest, (hex(r.ip), r.symbol, r.past_end_of, nearest)
        if r.past_end_of is not None:
            sym = prog.symbol(r.past_end_of)
            assert r.symbol is None and r.ip > sym.address + sym.size
            past += 1
        elif r.symbol is not None:
            sym = max((s for s in prog.symbols(r.symbol) if s.address <= r.ip),
                      key=lambda s: s.address)
            assert r.ip <= sym.address + sym.size or not sym.size
    assert past > 0  # the weak syscall stubs and friends (the sample has 100)


def test_stuck_transition_is_one_finding_and_exit_1():
    proc = cli("stuck", "triage", "--json")
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    blocked = [f for f in doc["findings"] if f["kind"] == "transition_blocked"]
    assert len(blocked) == 1, doc["findings"]
    pid = scenario("stuck")["lpd_pids"]["lpd_stuck"]
    assert [(b["pid"], b["comm"], b["function"]) for b in blocked[0]["transition"]["blocking"]] \
        == [(pid, "lpd_stuck", "lpd_stuck_func")]
    with open(truth("stuck", "sys_kernel_livepatch", blocked[0]["transition"]["patch"],
                    "transition")) as f:
        assert f.read().strip() == "1"
    assert doc["summary"]["transition"] == blocked[0]["transition"]["patch"]
    # how long it has been going, as the kernel counts it: failed tries (about one a second),
    # signal rounds every 15 of them, the queued klp_transition_work
    t = blocked[0]["transition"]
    assert t["attempts"] > 0 and t["signals_sent"] == (t["attempts"] - 1) // 15
    assert t["retry_pending"] is True and isinstance(t["next_try_jiffies"], int)


def test_toc_crash_summary_from_the_log_buffer():
    proc = cli("toc-crash", "triage", "--json")
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    s = doc["summary"]
    pid = scenario("toc-crash")["lpd_pids"]["lpd_crash"]
    assert s["crashed"] and s["crashed_task"]["pid"] == pid
    assert s["crashed_task"]["comm"] == "lpd_crash"
    assert s["crash_message"].startswith(("BUG:", "Oops:", "Kernel panic")), s
    assert doc["kernel_log"]["error"] is None
    assert any(re.search(rf"PID: {pid} .*Comm: lpd_crash", line)
               for line in doc["kernel_log"]["tail"]), doc["kernel_log"]["tail"]
    text = cli("toc-crash", "triage").stdout
    summary = text[text.index("Summary\n-------\n"):].splitlines()
    assert summary[3].startswith("CRASHED: " + s["crash_message"]), summary
