"""
Front-end parity on the committed fixtures: drgn's ``run_command`` returns
the command's result (``.findings``, ``.exit_status``, ``.text``), and the
same command list gives the same bytes through drgn's command machinery
(with ``> FILE``) as through the ``lpdebug`` CLI. gdb joins the comparison
on the testbed's live guest (tests/test_gdb_live.py), where a gdbstub
exists.
"""

import os
import subprocess
import sys

import pytest

from lpdebug import sample
from test_fixtures import FIXTURES, fixture_pid

CRASH_PID = str(fixture_pid("toc-crash", "lpd_crash"))

# the %lp* drgn commands against the CLI
pytestmark = [pytest.mark.fixtures, pytest.mark.needs_drgn("commands")]


def fixture_target(name):
    paths = sample.fixture_paths(os.path.join(FIXTURES, name))
    target = ["-c", paths["vmcore"], "-s", paths["vmlinux"]]
    for ko in paths["modules"]:
        target += ["-s", ko]
    return target


def cli(name, command, *args):
    return subprocess.run([sys.executable, "-m", "lpdebug.commands.cli", command,
                           *fixture_target(name), *args],
                          capture_output=True, text=True, timeout=900)


_progs = {}


def prog(name):
    if name not in _progs:
        import lpdebug.commands.drgn_plugin  # noqa: F401 (registers the %lp* commands)

        _progs[name] = sample.open_fixture(os.path.join(FIXTURES, name))
    return _progs[name]


@pytest.mark.parametrize("name, status", [("toc-crash", 1), ("stuck", 1), ("settled", 0)])
def test_run_command_returns_findings_and_exit_status(name, status, capsys):
    from drgn.commands import run_command

    for command in ("lptoc", "lptriage"):
        out = run_command(prog(name), command)
        printed = capsys.readouterr().out
        assert out is not None, command
        assert out.text + "\n" == printed
        if command == "lptriage" or name != "stuck":  # toc alone has no transition check
            assert out.exit_status == status, (command, out)
            assert bool(out.findings) == bool(status)
        assert all(hasattr(f, "kind") and hasattr(f, "severity") for f in out.findings)
    assert cli(name, "triage").returncode == status


COMMANDS = [
    ("patches",), ("patches", "--json"), ("ops",), ("ops", "--json"),
    ("records", "-f", "lpd_*"), ("records", "-m", "lpd_victim", "--json"),
    ("bt",), ("bt", "-a"), ("bt", "--json"), ("stacks", CRASH_PID), ("stacks", CRASH_PID, "--json"),
    ("toc",), ("toc", "--json"), ("triage",), ("triage", "--json"),
]


def _drgn_words(words):
    # drgn's %lpbt takes crash's -c CPU; the CLI says --cpu (its -c is the core file)
    return " ".join(f"'{w}'" if "*" in w else w for w in words)


@pytest.mark.parametrize("words", COMMANDS, ids=lambda w: " ".join(w))
def test_cli_and_drgn_print_the_same_bytes(words, tmp_path):
    from drgn.commands import run_command

    proc = cli("toc-crash", *words)
    assert proc.returncode in (0, 1), proc.stderr
    out = tmp_path / "out.txt"
    result = run_command(prog("toc-crash"), f"lp{words[0]} {_drgn_words(words[1:])} > {out}")
    assert out.read_text() == proc.stdout
    assert result.exit_status == proc.returncode


@pytest.mark.parametrize("command, parts", [
    ("patches", {"livepatch"}), ("ops", {"ops", "diagnostics"}),
    ("records", {"records", "total_records", "diagnostics"}),
    ("bt", {"tasks"}), ("stacks", {"tasks"}), ("toc", {"tocs", "findings", "diagnostics"}),
])
def test_every_commands_json_has_its_documented_schema_id(command, parts):
    import json

    import jsonschema
    from test_triage_schema import DOC_PATH, load_schema

    def validate(item, definition, root):
        checker = jsonschema.Draft202012Validator(dict(definition, **{"$defs": root["$defs"]}))
        return [e.message for e in checker.iter_errors(item)]

    args = {"bt": [CRASH_PID], "stacks": [CRASH_PID]}.get(command, [])
    proc = cli("toc-crash", command, *args, "--json")
    assert proc.returncode in (0, 1), proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["schema"] == f"lpdebug.{command}/1"
    with open(DOC_PATH) as f:
        row = next(line for line in f if line.startswith(f"| `{command}` | `lpdebug."))
    assert f"`lpdebug.{command}/1`" in row
    assert set(doc) - {"schema"} == parts
    assert all(f"`{p}`" in row for p in parts)
    # the parts are the triage document's objects, valid against the same definitions
    schema = load_schema()
    defs = {"livepatch": "livepatch_state", "ops": "ftrace_ops", "records": "ftrace_record",
            "tasks": "task_trace", "findings": "finding", "diagnostics": "diagnostic"}
    for part, value in doc.items():
        if part in defs:
            items = value if isinstance(value, list) else [value]
            for item in items:
                assert validate(item, schema["$defs"][defs[part]], schema) == [], (part, item)
