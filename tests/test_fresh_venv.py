# SPDX-License-Identifier: GPL-2.0-or-later
"""
The README's set-up and commands, as a newcomer meets them: the checkout's
tracked files (what a fresh clone holds) installed into a fresh virtualenv
(no system site-packages, so a missing dependency shows) with the README's
``pip install .``, and separately with ``pip install -e .``; then every README
command that needs no testbed, run from inside the checkout and from outside
it, with nothing of this test run's environment (PYTHONPATH) leaking in.

Fast tier: pip's cache makes the installs cheap.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the sample's lpd_lp_victim kthread (PIDs shift between boots: read it from the fixture)
VICTIM = __import__("test_fixtures").fixture_pid("settled", "lpd_lp_victim")

pytestmark = pytest.mark.venv


def _fresh_clone(dest):
    """The tracked files of the checkout (working-tree content, symlinks kept) in ``dest``."""
    listed = subprocess.run(["git", "-C", REPO, "ls-files", "-z"], capture_output=True,
                            check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = os.path.join(REPO, rel)
        if not os.path.lexists(src):  # deleted in the working tree, not yet committed
            continue
        target = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.path.islink(src):
            os.symlink(os.readlink(src), target)
        else:
            shutil.copy2(src, target)
    return dest


def _env(venv):
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    env["PATH"] = os.path.join(venv, "bin") + os.pathsep + env.get("PATH", "")
    env["VIRTUAL_ENV"] = venv
    return env


def _run(venv, argv, cwd, stdin=None, timeout=600):
    return subprocess.run(argv, cwd=cwd, env=_env(venv), input=stdin, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    return _fresh_clone(str(tmp_path_factory.mktemp("clone") / "lpdebug"))


@pytest.fixture(scope="module", params=["pip install .", "pip install -e ."])
def venv(request, clone, tmp_path_factory):
    """A fresh venv with lpdebug installed from the clone the way the README says."""
    path = str(tmp_path_factory.mktemp("venv") / "venv")
    subprocess.run([sys.executable, "-m", "venv", path], check=True, timeout=300)
    python = os.path.join(path, "bin", "python")
    args = request.param.split()[2:]
    proc = _run(path, [python, "-m", "pip", "install", "-q", *args], cwd=clone, timeout=900)
    assert proc.returncode == 0, f"{request.param} failed:\n{proc.stdout}\n{proc.stderr}"
    return path


@pytest.fixture(params=["inside", "outside"])
def cwd(request, clone, tmp_path):
    return clone if request.param == "inside" else str(tmp_path)


def _readme():
    with open(os.path.join(REPO, "README.md")) as f:
        return f.read()


def test_the_venv_is_not_the_test_runners(venv, cwd):
    proc = _run(venv, ["python", "-c", "import sys, lpdebug, drgn; print(sys.prefix); "
                       "print(lpdebug.__file__)"], cwd)
    assert proc.returncode == 0, proc.stderr
    prefix, where = proc.stdout.split()
    assert os.path.realpath(prefix) == os.path.realpath(venv)
    # the installed lpdebug or, editable, the clone's: never the checkout the tests run from
    assert not os.path.realpath(where).startswith(os.path.realpath(REPO) + os.sep)


def test_lpdebug_help(venv, cwd):
    assert "lpdebug triage --sample" in _readme()
    proc = _run(venv, ["lpdebug", "--help"], cwd)
    assert proc.returncode == 0, proc.stderr
    assert "exit status:" in proc.stdout and "3  incomplete" in proc.stdout


def test_lpdebug_triage_sample(venv, cwd):
    proc = _run(venv, ["lpdebug", "triage", "--sample"], cwd)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Result: complete, 0 findings")
    assert "lpd_patch" in proc.stdout and "Traceback" not in proc.stderr


def _sample_paths(venv, cwd):
    proc = _run(venv, ["python3", "-m", "lpdebug.sample", "--json"], cwd)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_python_m_lpdebug_sample(venv, cwd):
    assert "python3 -m lpdebug.sample" in _readme()
    proc = _run(venv, ["python3", "-m", "lpdebug.sample"], cwd)
    assert proc.returncode == 0, proc.stderr
    assert "open it in drgn with lpdebug's commands:" in proc.stdout


def test_drgn_loads_the_plugin(venv, cwd):
    paths = _sample_paths(venv, cwd)
    argv = ["drgn", "-q", "-c", paths["vmcore"], "-s", paths["vmlinux"]]
    for ko in paths["modules"]:
        argv += ["-s", ko]
    code = ("import sys; from drgn.commands import run_command; "
            f"sys.exit(run_command(prog, 'lpbt {VICTIM}').exit_status)")
    proc = _run(venv, argv + ["-e", code], cwd)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"lpd_lp_thread\+0x5c \[lpd_victim\]\s+\S+\s+livepatch", proc.stdout), \
        proc.stdout


def test_sample_repl_has_the_commands(venv, cwd):
    assert "python3 -m lpdebug.sample --repl" in _readme()
    proc = _run(venv, ["python3", "-m", "lpdebug.sample", "--repl"], cwd,
                stdin="%lptriage\nprint('STATUS', _)\n")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert "Findings (0)" in proc.stdout and "exit status 0" in proc.stdout


def test_readme_api_example_on_the_sample(venv, cwd, tmp_path):
    from test_api_example import readme_example

    script = tmp_path / "example.py"
    script.write_text(readme_example())
    paths = _sample_paths(venv, cwd)
    proc = _run(venv, ["python3", str(script), paths["vmcore"], paths["vmlinux"],
                       *paths["modules"]], cwd)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^patch lpd_patch: enabled=True funcs=lpd_victim_work$", proc.stdout,
                     re.M), proc.stdout
    assert re.search(rf"^{VICTIM} lpd_lp_victim: .*lpd_lp_thread", proc.stdout, re.M), proc.stdout
    assert re.search(r"^0 findings, 0 things not checked$", proc.stdout, re.M), proc.stdout
    report = os.path.join(cwd, "report.json")
    with open(report) as f:
        assert json.load(f)["schema"] == "lpdebug.triage/2"
    os.remove(report)
