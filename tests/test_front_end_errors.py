# SPDX-License-Identifier: GPL-2.0-or-later
"""
Damaged input is one clear line in every front end, decided in one place
(:func:`lpdebug.errors.damaged_input`): the CLI, drgn's ``%lp*`` commands and
gdb's ``lp-*`` commands.

The real case: a module .ko whose first .rela.debug_info entry names a symbol past
its symbol table, handed to drgn through ``Module.try_file`` as drgn's REPL (or
gdb's objfiles) would. drgn indexes it lazily, and every lookup of the program
fails from then on with ``BadDataError``. The commands name the file and its module
instead of failing every stage. What no committed fixture reaches (drgn's
MemoryError and OverflowError on an impossible size mid-read) is injected.
"""

import os
import shutil
import subprocess
import sysconfig

import drgn
import pytest

from lpdebug import sample
from lpdebug.errors import DamagedInput, LpdebugError, damaged_input

pytestmark = pytest.mark.fixtures

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(REPO, "vmcores", "fixtures", "stuck")


@pytest.fixture(scope="module")
def stuck():
    return sample.fixture_paths(FIXTURE)


@pytest.fixture(scope="module")
def damaged_ko(stuck, tmp_path_factory):
    from elftools.elf.elffile import ELFFile

    module = next(m for m in stuck["modules"] if os.path.basename(m) == "lpd_victim.ko")
    path = str(tmp_path_factory.mktemp("damaged") / "lpd_victim.ko")
    shutil.copyfile(module, path)
    with open(path, "rb") as f:
        rela = ELFFile(f).get_section_by_name(".rela.debug_info")["sh_offset"]
    with open(path, "r+b") as f:
        f.seek(rela + 8)  # r_info: a symbol index far past the symbol table
        f.write((0xFFFFFF00000001).to_bytes(8, "little"))
    return path


# Builds, in any Python with drgn, the program drgn's REPL would have: vmlinux, then the
# damaged module file given to its loaded module (drgn indexes it at the first lookup).
POISONED = """
import drgn
prog = drgn.Program()
prog.set_core_dump({vmcore!r})
prog.load_debug_info([{vmlinux!r}])
for module, _ in prog.loaded_modules():
    if module.name == "lpd_victim" and {ko!r}:
        module.try_file({ko!r})
"""


def _poisoned(stuck, ko):
    scope = {}
    exec(POISONED.format(vmcore=stuck["vmcore"], vmlinux=stuck["vmlinux"], ko=ko), scope)
    return scope["prog"]


# drgn.BadDataError is drgn 0.3.0's; older ones raise plain exceptions there.
NEEDS_BAD_DATA = pytest.mark.needs_drgn("0.3.0", "drgn.BadDataError appears in drgn 0.3.0")


def _bad_data(message):
    return drgn.BadDataError(message)


@pytest.mark.parametrize("make, words", [
    pytest.param(lambda: _bad_data("invalid ELF relocation symbol"), ["invalid ELF relocation symbol", "parse"],
                 marks=NEEDS_BAD_DATA),
    (MemoryError, ["MemoryError", "impossible"]),
    (lambda: OverflowError("int too large to convert"), ["OverflowError", "int too large", "impossible"]),
])
def test_damaged_input_is_classified_in_the_library(make, words):
    cause = make()
    damaged = damaged_input(cause)
    assert isinstance(damaged, DamagedInput) and isinstance(damaged, LpdebugError)
    assert damaged.cause is cause
    message = str(damaged)
    assert message.startswith("damaged input: ") and "give intact copies" in message
    assert "\n" not in message
    for word in words:
        assert word in message, message
    assert damaged_input(damaged) is damaged


@pytest.mark.parametrize("bug", [RuntimeError("a bug"), KeyError(3), AttributeError("x")])
def test_a_bug_is_no_damaged_input(bug):
    assert damaged_input(bug) is None


# --- the CLI -------------------------------------------------------------------------------------


@pytest.mark.parametrize("make, words", [
    (MemoryError, ["damaged input: MemoryError while reading"]),
    (lambda: OverflowError("Python int too large"), ["damaged input: OverflowError", "Python int too large"]),
    pytest.param(lambda: _bad_data("invalid DW_AT_type"), ["damaged input: invalid DW_AT_type"],
                 marks=NEEDS_BAD_DATA),
])
def test_cli_says_damaged_input_in_one_line(monkeypatch, capsys, stuck, make, words):
    cause = make()
    from lpdebug import report
    from lpdebug.commands import cli

    def reading(*args, **kwargs):
        raise cause

    monkeypatch.delenv("LPDEBUG_TRACEBACK", raising=False)
    monkeypatch.setattr(report, "triage", reading)
    with pytest.raises(SystemExit) as exited:
        cli.main(["triage", "-c", stuck["vmcore"], "-s", stuck["vmlinux"]])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("lpdebug: error:")]
    assert len(errors) == 1 and "internal error" not in err and "Traceback" not in err, err
    assert errors[0] == f"lpdebug: error: {damaged_input(cause)}"
    for word in words:
        assert word in errors[0]


