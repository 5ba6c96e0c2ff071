# SPDX-License-Identifier: GPL-2.0-or-later
"""
The ``lpdebug`` command line: help, exit codes (0 no findings, 1 findings, 2
errors with one line on stderr, 3 incomplete), and every scenario vmcore of the testbed
checked against what the guest's own sysfs and tracefs said (truth/).
"""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from testbed import scenario, truth
from test_triage_schema import validate_triage

COMMANDS = ["patches", "ops", "records", "bt", "stacks", "toc", "triage"]
# Every scenario of the testbed except settled-hash, which the hash-MMU issue covers.
SCENARIOS = ["settled", "settled-6.1", "settled-64k", "stuck", "stacked", "toc-corrupt",
             "toc-crash", "nolivepatch", "settled-5.10", "stuck-5.10", "toc-corrupt-5.10", "toc-crash-5.10",
             "panic-5.10"]


def run_cli(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "lpdebug.commands.cli", *args],
                          capture_output=True, text=True, timeout=timeout)


def target_args(name):
    s = scenario(name)
    args = ["-c", s["vmcore"], "-s", s["vmlinux"]]
    for ko in s["modules"]:
        args += ["-s", ko]
    return args


def assert_one_line_error(proc, *fragments):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert re.match(r"^lpdebug( \w+)?: error: ", lines[0]), lines[0]
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


# --- no testbed needed ----------------------------------------------------------------


def test_console_script_is_installed():
    assert shutil.which("lpdebug"), "the lpdebug console script is not on PATH: pip install ."


