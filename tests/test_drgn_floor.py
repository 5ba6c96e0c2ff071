# SPDX-License-Identifier: GPL-2.0-or-later
"""
lpdebug's drgn floor (lpdebug.drgn_compat.FLOOR), met by the real drgn just
below it and at it, each from PyPI in a fresh virtualenv (x86-64 wheels;
pip's cache makes it cheap): below the floor, the CLI, drgn's plugin loader
and gdb each give one line naming the version found, the version needed and
how to get it (the CLI exits 2); at the floor, the features that need a newer
drgn say so in one line too.

The fast tier itself also runs at the floor in CI (.ci/run); this file checks
what no test running in one interpreter can: drgn releases below the floor.
"""

import lzma
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from lpdebug import drgn_compat

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLOOR = ".".join(map(str, drgn_compat.FLOOR))
# the release just below the floor
BELOW = "0.0.30"

pytestmark = pytest.mark.venv


def _venv(path, drgn_requirement):
    subprocess.run([sys.executable, "-m", "venv", path], check=True, timeout=300)
    python = os.path.join(path, "bin", "python")
    proc = subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                           drgn_requirement, "pyelftools", "tabulate"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    return python


def _env():
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "VIRTUAL_ENV")}
    env["PYTHONPATH"] = REPO  # this checkout, nothing installed
    env.pop("LPDEBUG_TRACEBACK", None)
    return env


def _run(python, *argv):
    return subprocess.run([python, *argv], capture_output=True, text=True, env=_env(), cwd=REPO,
                          timeout=300)


@pytest.fixture(scope="module")
def below(tmp_path_factory):
    python = _venv(str(tmp_path_factory.mktemp("below") / "venv"), f"drgn=={BELOW}")
    assert _run(python, "-c", "import drgn; print(drgn.__version__)").stdout.strip() == BELOW
    return python


@pytest.fixture(scope="module")
def floor(tmp_path_factory):
    python = _venv(str(tmp_path_factory.mktemp("floor") / "venv"), f"drgn=={FLOOR}")
    assert _run(python, "-c", "import drgn; print(drgn.__version__)").stdout.strip() == FLOOR
    return python


def _the_line(found):
    return (f"lpdebug needs drgn {FLOOR} or later, but drgn {found} is installed: "
            f"pip install --upgrade 'drgn>={FLOOR}' (on ppc64le, where PyPI has no drgn wheel, "
            "pip builds it from source, or use a wheel made by lpdebug's vmcores/build --drgn-wheel: "
            "README, 'On the POWER host')")


def test_cli_below_the_floor_is_one_line_exit_2(below):
    proc = _run(below, "-m", "lpdebug.commands.cli", "triage", "--sample")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == f"lpdebug: error: {_the_line(BELOW)}\n"
    assert proc.stdout == ""


def test_library_below_the_floor_still_imports(below):
    # "import lpdebug" must not fail on its own: the front ends say the line.
    proc = _run(below, "-c", "import lpdebug, lpdebug.commands.cli; print(lpdebug.__version__)")
    assert proc.returncode == 0, proc.stderr


def test_drgn_commands_at_the_floor_say_what_they_need(floor):
    # drgn 0.0.31 loads plugins (DRGN_PLUGINS, as the drgn.plugins entry point
    # of an installed lpdebug does) but has no command API lpdebug can use.
    code = ("import logging; logging.basicConfig(format='%(message)s');"
            "from _drgn_util.plugins import _load_plugins; _load_plugins()")
    env = dict(_env(), DRGN_PLUGINS="lpdebug=lpdebug.commands.drgn_plugin")
    proc = subprocess.run([floor, "-c", code], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    needed = ".".join(map(str, drgn_compat.FEATURES["commands"][0]))
    assert proc.stderr == (
        "lpdebug commands not loaded: lpdebug's drgn commands (%lptriage ...) need drgn "
        f"{needed} or later (its command API with parse_shell_command), but drgn {FLOOR} is "
        f"installed: pip install --upgrade 'drgn>={needed}' (on ppc64le, where PyPI has no drgn "
        "wheel, pip builds it from source, or use a wheel made by lpdebug's vmcores/build "
        "--drgn-wheel: README, 'On the POWER host')\n")


def test_qemu_at_the_floor_is_one_line_exit_2(floor):
    vmlinux = os.path.join(REPO, "lpdebug", "sample_data", "settled", "vmlinux.xz")
    assert os.path.exists(vmlinux)
    # --qemu refuses before it touches the socket
    with tempfile.TemporaryDirectory() as tmp:
        plain = os.path.join(tmp, "vmlinux")
        with lzma.open(vmlinux) as src, open(plain, "wb") as dst:
            shutil.copyfileobj(src, dst)
        proc = _run(floor, "-m", "lpdebug.commands.cli", "triage", "--qemu",
                    os.path.join(tmp, "no-such.sock"), "-s", plain)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"lpdebug: error: --qemu needs drgn 0.2.0 or later "
                                  f"(its QEMU target, Program.set_qemu_qmp), but drgn {FLOOR} is "
                                  "installed: pip install --upgrade 'drgn>=0.2.0'"), proc.stderr


@pytest.mark.skipif(shutil.which("gdb-multiarch") is None, reason="gdb-multiarch is not installed")
def test_gdb_below_the_floor_is_one_line_and_status_2(below):
    purelib = subprocess.run([below, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    proc = subprocess.run(
        ["gdb-multiarch", "-nx", "-batch",
         "-ex", f"python import site, sys; site.addsitedir({purelib!r}); sys.path.insert(0, {REPO!r})",
         "-ex", "python import lpdebug.commands.gdb",
         "-ex", "lp-bt 1",
         "-ex", "print $lp_status"],
        capture_output=True, text=True, timeout=300, env=_env())
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.splitlines() == [f"lpdebug: error: {_the_line(BELOW)}", f"lp-bt: {_the_line(BELOW)}"]
    assert proc.stdout.strip() == "$1 = 2"
