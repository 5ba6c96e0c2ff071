# SPDX-License-Identifier: GPL-2.0-or-later
"""
lpdebug's drgn commands: registered through the drgn.plugins entry point,
run by drgn itself (``drgn -e`` and drgn's interactive REPL in a pseudo
terminal) on a testbed vmcore, with the same output as the lpdebug CLI.
"""

import importlib.metadata
import json
import logging
import os
import pty
import re
import select
import subprocess
import sys
import time

import pytest

from testbed import scenario
from test_cli import run_cli, target_args
from test_triage_schema import validate_triage

LP_COMMANDS = ["lppatches", "lpops", "lprecords", "lpbt", "lpstacks", "lptoc", "lptriage"]
DRGN = os.path.join(os.path.dirname(sys.executable), "drgn")


def drgn_args(name):
    s = scenario(name)
    args = [DRGN, "-q", "-c", s["vmcore"], "-s", s["vmlinux"]]
    for ko in s["modules"]:
        args += ["-s", ko]
    return args


def drgn_exec(name, code, timeout=600):
    return subprocess.run(drgn_args(name) + ["-e", code], capture_output=True, text=True,
                          timeout=timeout)


def drgn_repl(name, lines, timeout=300):
    """Type ``lines`` into drgn's interactive REPL (in a pseudo terminal); all it printed."""
    master, slave = pty.openpty()
    env = dict(os.environ, TERM="dumb", PYTHON_BASIC_REPL="1")
    proc = subprocess.Popen(drgn_args(name), stdin=slave, stdout=slave, stderr=slave, env=env,
                            close_fds=True, start_new_session=True)
    os.close(slave)
    try:
        for line in list(lines) + ["exit()"]:
            os.write(master, (line + "\n").encode())
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the REPL exited and the pty closed
                    break
                if not data:
                    break
                out += data
            elif proc.poll() is not None:
                break
        else:
            raise AssertionError("drgn REPL did not finish:\n" + out.decode(errors="replace"))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        os.close(master)
    return out.decode(errors="replace").replace("\r", "")


# --- no testbed needed ----------------------------------------------------------------


def test_entry_point_is_registered():
    eps = importlib.metadata.entry_points(group="drgn.plugins")
    assert any(ep.name == "lpdebug" and ep.value == "lpdebug.commands.drgn_plugin" for ep in eps)


@pytest.mark.needs_drgn("commands")
def test_commands_are_registered_with_help():
    from drgn.commands import DEFAULT_COMMAND_NAMESPACE

    import lpdebug.commands.drgn_plugin  # noqa: F401 (registers the commands)

    registered = DEFAULT_COMMAND_NAMESPACE._commands
    for name in LP_COMMANDS:
        assert name in registered, name
        cmd = registered[name]
        assert cmd.description()
        assert "--help" in cmd.format_help()
        assert f"%{name}" in cmd.format_help()  # examples in drgn's syntax


def test_too_old_drgn_is_refused_with_a_clear_message(monkeypatch, caplog):
    import drgn

    from lpdebug.commands import drgn_plugin

    from lpdebug import drgn_compat

    monkeypatch.setattr(drgn, "__version__", "0.0.30")
    monkeypatch.setattr(drgn_compat, "programs_made_by_lpdebug", False)  # as in drgn's REPL
    with caplog.at_level(logging.WARNING, logger="drgn.plugins"):
        assert drgn_plugin._register() is False
    assert ("lpdebug commands not loaded: lpdebug needs drgn 0.0.31 or later, but drgn 0.0.30 is "
            "installed: pip install --upgrade 'drgn>=0.0.31'") in caplog.text


def test_too_old_drgn_note_is_left_out_when_lpdebug_made_the_program(monkeypatch, caplog):
    # drgn loads lpdebug's plugin when lpdebug's own CLI makes its Program: the note that the drgn
    # commands cannot load is for drgn's REPL, not a stray line on every `lpdebug` command.
    import drgn

    from lpdebug import drgn_compat
    from lpdebug.commands import drgn_plugin

    monkeypatch.setattr(drgn, "__version__", "0.0.30")
    monkeypatch.setattr(drgn_compat, "programs_made_by_lpdebug", True)
    with caplog.at_level(logging.WARNING, logger="drgn.plugins"):
        assert drgn_plugin._register() is False
    assert "not loaded" not in caplog.text


