# SPDX-License-Identifier: GPL-2.0-or-later
"""
gdb's embedded Python loads lpdebug the way README.md says (site.addsitedir
of this interpreter's site-packages, then one import), registers the lp-*
commands with their help, and reports a missing target in one line.
No guest needed; tests/test_gdb_live.py runs the commands on one.
"""

import re
import subprocess
import sysconfig

import pytest

# gdb reads the memory for drgn (Program.set_linux_kernel_custom)
pytestmark = pytest.mark.needs_drgn("memory_readers")

COMMANDS = ["lp-patches", "lp-ops", "lp-records", "lp-bt", "lp-stacks", "lp-toc", "lp-triage"]


def gdb_batch(*commands):
    purelib = sysconfig.get_paths()["purelib"]
    argv = ["gdb-multiarch", "-nx", "-batch",
            "-ex", f"python import site; site.addsitedir({purelib!r})",
            "-ex", "python import lpdebug.commands.gdb"]
    for command in commands:
        argv += ["-ex", command]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300)


def test_gdb_loads_lpdebug_and_drgn_with_the_documented_line():
    proc = gdb_batch("python import drgn; print('drgn', drgn.__version__)",
                     "help user-defined", *[f"help {c}" for c in COMMANDS])
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "drgn 0." in proc.stdout
    for command in COMMANDS:
        assert f"{command} --" in proc.stdout or command in proc.stdout, command
    assert "usage: lp-records [-h] [-f PATTERN] [-m PATTERN] [-a]" in proc.stdout
    assert "examples:" in proc.stdout


def test_command_without_a_target_is_a_one_line_error():
    proc = gdb_batch("lp-bt 1")
    errors = [line for line in proc.stderr.splitlines() if line.startswith("lp-bt")]
    assert errors == ["lp-bt: gdb is not connected to a target: 'target remote :PORT' first"], \
        proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_arguments_print_usage_not_a_traceback():
    proc = gdb_batch("lp-records --bogus")
    assert "unrecognized arguments: --bogus" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_redirection_and_pipe_are_not_arguments(tmp_path):
    # "lp-triage --json > FILE" once failed with "unrecognized arguments: > FILE"; gdb's
    # lp-* commands take drgn's command-line syntax. Without a target they get as far as
    # needing one.
    out = tmp_path / "report.json"
    proc = gdb_batch(f"lp-triage --json > {out}", "lp-records -f 'msleep*' | grep msleep")
    assert "unrecognized arguments" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("lp-")]
    assert errors == ["lp-triage: gdb is not connected to a target: 'target remote :PORT' first",
                      "lp-records: gdb is not connected to a target: 'target remote :PORT' first"], \
        proc.stderr
    assert not out.exists()


def test_output_goes_to_a_file_or_through_a_pipe(tmp_path):
    # The delivery step every lp-* command ends with, in gdb itself (the live guest test runs
    # whole commands this way and compares the bytes with the CLI's).
    out = tmp_path / "out.txt"
    proc = gdb_batch(
        "python from drgn.commands import parse_shell_command as p",
        "python import lpdebug.commands.gdb as g",
        f"python c = p('--json > {out}'); g._deliver('lp-x', 'report\\n', c.redirections, c.pipeline)",
        f"python c = p('| tr a-z A-Z >> {out}'); g._deliver('lp-x', 'piped\\n', c.redirections, c.pipeline)",
        "python c = p('| tr a-z A-Z'); g._deliver('lp-x', 'to gdb\\n', c.redirections, c.pipeline)",
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    assert out.read_text() == "report\nPIPED\n"
    assert "TO GDB\n" in proc.stdout


def test_the_program_follows_gdbs_objfiles():
    """add-symbol-file after the program was built, and dropping the objfiles
    (symbol-file), make the next command build the program anew."""
    from lpdebug import sample

    paths = sample.sample_paths()
    ko = paths["modules"][0]
    show = ("python import lpdebug.commands.gdb as g; "
            "print('STATE', g._session.prog is not None, g._session.stale)")
    built = ("python import lpdebug.commands.gdb as g; "
             "g._session.prog, g._session.stale = object(), None")
    proc = gdb_batch(f"file {paths['vmlinux']}", built, show,
                     f"add-symbol-file {ko} 0", show,
                     built, "symbol-file", show)
    assert "Traceback" not in proc.stderr, proc.stderr
    states = [line for line in proc.stdout.splitlines() if line.startswith("STATE")]
    assert states[0] == "STATE True None", proc.stdout
    assert re.fullmatch(r"STATE True gdb added .*lpd_victim\.ko", states[1]), proc.stdout
    assert states[2] == "STATE True gdb dropped its objfiles", proc.stdout
