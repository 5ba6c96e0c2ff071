# SPDX-License-Identifier: GPL-2.0-or-later
"""
lpdebug's drgn floor is where the answer stops changing: the triage JSON
(``all_records=True``) of every testbed capture, the dump formats derived from
them included, under drgn :data:`lpdebug.drgn_compat.FLOOR` (PyPI's x86-64
wheel, in a fresh virtualenv) equals, byte for byte, the JSON under the drgn
this tier runs with (the newest, in CI).

This is the measurement that set the floor (README, "drgn versions"), kept:
the kdump-compressed captures are where a drgn before 0.2.0 needs lpdebug's
own walk of the radix page tables (lpdebug.hash_mmu.add_page_table_segments).
"""

import json
import os
import subprocess
import sys

import pytest

from lpdebug import drgn_compat
from testbed import MANIFEST, load_manifest

pytestmark = pytest.mark.testbed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLOOR = ".".join(map(str, drgn_compat.FLOOR))

# Triage every capture of the manifest; one JSON file per capture into argv[2].
SCRIPT = r"""
import json, os, sys
import drgn, lpdebug
from lpdebug import target
manifest, out = sys.argv[1], sys.argv[2]
base = os.path.dirname(os.path.abspath(manifest))
for s in json.load(open(manifest))["scenarios"]:
    p = lambda x: os.path.join(base, x)
    try:
        prog = target.open_vmcore(p(s["vmcore"]), [p(s["vmlinux"])] + [p(m) for m in s["modules"]],
                                  default_debug_info=False)
        text = lpdebug.dumps(lpdebug.triage(prog, all_records=True))
    except Exception as e:
        text = "ERROR %s: %s" % (type(e).__name__, e)
    with open(os.path.join(out, s["name"] + ".json"), "w") as f:
        f.write(text)
print(drgn.__version__)
"""


def _triage_all(python, out):
    os.makedirs(out)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "VIRTUAL_ENV")}
    env["PYTHONPATH"] = REPO
    proc = subprocess.run([python, "-c", SCRIPT, MANIFEST, out], capture_output=True, text=True,
                          env=env, timeout=1800)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_every_capture_gives_the_same_json_at_the_drgn_floor(tmp_path):
    names = [s["name"] for s in load_manifest()["scenarios"]]
    venv = str(tmp_path / "venv")
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=300)
    floor_python = os.path.join(venv, "bin", "python")
    proc = subprocess.run([floor_python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                           f"drgn=={FLOOR}", "pyelftools", "tabulate"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr

    assert _triage_all(floor_python, str(tmp_path / "floor")) == FLOOR
    newest = _triage_all(sys.executable, str(tmp_path / "newest"))
    assert drgn_compat.version_tuple(newest) > drgn_compat.FLOOR, newest

    differ = []
    for name in names:
        with open(tmp_path / "floor" / f"{name}.json") as f:
            at_floor = f.read()
        with open(tmp_path / "newest" / f"{name}.json") as f:
            at_newest = f.read()
        assert not at_newest.startswith("ERROR"), (name, at_newest)
        json.loads(at_newest)
        if at_floor != at_newest:
            differ.append(f"{name}: {at_floor[:200]!r}")
    assert not differ, f"drgn {FLOOR} and drgn {newest} differ on {len(differ)} of {len(names)} captures:\n" + \
        "\n".join(differ)
