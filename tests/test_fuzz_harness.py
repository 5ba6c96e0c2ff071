"""
The fuzz harness itself (tests/fuzz): its damage is deterministic by seed and lands where it says, and its
classifier puts each kind of outcome in its class. The fuzz runs are ``python3 tests/fuzz/fuzz.py --fast``
(CI) and ``--runs 5000`` (the long run).
"""

import hashlib
import json
import os
import random
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz"))
import damage  # noqa: E402
import fuzz  # noqa: E402

pytestmark = pytest.mark.fixtures


@pytest.fixture(scope="module")
def fixtures():
    return fuzz.fixture_inputs()


def _digest(inputs):
    h = hashlib.sha256()
    for path in [inputs.vmcore, inputs.vmlinux, *inputs.modules]:
        with open(path, "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def test_same_seed_same_damage(tmp_path, fixtures):
    seen = set()
    for index in range(12):
        a, da = fuzz.plan(7, index, fixtures, str(tmp_path / f"a{index}"))
        b, db = fuzz.plan(7, index, fixtures, str(tmp_path / f"b{index}"))
        assert (a.fixture, a.mutator, a.what) == (b.fixture, b.mutator, b.what)
        assert _digest(da) == _digest(db)
        seen.add(_digest(da))
    assert len(seen) > 6, "different runs make different damage"
    other, _ = fuzz.plan(8, 0, fixtures, str(tmp_path / "c"))
    first, _ = fuzz.plan(7, 0, fixtures, str(tmp_path / "d"))
    assert (other.fixture, other.what) != (first.fixture, first.what)


def test_core_layout_of_a_fixture(fixtures):
    with open(fixtures[0].vmcore, "rb") as f:
        core = damage.Core(f.read())
    assert core.vmcoreinfo() is not None
    assert any(n.type == damage.NT_PRSTATUS for n in core.notes)
    assert core.loads
    rng = random.Random(1)
    for _ in range(50):
        at = core.random_data_offset(rng, 8)
        vaddr = core.vaddr_of_offset(at)
        assert core.offset_of_vaddr(vaddr) == at
    _, segments = damage.load_segments(fixtures[0].vmcore)
    assert [s.offset for s in segments] == [s.offset for s in core.segments]


def test_each_mutator_changes_the_input(tmp_path, fixtures):
    inputs = next(f for f in fixtures if f.name == "stuck")
    for name, (mutate, _) in damage.CORE_MUTATORS.items():
        with open(inputs.vmcore, "rb") as f:
            original = f.read()
        core = damage.Core(original)
        what = mutate(random.Random(name), core)
        assert what and bytes(core.data) != original, name


BASE_1 = {"status": 1, "tasks": 40}
BASE_3 = {"status": 3, "tasks": 40}
DOC = '{"schema": "lpdebug.triage/2", "tasks": [%s], "findings": []}'


@pytest.mark.parametrize("answer, as_json, base, cls", [
    ({"killed": "hang"}, True, BASE_1, "hang"),
    ({"killed": "memory", "peak_kib": 3 << 20}, True, BASE_1, "memory"),
    ({"killed": "died"}, True, BASE_1, "traceback"),
    ({"status": None, "escaped": "Traceback ...\nRecursionError: x", "stdout": "", "stderr": ""}, True, BASE_1,
     "traceback"),
    ({"status": 2, "stdout": "", "stderr": "lpdebug: error: internal error: KeyError: 3 (set ...)"}, True,
     BASE_1, "internal_error"),
    ({"status": 2, "stdout": "", "stderr": "lpdebug: error: x: cannot open as a core dump: ..."}, True, BASE_1,
     "error"),
    ({"status": 2, "stdout": "", "stderr": "something else"}, True, BASE_1, "unclear_error"),
    ({"status": 1, "stdout": "{not json", "stderr": ""}, True, BASE_1, "invalid_json"),
    ({"status": 0, "stdout": DOC % ",".join(["{}"] * 40), "stderr": ""}, True, BASE_1, "exit0_regress"),
    ({"status": 0, "stdout": DOC % ",".join(["{}"] * 40), "stderr": ""}, True, BASE_3, "exit0_regress"),
    ({"status": 1, "stdout": DOC % ",".join(["{}"] * 3), "stderr": ""}, True, BASE_1, "lost_silent"),
    ({"status": 1, "stdout": "True backtraces (2 of 3 tasks: ...)", "stderr": ""}, False, BASE_1, "lost_silent"),
    ({"status": 3, "stdout": DOC % ",".join(["{}"] * 3), "stderr": ""}, True, BASE_1, "incomplete"),
    ({"status": 1, "stdout": DOC % ",".join(["{}"] * 40), "stderr": ""}, True, BASE_1, "findings"),
    ({"status": 1, "stdout": "True backtraces (2 of 40 tasks: ...)", "stderr": ""}, False, BASE_1, "findings"),
    ({"status": 0, "stdout": "True backtraces (2 of 40 tasks: ...)", "stderr": ""}, False,
     {"status": 0, "tasks": 40}, "clean"),
])
def test_classify(answer, as_json, base, cls):
    assert fuzz.classify(answer, as_json, base)[0] == cls


def test_resume_runs_only_what_the_log_lacks(tmp_path, monkeypatch, capsys):
    # An interrupted long run goes on where it stopped: the runs of this seed in the log are
    # kept, the others run, and the table counts both.
    log = tmp_path / "fuzz.log"
    logged = [fuzz.Run(i, "settled", "flip_bits", "", i % 2 == 0, "clean", seed=3) for i in range(4)]
    logged.append(fuzz.Run(4, "settled", "flip_bits", "", True, "hang", seed=2))  # another seed
    log.write_text("".join(json.dumps(r.__dict__) + "\n" for r in logged))
    asked = []

    def fake_fuzz(seed, runs, jobs, timeout, max_rss, names, start, log=None, indices=None):
        asked.extend(indices)
        return ([fuzz.Run(i, "stuck", "zero_page", "", i % 2 == 0, "findings", seed=seed) for i in indices],
                {"settled": {"status": 0, "tasks": 40}})

    monkeypatch.setattr(fuzz, "fuzz", fake_fuzz)
    assert fuzz.main(["--runs", "6", "--seed", "3", "--log", str(log), "--resume"]) == 0
    assert asked == [4, 5]
    out = capsys.readouterr().out
    assert "resumed: 4 runs from" in out
    counts = {line.split()[0]: int(line.split()[1]) for line in out.splitlines()
              if line.split() and line.split()[0] in fuzz.BAD + fuzz.GOOD + ("total",)}
    assert counts["clean"] == 4 and counts["findings"] == 2 and counts["hang"] == 0 and counts["total"] == 6
