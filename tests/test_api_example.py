# SPDX-License-Identifier: GPL-2.0-or-later
"""
The Python API example of README.md, extracted and run as a user would run
it, on the testbed's settled vmcore; its output is checked against the
guest's own sysfs view.
"""

import json
import os
import re
import subprocess
import sys

import pytest

from testbed import scenario, truth
from test_triage_schema import validate_triage

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = "<!-- api-example:"


def readme_example():
    with open(os.path.join(REPO, "README.md")) as f:
        text = f.read()
    at = text.index(MARKER)
    match = re.compile(r"```python\n(.*?)```", re.S).search(text, at)
    assert match, "README.md has no python block after the api-example marker"
    return match.group(1)


def test_readme_has_the_example():
    code = readme_example()
    compile(code, "README.md", "exec")
    assert "import lpdebug" in code and "lpdebug.triage(prog)" in code


@pytest.mark.testbed
def test_readme_api_example_runs(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(readme_example())
    s = scenario("settled")
    proc = subprocess.run([sys.executable, str(script), s["vmcore"], s["vmlinux"], *s["modules"]],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout

    sysfs = truth("settled", "sys_kernel_livepatch")
    for name in sorted(os.listdir(sysfs)):
        with open(os.path.join(sysfs, name, "enabled")) as f:
            enabled = f.read().strip() == "1"
        assert re.search(rf"^patch {re.escape(name)}: enabled={enabled} funcs=\S+", out, re.M), name
    # init sleeps at the same point as before function_graph was switched on:
    # the kernel's stack of then is the oracle (it omits scheduler functions)
    init = re.search(r"^init: (.*)$", out, re.M)
    assert init, out
    shown = init.group(1).split(" <- ")
    with open(truth("settled", "tasks", "1", "stack.nofgraph")) as f:
        oracle = [line.split("] ", 1)[1].split("+")[0] for line in f if "] 0x" not in line]
    it = iter(shown)
    assert oracle and all(name in it for name in oracle), (oracle, shown)

    pid = s["lpd_pids"]["lpd_lp_victim"]
    victim = re.search(rf"^{pid} lpd_lp_victim: (.*)$", out, re.M)
    assert victim and "lpd_lp_thread" in victim.group(1), out
    assert re.search(r"^0 findings, 0 things not checked$", out, re.M), out

    with open(tmp_path / "report.json") as f:
        doc = json.load(f)
    validate_triage(doc)
    assert [t["pid"] for t in doc["tasks"]] == sorted(t["pid"] for t in doc["tasks"])
