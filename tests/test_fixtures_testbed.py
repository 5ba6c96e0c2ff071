# SPDX-License-Identifier: GPL-2.0-or-later
"""
The fixture proof, kept on the real-kernel testbed: for every scenario, cut
the full capture down again with vmcores/fixtures/minimize.py (sparse vmcore
of the pages read, vmlinux pruned to the needed compile units) into a scratch
directory, and check that lpdebug's full triage JSON (all ftrace records) on
the minimized pair equals, byte for byte, the JSON on the full pair, within
the 3 MiB limit. Where the committed fixture was cut from the very capture
the testbed holds now, its expected JSON must also still be the full
capture's answer.
"""

import os
import sys

import pytest

from testbed import scenario

pytestmark = pytest.mark.testbed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "vmcores", "fixtures"))

import elfcore  # noqa: E402
import minimize  # noqa: E402

# every scenario vmcores/build makes
SCENARIOS = ["settled", "settled-6.1", "settled-64k", "settled-hash", "settled-64k-hash",
             "settled-6.1-hash", "stuck", "stacked", "toc-corrupt", "toc-crash", "nolivepatch",
             "settled-5.10", "stuck-5.10", "toc-corrupt-5.10", "toc-crash-5.10",
             "panic-5.10"]


@pytest.fixture(scope="session")
def work_dir():
    import tempfile

    # shared with the tool: the per-kernel DWARF name index is cached there
    d = os.path.join(tempfile.gettempdir(), "lpdebug-fixtures")
    os.makedirs(d, exist_ok=True)
    return d


@pytest.mark.parametrize("name", SCENARIOS)
def test_minimized_capture_gives_the_same_json(name, work_dir, tmp_path):
    s = scenario(name)
    # xz preset 6 instead of 9e: faster, a few percent bigger than the committed files
    meta = minimize.minimize(s, work_dir, out=str(tmp_path / name), preset=6)
    assert meta["proof"]["equal"], f"{name}: triage of the minimized capture differs from the full one"
    assert meta["stats"]["compressed_total"] <= minimize.LIMIT, (name, meta["stats"])


@pytest.mark.parametrize("name", SCENARIOS)
def test_committed_fixture_is_the_full_answer(name):
    from lpdebug import sample

    s = scenario(name)
    d = minimize.fixture_dir(name)
    if not os.path.isfile(os.path.join(d, "fixture.json")):
        pytest.fail(f"no committed fixture for {name}: run vmcores/fixtures/minimize.py {name}")
    meta = sample.load_fixture(d)
    if meta["source"]["vmcore_sha256"] != elfcore.sha256_file(s["vmcore"]):
        pytest.skip(f"the committed {name} fixture was cut from another capture of the scenario")
    got = minimize.triage_json(s["vmcore"], s["vmlinux"], list(s["modules"]))
    assert got == sample.expected_json(d), (
        f"lpdebug's answer on the full {name} capture changed: regenerate the fixture "
        f"(vmcores/fixtures/minimize.py {name}) and review the diff")
