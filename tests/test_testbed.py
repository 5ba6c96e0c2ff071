# SPDX-License-Identifier: GPL-2.0-or-later
"""Checks of the real-kernel testbed manifest (vmcores/out/manifest.json, built by vmcores/build).

These tests FAIL (never skip) when the testbed is missing: run vmcores/build.
"""
import json
import os
import subprocess
import sys

import pytest

from testbed import MANIFEST, load_manifest, scenario

pytestmark = pytest.mark.testbed

# every scenario of the testbed issue
SCENARIOS = ["settled", "settled-6.1", "settled-64k", "settled-hash", "settled-64k-hash", "settled-6.1-hash",
             "stuck", "stacked", "toc-corrupt", "toc-crash", "nolivepatch",
             "settled-5.10", "stuck-5.10", "toc-corrupt-5.10", "toc-crash-5.10", "panic-5.10",
             "scale-tasks-1000", "scale-tasks-2500", "scale-tasks-5000", "scale-patches"]
LIVEPATCH_SCENARIOS = [s for s in SCENARIOS if s != "nolivepatch"]
# /proc/PID/stack is captured for a sample of their thousands of tasks only (and their kthreads are lpds_)
SAMPLED_SCENARIOS = ["scale-tasks-1000", "scale-tasks-2500", "scale-tasks-5000"]
INJECTED_SCENARIOS = ["toc-corrupt", "toc-crash", "toc-corrupt-5.10", "toc-crash-5.10"]
FIELDS = ["name", "kernel_release", "mmu", "page_size", "vmcore", "vmlinux", "modules", "vmcoreinfo", "truth",
          "qemu"]


def _nonempty(path):
    assert os.path.exists(path), "missing: %s" % path
    assert os.path.getsize(path) > 0, "empty: %s" % path


def test_manifest_exists():
    assert os.path.exists(MANIFEST), "%s is missing: run vmcores/build" % MANIFEST
    names = [s["name"] for s in load_manifest()["scenarios"]]
    missing = [s for s in SCENARIOS if s not in names]
    assert not missing, "scenarios missing from the manifest: %s (run vmcores/build %s)" % (
        missing, " ".join(missing))


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_files(name):
    s = scenario(name)
    for f in FIELDS:
        assert f in s, "%s: manifest field %s missing" % (name, f)
    assert s["mmu"] in ("radix", "hash")
    assert s["page_size"] in (4096, 65536)
    assert isinstance(s["qemu"], list) and s["qemu"][0].startswith("qemu-system-ppc64")
    for f in ("vmcore", "vmlinux", "vmcoreinfo"):
        _nonempty(s[f])
    assert s["modules"], "%s: no modules listed" % name
    for ko in s["modules"]:
        _nonempty(ko)
    assert os.path.isdir(s["truth"])


@pytest.mark.parametrize("name", SCENARIOS)
def test_truth_files(name):
    s = scenario(name)
    t = s["truth"]
    for f in ("enabled_functions", "modules", "vmcoreinfo"):
        _nonempty(os.path.join(t, f))
    if name in LIVEPATCH_SCENARIOS:
        d = os.path.join(t, "sys_kernel_livepatch")
        assert os.path.isdir(d) and os.listdir(d), "%s: sys_kernel_livepatch empty" % name
        _nonempty(os.path.join(t, "touched_functions") if s["kernel_release"].startswith("6.12")
                  else os.path.join(t, "enabled_functions"))
    secs = os.path.join(t, "sections")
    mods = os.listdir(secs)
    assert mods, "%s: no module sections" % name
    for m in mods:
        files = os.listdir(os.path.join(secs, m))
        assert files, "%s: no sections of %s" % (name, m)
        for f in files:
            _nonempty(os.path.join(secs, m, f))
    tasks = os.path.join(t, "tasks")
    pids = os.listdir(tasks)
    assert len(pids) > 10, "%s: only %d tasks" % (name, len(pids))
    for p in pids:
        for f in ("comm", "stat"):
            _nonempty(os.path.join(tasks, p, f))
        assert name in SAMPLED_SCENARIOS or os.path.exists(os.path.join(tasks, p, "stack")), (
            "%s: tasks/%s/stack missing" % (name, p))
    if name in SAMPLED_SCENARIOS:
        sample = [p for p in pids if os.path.exists(os.path.join(tasks, p, "stack"))]
        # the guest spawns tasks until the kernel counts N (nr_threads); an idle kworker may exit after
        assert len(sample) >= 200 and len(pids) >= int(name.rsplit("-", 1)[1]) - 5, (len(sample), len(pids))
    # every lpd_ kthread (sampled lpds_ kthread) has a non-empty stack before and after function_graph
    lpd = [p for p in pids if open(os.path.join(tasks, p, "comm")).read().startswith(
        "lpds_" if name in SAMPLED_SCENARIOS else "lpd_") and os.path.exists(os.path.join(tasks, p, "stack"))]
    if name in LIVEPATCH_SCENARIOS:
        assert lpd, "%s: no lpd_ kthread in the ground truth" % name
    for p in lpd:
        _nonempty(os.path.join(tasks, p, "stack"))
        _nonempty(os.path.join(tasks, p, "stack.nofgraph"))
    # kthreads (the swapper's children) have a stack.nofgraph when they existed before function_graph
    assert any(os.path.exists(os.path.join(tasks, p, "stack.nofgraph")) for p in pids)
    if name in INJECTED_SCENARIOS:
        _nonempty(os.path.join(t, "injected.json"))
        recs = json.load(open(os.path.join(t, "injected.json")))
        kinds = sorted(r["kind"] for r in recs)
        want = ["frame_toc", "livepatch_stack_toc"] if name.startswith("toc-corrupt") else ["frame_toc"]
        assert kinds == want, kinds
        for r in recs:
            for k in ("pid", "slot_address", "expected_toc", "written_value"):
                assert k in r
            assert r["expected_toc"] != r["written_value"]


def test_vmcoreinfo_matches_truth():
    for s in load_manifest()["scenarios"]:
        a = open(s["vmcoreinfo"]).read()
        assert "OSRELEASE=%s" % s["kernel_release"] in a
        assert "PAGESIZE=%d" % s["page_size"] in a


OPEN = r'''
import sys, drgn
prog = drgn.Program()
prog.set_core_dump(sys.argv[1])
prog.load_debug_info([sys.argv[2]])
print(prog["init_task"].comm.string_().decode())
'''


@pytest.mark.parametrize("name", SCENARIOS)
def test_vmcore_opens_in_drgn(name):
    s = scenario(name)
    # a subprocess: libdrgn keeps a vmcore's memory mapped, and some tests run many programs
    r = subprocess.run([sys.executable, "-c", OPEN, s["vmcore"], s["vmlinux"]], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=300)
    assert r.returncode == 0, r.stdout
    assert r.stdout.strip().splitlines()[-1] == "swapper/0", r.stdout