def test_help_reads_like_a_man_page():
    proc = run_cli("--help")
    assert proc.returncode == 0
    out = proc.stdout
    for heading in ("usage:", "commands:", "targets", "examples:", "exit status:"):
        assert heading in out, heading
    statuses = out[out.index("exit status:"):]
    for status in ("0  complete, no findings", "1  complete, with findings", "2  error",
                   "3  incomplete"):
        assert status in statuses, status
    for command in COMMANDS:
        assert re.search(rf"^\s+{command}\s+\S", out, re.M), command
    assert "lpdebug triage -c vmcore -s vmlinux" in out


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help_with_examples(command):
    proc = run_cli(command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: lpdebug {command} ")
    assert "examples:" in proc.stdout and f"lpdebug {command} -c vmcore" in proc.stdout
    for option in ("--core", "--kernel", "--qemu", "--symbols"):
        assert option in proc.stdout


@pytest.mark.parametrize("args, fragment", [
    ([], "required: COMMAND"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["triage"], "one of the arguments -c/--core -k/--kernel --qemu --sample is required"),
    (["triage", "-c", "x", "-k"], "not allowed with argument"),
    (["triage", "-c", "x", "--bogus"], "unrecognized arguments: --bogus"),
    (["stacks", "-c", "x"], "required: PID|TASK"),
])
def test_bad_arguments_exit_2_with_one_line(args, fragment):
    assert_one_line_error(run_cli(*args), fragment)


def test_missing_vmcore_exits_2(tmp_path):
    missing = str(tmp_path / "no-such-vmcore")
    assert_one_line_error(run_cli("triage", "-c", missing), missing)


def test_not_a_core_dump_exits_2(tmp_path):
    junk = tmp_path / "junk"
    junk.write_bytes(b"not an ELF core\n" * 64)
    assert_one_line_error(run_cli("triage", "-c", str(junk)), str(junk))


def test_qemu_without_vmlinux_exits_2(tmp_path):
    assert_one_line_error(run_cli("patches", "--qemu", str(tmp_path / "qmp.sock")),
                          "--qemu needs -s VMLINUX")


# --- on the testbed's vmcores ---------------------------------------------------------


@pytest.mark.testbed
def test_settled_exits_0_with_a_report():
    proc = run_cli("triage", *target_args("settled"))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    for section in ("Kernel", "Livepatches", "ftrace_ops", "Module TOCs", "True backtraces",
                    "Findings (0)"):
        assert section in proc.stdout, section
    with open(truth("settled", "uname_r")) as f:
        assert f.read().strip() in proc.stdout


@pytest.mark.testbed
def test_toc_corrupt_exits_1():
    proc = run_cli("triage", "--json", *target_args("toc-corrupt"))
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    toc_kinds = {"frame_toc_mismatch", "livepatch_stack_toc_mismatch", "crashed_cpu_toc_mismatch"}
    assert any(f["kind"] in toc_kinds for f in doc["findings"]), doc["findings"]


def _build_id(path):
    from lpdebug.target import file_build_id

    return file_build_id(path)


def _vmcoreinfo_build_id(name):
    with open(truth(name, "vmcoreinfo")) as f:
        return re.search(r"^BUILD-ID=(\w+)$", f.read(), re.M).group(1)


@pytest.mark.testbed
def test_vmlinux_of_another_kernel_exits_2_naming_both_build_ids():
    wrong = scenario("settled-6.1")["vmlinux"]
    proc = run_cli("triage", "-c", scenario("settled")["vmcore"], "-s", wrong)
    line = assert_one_line_error(proc)
    assert _build_id(wrong) in line
    assert _vmcoreinfo_build_id("settled") in line
    assert _build_id(wrong) != _vmcoreinfo_build_id("settled")


def _sysfs_patches(truth_dir):
    """{patch: {"enabled", "transition", "funcs": {(object, func, sympos)}}} from a truth dir."""
    root = os.path.join(truth_dir, "sys_kernel_livepatch")
    patches = {}
    if not os.path.isdir(root):
        return patches
    for patch in sorted(os.listdir(root)):
        pdir = os.path.join(root, patch)

        def flag(f, pdir=pdir):
            with open(os.path.join(pdir, f)) as fh:
                return fh.read().strip() == "1"

        funcs = set()
        for obj in os.listdir(pdir):
            odir = os.path.join(pdir, obj)
            if not os.path.isdir(odir):
                continue
            for entry in os.listdir(odir):
                if os.path.isdir(os.path.join(odir, entry)) or "," in entry:
                    fname, _, pos = entry.partition(",")
                    funcs.add((obj, fname, int(pos or 1)))
        patches[patch] = {"enabled": flag("enabled"), "transition": flag("transition"),
                          "funcs": funcs}
    return patches


def _json_patches(doc):
    patches = {}
    for p in doc["livepatch"]["patches"]:
        funcs = {((o["name"] or "vmlinux"), f["name"], f["sympos"] or 1)
                 for o in p["objects"] for f in o["funcs"]}
        patches[p["name"]] = {"enabled": p["enabled"], "transition": p["transition"],
                              "funcs": funcs}
    return patches


@pytest.mark.testbed
@pytest.mark.parametrize("name", SCENARIOS)
def test_triage_json_on_every_scenario(name):
    proc = run_cli("triage", "--json", *target_args(name))
    assert proc.returncode in (0, 1), proc.stderr
    assert "Traceback" not in proc.stderr
    doc = json.loads(proc.stdout)
    validate_triage(doc)
    # a real capture is read completely, and the exit status follows the findings
    assert doc["diagnostics"] == []
    assert proc.returncode == (1 if doc["findings"] else 0)
    if name == "settled":
        assert proc.returncode == 0
    if name.startswith(("toc-corrupt", "toc-crash")):
        assert proc.returncode == 1
    with open(truth(name, "uname_r")) as f:
        assert doc["kernel"]["release"] == f.read().strip()
    assert _json_patches(doc) == _sysfs_patches(truth(name))
    assert doc["tasks"], "no task in the report"


def _enabled_functions(name):
    """{function: refcount} from the guest's tracefs enabled_functions."""
    out = {}
    with open(truth(name, "enabled_functions")) as f:
        for line in f:
            m = re.match(r"^(\S+)(?: \[(\S+)\])? \((\d+)\)", line)
            if m:
                out[(m.group(1), m.group(2))] = int(m.group(3))
    return out


@pytest.mark.testbed
def test_records_filtered_by_function_and_module():
    expected = _enabled_functions("settled")
    proc = run_cli("records", "-f", "lpd_victim_*", "-m", "lpd_victim", *target_args("settled"))
    assert proc.returncode == 0, proc.stderr
    rows = re.findall(r"^0x[0-9a-f]+\s+(\S+) \[(\S+)\]\s+(\S+)\s+(\d+)", proc.stdout, re.M)
    assert rows, proc.stdout
    assert all(mod == "lpd_victim" and fn.startswith("lpd_victim_") for fn, mod, _, _ in rows)
    enabled_rows = {(fn, mod): int(ref) for fn, mod, flags, ref in rows if "ENABLED" in flags}
    wanted = {k: v for k, v in expected.items() if k[1] == "lpd_victim" and k[0].startswith("lpd_victim_")}
    assert enabled_rows == wanted


@pytest.mark.testbed
def test_bt_shows_the_caller_livepatch_handler_hid():
    s = scenario("settled")
    pid = s["lpd_pids"]["lpd_lp_victim"]
    proc = run_cli("bt", *target_args("settled"), str(pid))
    assert proc.returncode == 0, proc.stderr
    with open(truth("settled", "tasks", str(pid), "stack.nofgraph")) as f:
        kernel_view = [re.sub(r"\+.*", "", line.split("] ", 1)[1].strip()) for line in f
                       if "] 0x" not in line]
    shown = re.findall(r"^#\d+\s+0x[0-9a-f]+\s+([\w.]+)", proc.stdout, re.M)
    # the kernel's view, with livepatch_handler replaced by the caller it hides
    wanted = [fn for fn in kernel_view if fn != "livepatch_handler"]
    it = iter(shown)
    assert all(fn in it for fn in wanted), (wanted, shown)
    # the caller's row comes from the livepatch stack
    caller = re.search(r"^#\d+\s+\S+\s+lpd_lp_thread\+\S+ \[lpd_victim\]\s+\S+\s+livepatch\b",
                       proc.stdout, re.M)
    assert caller, proc.stdout


@pytest.mark.testbed
def test_bt_of_a_missing_pid_exits_2():
    assert_one_line_error(run_cli("bt", *target_args("settled"), "999999"),
                          "no task with PID 999999")


# --- the progress bar -----------------------------------------------------------------


class _Stream:
    def __init__(self, tty):
        self.tty = tty
        self.text = ""

    def isatty(self):
        return self.tty

    def write(self, s):
        self.text += s

    def flush(self):
        pass


def test_progress_bar_draws_on_a_tty_after_a_moment_and_cleans_up():
    from lpdebug.commands.common import ProgressBar

    stream = _Stream(tty=True)
    bar = ProgressBar(stream)
    bar("tasks", 1, 4)
    assert stream.text == "", "drawn before the walk took a moment"
    bar._start -= ProgressBar.DELAY + 1
    bar("tasks", 2, 4)
    assert "tasks [" + "#" * 15 + "." * 15 + "] 2/4" in stream.text
    bar("tasks", 4, 4)
    assert stream.text.endswith("] 4/4")
    bar.close()
    assert stream.text.endswith("\r\033[K")


def test_progress_bar_stays_silent_off_a_tty():
    from lpdebug.commands.common import ProgressBar

    stream = _Stream(tty=False)
    bar = ProgressBar(stream)
    bar._start -= ProgressBar.DELAY + 1
    bar("tasks", 2, 4)
    bar.close()
    assert stream.text == ""


# --- the bundled sample ---------------------------------------------------------------


def test_sample_triage_exits_0():
    proc = run_cli("triage", "--sample")
    assert proc.returncode == 0, proc.stderr
    assert "Findings (0)" in proc.stdout and "lpd_patch" in proc.stdout


def test_sample_json_equals_the_full_captures_json():
    from lpdebug import sample

    proc = run_cli("triage", "--sample", "--json", "--all-records")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == sample.expected_json(sample.sample_dir())


def _readme_block_after(marker):
    readme = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
    with open(readme) as f:
        text = f.read()
    at = text.index(marker)
    return re.compile(r"```\n(.*?)```", re.S).search(text, at).group(1)


# The README shows the sample's lpd_lp_victim kthread.
SAMPLE_VICTIM_PID = __import__("test_fixtures").fixture_pid("settled", "lpd_lp_victim")


@pytest.mark.parametrize("command", ["bt", "stacks"])
def test_readme_examples_are_what_lpdebug_prints(command):
    block = _readme_block_after(f"`lpdebug {command} --sample {SAMPLE_VICTIM_PID}`")
    proc = run_cli(command, "--sample", str(SAMPLE_VICTIM_PID))
    assert proc.returncode == 0, proc.stderr
    assert block.strip() in proc.stdout, "README.md's example is not lpdebug's output any more"


@pytest.mark.parametrize("stage, walker", [
    ("checks", "lpdebug.checks.all_findings"),
    ("livepatch", "lpdebug.livepatch.livepatch_state"),
])
def test_a_failing_stage_exits_3_and_the_report_says_so_first(monkeypatch, capsys, stage,
                                                              walker):
    from lpdebug.commands import cli

    def fail(*args, **kwargs):
        raise RuntimeError("injected")

    monkeypatch.setattr(walker, fail)
    assert cli.run(["triage", "--sample"]) == 3
    out = capsys.readouterr().out
    # without livepatch state, the livepatch-stack check says it cannot identify a replacement,
    # and the klp_ops cross-check says patches are missing: one failure may cost more than one part
    assert re.match(r"Result: INCOMPLETE \(\d+ things? could not be checked, listed below\), "
                    r"\d+ findings?\n", out), out[:200]
    assert f"[{stage}] stage_failed: " in out and "RuntimeError: injected" in out
    assert cli.run(["triage", "--sample", "--json"]) == 3
    doc = json.loads(capsys.readouterr().out)
    kinds = [(d["stage"], d["kind"]) for d in doc["diagnostics"]]
    # the stage's own failure first; anything else is what it cost (patches found lost elsewhere)
    assert kinds[0] == (stage, "stage_failed") and all(k == "lost" for _, k in kinds[1:]), kinds


def test_too_old_drgn_exits_2_with_one_line(monkeypatch, capsys):
    import drgn

    from lpdebug.commands import cli

    monkeypatch.setattr(drgn, "__version__", "0.0.30")
    assert cli.run(["triage", "--sample"]) == 2
    err = capsys.readouterr().err
    assert err == ("lpdebug: error: lpdebug needs drgn 0.0.31 or later, but drgn 0.0.30 is installed: "
                   "pip install --upgrade 'drgn>=0.0.31' (on ppc64le, where PyPI has no drgn wheel, "
                   "pip builds it from source, or use a wheel made by lpdebug's vmcores/build --drgn-wheel: "
                   "README, 'On the POWER host')\n")
