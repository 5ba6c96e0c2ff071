"""
``bt`` takes its tasks the way crash(8) does: a PID (0: every CPU's idle
task), a task_struct address with or without ``0x``, ``-a`` (the task active
on every CPU, idle tasks included), ``-c CPU`` (``--cpu`` in the CLI, where
``-c`` is the core file), and nothing on a crash dump: the crashed task.
On the committed toc-crash fixture (a real kdump of a 2-CPU guest).
"""

import json
import os
import re
import subprocess
import sys

import pytest

from lpdebug import sample
from test_fixtures import FIXTURES

pytestmark = pytest.mark.fixtures

NAME = "toc-crash"


def meta():
    return sample.load_fixture(os.path.join(FIXTURES, NAME))["scenario"]


def bt(*args, name=NAME):
    paths = sample.fixture_paths(os.path.join(FIXTURES, name))
    target = ["-c", paths["vmcore"], "-s", paths["vmlinux"]]
    for ko in paths["modules"]:
        target += ["-s", ko]
    return subprocess.run([sys.executable, "-m", "lpdebug.commands.cli", "bt", *target, *args],
                          capture_output=True, text=True, timeout=900)


def headers(text):
    return re.findall(r"^(CRASHED )?PID (\d+) \((\S+)\) .*?(?: on CPU (\d+))?, task_struct (0x[0-9a-f]+)$",
                      text, re.M)


def test_no_argument_on_a_crash_dump_is_the_crashed_task():
    proc = bt()
    assert proc.returncode == 0, proc.stderr
    (crashed, pid, comm, cpu, _), = headers(proc.stdout)
    assert (crashed, int(pid), comm) == ("CRASHED ", meta()["lpd_pids"]["lpd_crash"], "lpd_crash")
    assert "lpd_crash_victim" in proc.stdout


def test_all_cpus_gives_each_cpus_active_task_idle_included():
    proc = bt("-a")
    assert proc.returncode == 0, proc.stderr
    found = headers(proc.stdout)
    assert [int(cpu) for _, _, _, cpu, _ in found] == list(range(meta()["ncpus"]))
    idle = [(pid, comm) for _, pid, comm, cpu, _ in found if pid == "0"]
    assert idle and all(comm == f"swapper/{cpu}" for (pid, comm), (_, _, _, cpu, _) in
                        zip(idle, [f for f in found if f[1] == "0"]))
    one = bt("--cpu", "1")
    assert one.returncode == 0, one.stderr
    assert headers(one.stdout) == [f for f in found if f[3] == "1"]


def test_pid_0_is_every_cpus_idle_task():
    proc = bt("0")
    assert proc.returncode == 0, proc.stderr
    found = headers(proc.stdout)
    assert len(found) == meta()["ncpus"]
    assert [comm for _, _, comm, _, _ in found] == [f"swapper/{i}" for i in range(meta()["ncpus"])]
    assert len({address for *_, address in found}) == len(found)


def test_bare_hex_is_a_task_struct_address():
    by_pid = bt(str(meta()["lpd_pids"]["lpd_crash"]))
    assert by_pid.returncode == 0, by_pid.stderr
    address = headers(by_pid.stdout)[0][4]
    for text in (address, address[2:]):
        proc = bt(text)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == by_pid.stdout


def test_json_has_its_own_schema():
    proc = bt("-a", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["schema"] == "lpdebug.bt/1"
    assert [t["on_cpu"] for t in doc["tasks"]] == list(range(meta()["ncpus"]))
    assert [t["crashed"] for t in doc["tasks"]].count(True) == 1


@pytest.mark.parametrize("args, fragment", [
    ((), "no crashed task"),
    (("--cpu", "9"), "CPU 9 is not online"),
    (("xyz",), "neither a PID nor a task_struct address"),
])
def test_bad_selection_is_one_line(args, fragment):
    proc = bt(*args, name="stuck")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and fragment in proc.stderr, proc.stderr


@pytest.mark.needs_drgn("commands")
def test_drgn_takes_crashs_dash_c(tmp_path):
    import lpdebug.commands.drgn_plugin  # noqa: F401 (registers %lpbt)
    from drgn.commands import run_command

    prog = sample.open_fixture(os.path.join(FIXTURES, NAME))
    out = tmp_path / "bt.txt"
    run_command(prog, f"lpbt -c 1 > {out}")
    assert out.read_text() == bt("--cpu", "1").stdout
