# SPDX-License-Identifier: GPL-2.0-or-later
"""
lpdebug on the POWER host itself (issue 15): the ``onhost`` scenario and the ppc64le drgn wheel.

``vmcores/build onhost`` boots the settled kernel with an initramfs of Debian's ppc64el python3.11, the
drgn wheel cross-built from the PyPI sdist (``vmcores/build --drgn-wheel``), pyelftools, tabulate and
lpdebug from this working tree. The guest collects its ground truth first, as every scenario does, then
runs as root ``lpdebug triage -k --json`` with no ``-s`` (debug info laid out where a distribution puts
it), ``lpdebug bt --json PID`` and ``%lptriage`` typed into ``drgn -k``; the outputs come back with the
truth (``truth/onhost/``). The checks hold them against the kernel's own views.

The boot-free check runs the same ppc64el python3.11 on this host under qemu-user, with the cross-built
drgn and lpdebug from the working tree, on the committed settled fixture: its JSON must equal the host's.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Dict, Set

import pytest

from testbed import MANIFEST, scenario, truth

pytestmark = pytest.mark.testbed

NAME = "onhost"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def onhost() -> dict:
    s = scenario(NAME)
    assert "onhost" in s, f"{NAME} in {MANIFEST} lacks its onhost fields: run vmcores/build {NAME}"
    return s["onhost"]


def output(name: str) -> str:
    path = truth(NAME, "onhost", name)
    assert os.path.exists(path), f"the guest sent no {name}"
    with open(path, errors="replace") as f:
        return f.read()


def guest_doc() -> dict:
    return json.loads(output("triage.json"))


def truth_files() -> Dict[str, bytes]:
    """{relative path: content} of the truth (None for a directory), as tests/test_fixtures.py reads it."""
    root = scenario(NAME)["truth"]
    files: Dict[str, bytes] = {}
    for d, dirs, names in os.walk(root):
        for n in dirs:
            files[os.path.relpath(os.path.join(d, n), root)] = None  # type: ignore[assignment]
        for n in names:
            with open(os.path.join(d, n), "rb") as f:
                files[os.path.relpath(os.path.join(d, n), root)] = f.read()
    return files


def pids(text: str) -> Set[int]:
    """Pids of an `echo /proc/[0-9]*` line."""
    return {int(p.rsplit("/", 1)[1]) for p in text.split()}


# --- the guest's own run ------------------------------------------------------------


def test_triage_in_the_guest_exits_0_with_no_errors():
    assert output("triage.rc").strip() == "0", output("triage.err")[-2000:]
    assert "Traceback" not in output("triage.err"), output("triage.err")
    doc = guest_doc()
    assert doc["diagnostics"] == []
    assert doc["coverage"]["errors"] == [] and doc["coverage"]["modules_without_debug_info"] == []
    for section in ("kernel", "ftrace", "livepatch", "tocs"):
        assert doc[section]["diagnostics"] == [], section
    assert doc["kernel"]["release"] == output("../uname_r").strip()


def test_debug_info_found_where_a_distribution_puts_it():
    """No -s: drgn's own search found vmlinux and every loaded module, which the guest holds only in
    /usr/lib/debug/lib/modules/RELEASE/ and /lib/modules/RELEASE/extra/."""
    cov = guest_doc()["coverage"]
    assert (cov["vmlinux_debug_file"], cov["vmlinux_found_by"]) == ("vmlinux", "search"), cov
    loaded = {line.split()[0] for line in output("../modules").splitlines()}
    assert loaded and {m["name"] for m in cov["modules"]} == loaded
    for m in cov["modules"]:
        assert (m["debug_file"], m["found_by"], m["names_from"]) == (
            m["name"].replace("_", "-") + ".ko" if m["name"] == "livepatch_sample" else m["name"] + ".ko",
            "search", "debug_info"), m


def test_patches_and_funcs_equal_sysfs():
    from test_fixtures import _sysfs_patches

    want = _sysfs_patches(truth_files())
    assert want, "the truth holds no livepatch"
    got = {p["name"]: p for p in guest_doc()["livepatch"]["patches"]}
    assert set(got) == set(want)
    for pname, w in want.items():
        g = got[pname]
        for attr in ("enabled", "transition", "replace"):
            assert int(g[attr]) == int(w[attr]), (pname, attr)
        gobjs = {(o["name"] or "vmlinux"): o for o in g["objects"]}
        assert set(gobjs) == set(w["objects"]), pname
        for oname, wo in w["objects"].items():
            assert int(gobjs[oname]["patched"]) == int(wo["patched"]), (pname, oname)
            assert {(f["name"], f["sympos"] or 1) for f in gobjs[oname]["funcs"]} == wo["funcs"], (pname, oname)


def test_records_equal_enabled_functions():
    """The records the report shows (its notable selection) are lines of tracefs enabled_functions with
    the same refcount and IPMODIFY flag, and every IPMODIFY line (a livepatch's) is among them."""
    import collections

    from test_fixtures import _enabled_functions

    lines = collections.Counter(_enabled_functions(output("../enabled_functions")))
    ftrace = guest_doc()["ftrace"]
    assert ftrace["selection"] == "notable"
    records = collections.Counter((r["symbol"] or r["past_end_of"], r["module"], r["refcount"],
                                   "IPMODIFY" in r["flags"]) for r in ftrace["records"] if r["refcount"])
    assert records and not records - lines, sorted((records - lines).items())[:10]
    ipmodify = collections.Counter({k: n for k, n in lines.items() if k[3]})
    assert ipmodify and not ipmodify - records, sorted((ipmodify - records).items())
    assert ftrace["total_records"] >= sum(lines.values())


def test_task_list_is_the_kernels_plus_lpdebug_itself():
    """The tasks lpdebug listed are the guest's, as /proc listed them just before and just after it ran,
    plus the idle tasks (pid 0, which /proc does not list) and lpdebug's own process: every task alive both
    times is listed, every task listed was alive at one of the two times or belongs to lpdebug. lpdebug's
    reading thread runs on a CPU, so it has no saved stack: listed without frames, and nothing missing."""
    tasks = guest_doc()["tasks"]
    listed = {t["pid"]: t for t in tasks if t["pid"] != 0}
    idle = [t for t in tasks if t["pid"] == 0]
    assert len(idle) == 2 and all(t["comm"].startswith("swapper/") for t in idle), idle
    before, after = pids(output("pids.before")), pids(output("pids.after"))
    lpdebug = int(output("lpdebug.pid"))
    assert lpdebug in listed, "lpdebug's own process is not in its task list"
    assert lpdebug not in before | after
    me = listed[lpdebug]
    assert me["comm"] == "lpdebug" and me["on_cpu"] is not None, me["comm"]
    assert me["frames"] == [] and me["diagnostics"] == [], me
    missing = (before & after) - set(listed)
    assert not missing, f"alive before and after, not listed: {sorted(missing)}"
    others = set(listed) - before - after - {lpdebug}
    # lpdebug's other threads (drgn's OpenMP workers) come right after it; nothing else may be new
    assert all(lpdebug < p <= lpdebug + 8 and listed[p]["comm"] == "lpdebug" for p in others), \
        {p: listed[p]["comm"] for p in others}


HOOKED = "the hidden caller's LR was hooked: no independent name"


def kernel_view(trace):
    """The kernel's view of a task's true backtrace, as test_backtrace_testbed.oracle_frames gives it, or,
    where the caller that livepatch_handler hides had its return hooked by the graph tracer (the
    livepatch stack then holds return_to_handler), that view with None at the hidden caller."""
    import test_backtrace_testbed as bt

    expected, kind = bt.oracle_frames(NAME, trace)
    if expected is not None or kind != HOOKED:
        return expected, kind
    # oracle_frames got past its alignment and movement checks before giving up on the name
    entries = bt.parse_stack(bt.read_truth(NAME, "tasks", str(trace.pid), "stack.nofgraph"))[1:]
    return [None if e[0] == "livepatch_handler" else e for e in entries], kind


def test_lpd_tasks_true_backtraces_equal_the_kernels_view():
    """The lpd_* kthreads' true backtraces as lpdebug printed them in the guest equal the kernel's view
    (/proc/PID/stack, with lpdebug's known ppc64 blind spots handled as in test_backtrace_testbed.py:
    the switch frame's stale LR dropped, scheduler functions dropped, livepatch_handler replaced by the
    caller saved in the livepatch stack). Where that caller's saved LR is itself hooked, the guest's frame
    there must come from the livepatch stack and return right after a call of a function a klp_func
    replaces (read from the capture taken after the run, as test_livepatch_callers_call_the_patched_function
    checks it)."""
    import test_backtrace_testbed as bt

    prog = bt.program(NAME)
    ranges = bt._sched_ranges(prog)
    olds = {old for old, _ in bt._klp_old_and_new(prog)}
    listed = {t["pid"]: t for t in guest_doc()["tasks"]}
    lpd = scenario(NAME)["lpd_pids"]
    assert {"lpd_lp_victim", "lpd_stub_sleep"} <= set(lpd)
    compared = 0
    for trace in bt.traces(NAME):
        if trace.comm not in lpd:
            continue
        expected, kind = kernel_view(trace)
        assert expected is not None, f"{trace.comm}: {kind}"
        frames = [f for f in listed[trace.pid]["frames"]
                  if not any(start <= f["pc"] < end for start, end in ranges)]
        ours = [(f["symbol"], f["offset"], f["module"]) for f in frames]
        assert len(ours) == len(expected), f"{trace.comm}: guest {ours} != kernel {expected}"
        for frame, got, want in zip(frames, ours, expected):
            if want is None:
                assert frame["source"] == "livepatch", (trace.comm, frame)
                assert bt._called_from(prog, frame["pc"]) in olds | {o + 8 for o in olds}, (trace.comm, got)
            else:
                # where a hooked return hides the oracle's offset, its function and module (as there)
                assert bt.same_frames([got], [want]), f"{trace.comm}: guest {ours} != kernel {expected}"
        compared += 1
    assert compared == len(lpd)


def test_bt_in_the_guest_shows_the_hidden_caller():
    """`lpdebug bt --json PID` of lpd_lp_victim: exit 0, and the victim's own function, hidden from
    /proc/PID/stack behind livepatch_handler, is there, restored from the livepatch stack."""
    assert output("bt.rc").strip() == "0", output("bt.err")
    doc = json.loads(output("bt.json"))
    (task,) = doc["tasks"]
    assert task["pid"] == int(output("bt.pid")) == scenario(NAME)["lpd_pids"]["lpd_lp_victim"]
    frames = [(f["symbol"], f["module"], f["source"]) for f in task["frames"]]
    assert ("lpd_lp_thread", "lpd_victim", "livepatch") in frames, frames
    triage_task = next(t for t in guest_doc()["tasks"] if t["pid"] == task["pid"])
    assert task["frames"] == triage_task["frames"]


def test_lptriage_runs_in_drgns_repl():
    """`%lptriage` typed into `drgn -k` (drgn's REPL, lpdebug registered through drgn.plugins): the
    report names every patch sysfs has, and no error or traceback."""
    text = output("repl.txt")
    assert output("repl.rc").strip() == "0", text[-3000:]
    assert "%lptriage" in text
    assert "Traceback" not in text and "error:" not in text.lower(), text[-3000:]
    for patch in os.listdir(truth(NAME, "sys_kernel_livepatch")):
        assert re.search(r"\b%s\b" % re.escape(patch), text), patch


def test_guest_timings():
    """Boot, python start, drgn import, debug-info load and triage were timed in the guest (printed)."""
    spans = {}
    for line in output("timings").splitlines():
        name, *values = line.split()
        spans[name] = [float(v) for v in values]
    drgn = json.loads(output("drgn_timing.json"))
    report = {"boot": spans["boot"][0], "python_start": spans["python_start"][1] - spans["python_start"][0],
              "drgn_import": drgn["drgn_import"], "debug_info_load": drgn["debug_info_load"],
              "triage": spans["triage"][1] - spans["triage"][0], "bt": spans["bt"][1] - spans["bt"][0],
              "repl_lptriage": spans["repl"][1] - spans["repl"][0]}
    print("onhost guest timings (s):", json.dumps({k: round(v, 1) for k, v in report.items()}))
    assert drgn["drgn"] == "0.3.0"
    assert all(v > 0 for v in report.values()), report


# --- boot-free: the ppc64le build on this host under qemu-user ------------------------


def ppc_python(*args: str, **kw) -> subprocess.CompletedProcess:
    """Debian's ppc64el python3.11 of the onhost userland, on this host under qemu-user, with lpdebug from
    this working tree first on its path (the cross-built drgn is in the userland's site-packages)."""
    o = onhost()
    env = dict(os.environ, **o["ppc_python_env"], PYTHONPATH=REPO)
    return subprocess.run(o["ppc_python"] + list(args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=600, **kw)


def test_wheel_imports_under_qemu_user():
    """The cross-built wheel, unpacked, imports with the ppc64el python3.11: a ppc64le _drgn."""
    o = onhost()
    assert o["drgn_wheel"].endswith("-cp311-cp311-linux_ppc64le.whl")
    r = ppc_python("-c", "import drgn, _drgn, platform, sys; print(drgn.__version__, platform.machine(), "
                         "_drgn.__file__, sys.version_info[:2])",
                   cwd="/")
    assert r.returncode == 0, r.stderr
    version, machine, path, *_ = r.stdout.split()
    assert (version, machine) == ("0.3.0", "ppc64le")
    assert path.endswith("_drgn.cpython-311-powerpc64le-linux-gnu.so")


def test_ppc64le_build_triages_the_sample_as_x86_does():
    """The settled fixture (the bundled sample), triaged by lpdebug of this working tree with the
    ppc64el python3.11 and the cross-built drgn under qemu-user, gives the JSON the host's drgn gives."""
    args = ["-m", "lpdebug.commands.cli", "triage", "--sample", "--json", "--all-records"]
    host = subprocess.run([sys.executable] + args, env=dict(os.environ, PYTHONPATH=REPO), cwd="/",
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=600)
    ppc = ppc_python(*args, cwd="/")
    assert ppc.returncode == host.returncode, ppc.stderr[-2000:]
    host_doc, ppc_doc = json.loads(host.stdout), json.loads(ppc.stdout)
    assert host_doc["ftrace"]["records"], "the sample has records"
    assert ppc_doc == host_doc
