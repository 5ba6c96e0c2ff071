# SPDX-License-Identifier: GPL-2.0-or-later
"""
``lpdebug batch`` over every capture of the testbed (raw and makedumpfile-derived),
listed in a JSON-lines manifest: each line's triage document must be the one
``lpdebug triage --json`` gives for that vmcore alone.
"""

import json
import os
import re
import subprocess
import sys

import pytest

import lpdebug
from testbed import load_manifest

pytestmark = pytest.mark.testbed


def test_batch_over_the_testbed_equals_each_vmcores_triage(tmp_path):
    scenarios = load_manifest()["scenarios"]
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps({"vmcore": s["vmcore"], "symbols": [s["vmlinux"], *s["modules"]]}) + "\n"
                                for s in scenarios))
    out = tmp_path / "results.jsonl"
    proc = subprocess.run([sys.executable, "-m", "lpdebug.commands.cli", "batch", str(manifest), "--out", str(out),
                           "--jobs", "2", "--no-default-debug-info"], capture_output=True, text=True, timeout=3600)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = {line["path"]: line for line in map(json.loads, out.read_text().splitlines())}
    assert sorted(lines) == sorted(os.path.abspath(s["vmcore"]) for s in scenarios)
    worst = 0
    for s in scenarios:
        prog = lpdebug.open_vmcore(s["vmcore"], [s["vmlinux"], *s["modules"]], default_debug_info=False)
        result = lpdebug.triage(prog)
        line = lines[os.path.abspath(s["vmcore"])]
        assert line["triage"] == json.loads(lpdebug.dumps(result)), s["name"]
        assert line["exit_status"] == lpdebug.exit_status(result), s["name"]
        worst = max(worst, {0: 0, 1: 1, 3: 3}[line["exit_status"]])
    assert proc.returncode == worst, proc.stderr
    assert re.search(rf"^total\s+{len(scenarios)}\s+\d+$", proc.stdout, re.M), proc.stdout
