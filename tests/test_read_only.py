"""
Read-only, proven, for files: every command over a vmcore leaves the vmcore,
vmlinux and module files as they were: same content (sha256), same size, same
mtime. The committed real fixture in the fast tier; the full ``settled``
capture in the testbed tier. (A live guest's RAM, over QMP and over the
gdbstub: tests/test_live_churn.py.)
"""

import hashlib
import os
import shutil
import subprocess
import sys

import pytest

from lpdebug import sample
from testbed import REPO, scenario


def _state(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    st = os.stat(path)
    return digest.hexdigest(), st.st_size, st.st_mtime_ns


def _commands(pid):
    return [["patches"], ["ops", "--full"], ["records", "-a"], ["bt", str(pid)],
            ["stacks", str(pid)], ["toc"], ["triage"],
            ["triage", "--json", "--all-records", "--all-tasks"]]


def _assert_every_command_leaves_the_files(vmcore, vmlinux, modules, pid):
    files = [vmcore, vmlinux, *modules]
    before = {path: _state(path) for path in files}
    target = ["-c", vmcore, "-s", vmlinux] + [a for m in modules for a in ("-s", m)]
    for command in _commands(pid):
        proc = subprocess.run([sys.executable, "-m", "lpdebug.commands.cli", *command, *target],
                              capture_output=True, text=True, timeout=900, cwd=REPO)
        assert proc.returncode in (0, 1, 3), (command, proc.stderr)  # 2: an error
        assert proc.stdout.strip(), command
        after = {path: _state(path) for path in files}
        assert after == before, f"{command} changed {[p for p in files if after[p] != before[p]]}"


def test_commands_leave_the_fixture_files_as_they_were(tmp_path):
    paths = sample.sample_paths()
    # a private copy with an old mtime: a rewrite, even of equal bytes, would show
    copies = {}
    for key in ("vmcore", "vmlinux"):
        copies[key] = str(tmp_path / os.path.basename(paths[key]))
        shutil.copyfile(paths[key], copies[key])
    modules = []
    for m in paths["modules"]:
        modules.append(str(tmp_path / os.path.basename(m)))
        shutil.copyfile(m, modules[-1])
    for path in [copies["vmcore"], copies["vmlinux"], *modules]:
        os.utime(path, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    _assert_every_command_leaves_the_files(copies["vmcore"], copies["vmlinux"], modules,
                                      __import__("test_fixtures").fixture_pid("settled", "lpd_lp_victim"))


@pytest.mark.testbed
def test_commands_leave_a_full_capture_as_it_was():
    s = scenario("settled")
    _assert_every_command_leaves_the_files(s["vmcore"], s["vmlinux"], s["modules"],
                                           s["lpd_pids"]["lpd_lp_victim"])