# --- on a testbed vmcore --------------------------------------------------------------


@pytest.mark.needs_drgn("commands")
def test_commands_return_the_exit_status(monkeypatch, capsys):
    from drgn.commands import run_command

    import lpdebug.commands.drgn_plugin  # noqa: F401 (registers the commands)
    from lpdebug import sample

    prog = sample.open_sample()
    assert run_command(prog, "lptriage") == 0
    from test_fixtures import fixture_pid

    assert run_command(prog, f"lpbt {fixture_pid('settled', 'lpd_lp_victim')}") == 0

    def fail(*args, **kwargs):
        raise RuntimeError("injected")

    monkeypatch.setattr("lpdebug.toc.module_tocs", fail)
    assert run_command(prog, "lptriage") == 3
    assert run_command(prog, "lptoc") == 3
    assert "[tocs] stage_failed" in capsys.readouterr().out


@pytest.mark.needs_drgn("commands")
@pytest.mark.testbed
def test_lptriage_json_equals_the_cli():
    drgn_run = drgn_exec("settled", "from drgn.commands import run_command\n"
                                    "run_command(prog, 'lptriage --json')")
    assert drgn_run.returncode == 0, drgn_run.stderr
    cli = run_cli("triage", "--json", *target_args("settled"))
    assert cli.returncode == 0, cli.stderr
    validate_triage(json.loads(drgn_run.stdout))
    # drgn's own CLI loaded the -s files, so the plugin sees them as found, not given: the one
    # difference the front ends may show, in the coverage's found_by
    def same(text):
        return text.replace('found_by": "search"', 'found_by": "given"')

    assert same(drgn_run.stdout) == same(cli.stdout)


@pytest.mark.needs_drgn("commands")
@pytest.mark.testbed
@pytest.mark.parametrize("command, cli_args", [
    ("lppatches", ["patches"]),
    ("lpops", ["ops"]),
    ("lprecords -f 'lpd_*'", ["records", "-f", "lpd_*"]),
    ("lptoc", ["toc"]),
])
def test_command_output_equals_the_cli(command, cli_args):
    drgn_run = drgn_exec("settled", "from drgn.commands import run_command\n"
                                    f"run_command(prog, {command!r})")
    assert drgn_run.returncode == 0, drgn_run.stderr
    cli = run_cli(*cli_args[:1], *target_args("settled"), *cli_args[1:])
    assert cli.returncode == 0, cli.stderr
    assert drgn_run.stdout == cli.stdout
    assert drgn_run.stdout.strip()


@pytest.mark.needs_drgn("commands")
@pytest.mark.testbed
def test_repl_session():
    pid = scenario("settled")["lpd_pids"]["lpd_lp_victim"]
    out = drgn_repl("settled", [f"%lpbt {pid}", "%lpstacks --help", "%lpbt 999999", "%help"])
    # the caller livepatch_handler hid, restored from the livepatch stack
    assert re.search(r"lpd_lp_thread\+\S+ \[lpd_victim\]\s+\S+\s+livepatch\b", out), out
    assert "usage: lpstacks [--json] [-h] PID|TASK" in out and "%lpstacks 42" in out
    assert "drgn: error: lpbt: no task with PID 999999" in out
    for name in LP_COMMANDS:
        assert f"\n  {name} " in out, name
    assert "Traceback" not in out


@pytest.mark.needs_drgn("commands")
@pytest.mark.testbed
def test_repl_output_equals_the_cli():
    pid = scenario("settled")["lpd_pids"]["lpd_lp_victim"]
    out = drgn_repl("settled", [f"%lpstacks {pid}"])
    cli = run_cli("stacks", *target_args("settled"), str(pid))
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.strip() in out