# --- drgn's commands ------------------------------------------------------------------------------


@pytest.mark.needs_drgn("commands")
def test_drgn_command_names_the_damaged_file_drgn_loaded(stuck, damaged_ko):
    from drgn.commands import CommandError, run_command

    import lpdebug.commands.drgn_plugin  # noqa: F401 (registers the commands)

    prog = _poisoned(stuck, damaged_ko)
    with pytest.raises(CommandError) as raised:
        run_command(prog, "lptriage")
    message = str(raised.value)
    assert message.startswith("lptriage: damaged debug info: ")
    assert f"{damaged_ko} (module lpd_victim): invalid ELF relocation symbol" in message
    assert "intact copy" in message


@pytest.mark.needs_drgn("commands")
@pytest.mark.parametrize("make", [MemoryError, lambda: OverflowError("too large"),
                                  pytest.param(lambda: _bad_data("bad DWARF"), marks=NEEDS_BAD_DATA)])
def test_drgn_command_says_damaged_input(monkeypatch, stuck, make):
    cause = make()
    from drgn.commands import CommandError, run_command

    import lpdebug.commands.drgn_plugin  # noqa: F401 (registers the commands)
    from lpdebug import report

    prog = sample.open_sample()

    def reading(*args, **kwargs):
        raise cause

    monkeypatch.setattr(report, "triage", reading)
    with pytest.raises(CommandError) as raised:
        run_command(prog, "lptriage")
    assert str(raised.value) == f"lptriage: {damaged_input(cause)}"


@pytest.mark.needs_drgn("commands")
def test_drgn_command_still_shows_a_bug(monkeypatch, stuck):
    from drgn.commands import run_command

    import lpdebug.commands.drgn_plugin  # noqa: F401 (registers the commands)
    from lpdebug import report

    def bug(*args, **kwargs):
        raise RuntimeError("a bug in lpdebug")

    monkeypatch.setattr(report, "triage", bug)
    with pytest.raises(RuntimeError, match="a bug in lpdebug"):
        run_command(sample.open_sample(), "lptriage")


# --- gdb's commands -------------------------------------------------------------------------------


def _gdb(*python):
    purelib = sysconfig.get_paths()["purelib"]
    argv = ["gdb-multiarch", "-nx", "-batch",
            "-ex", f"python import site; site.addsitedir({purelib!r})",
            "-ex", f"python import sys; sys.path.insert(0, {REPO!r})",
            "-ex", "python import lpdebug.commands.gdb as g"]
    for line in python:
        argv += ["-ex", line]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300)


def _gdb_errors(proc):
    return [line for line in proc.stderr.splitlines() if line.startswith("lp-")]


@pytest.mark.needs_drgn("memory_readers")
def test_gdb_command_names_the_damaged_file(stuck, damaged_ko):
    # gdb's program on the same damaged files (gdb's own program is built by lpdebug from
    # gdb's objfiles; this one is built the way drgn's REPL builds it).
    code = POISONED.format(vmcore=stuck["vmcore"], vmlinux=stuck["vmlinux"], ko=damaged_ko)
    proc = _gdb("python exec(" + repr(code) + ", globals())",
                "python g._program = lambda: prog",
                "lp-triage")
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = _gdb_errors(proc)
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith("lp-triage: damaged debug info: ")
    assert f"{damaged_ko} (module lpd_victim): invalid ELF relocation symbol" in errors[0]


@pytest.mark.needs_drgn("memory_readers")
def test_gdb_command_says_damaged_input_and_bugs_apart(stuck):
    code = POISONED.format(vmcore=stuck["vmcore"], vmlinux=stuck["vmlinux"], ko=None)
    proc = _gdb("python exec(" + repr(code) + ", globals())",
                "python g._program = lambda: prog",
                "python import lpdebug.report as r",
                "python r.triage = lambda *a, **k: (_ for _ in ()).throw(MemoryError())",
                "lp-triage",
                "python r.triage = lambda *a, **k: (_ for _ in ()).throw(RuntimeError('a bug'))",
                "lp-triage")
    assert "Traceback" not in proc.stderr, proc.stderr
    assert _gdb_errors(proc) == [
        f"lp-triage: {damaged_input(MemoryError())}",
        "lp-triage: internal error: RuntimeError: a bug",
    ], proc.stderr
