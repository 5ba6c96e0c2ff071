# SPDX-License-Identifier: GPL-2.0-or-later
"""
``lpdebug batch`` over the committed fixtures as a corpus (fast tier, no QEMU).

Each line's ``triage`` must be the fixture's own single-vmcore triage document, on
the local process pool (``--jobs 2``) and on a Dask ``LocalCluster`` of two
workers alike; the closing tables must count what those documents hold. A
garbage file, a truncated vmcore, a time limit and a memory limit each give their
own line while the rest of the corpus is triaged; a rerun skips what is done, and
a line cut short by an interrupted run is triaged again.
"""

import csv
import json
import os
import re
import shutil
import subprocess
import sys

import jsonschema
import pytest

import lpdebug
from lpdebug import batch, sample
from test_fixtures import FIXTURES, NAMES

pytestmark = pytest.mark.fixtures

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH_SCHEMA = os.path.join(REPO, "docs", "batch.schema.json")
VERDICT = {0: "clean", 1: "findings", 3: "incomplete"}


def run_batch_cli(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "lpdebug.commands.cli", "batch", *args],
                          capture_output=True, text=True, timeout=timeout)


def read_lines(path):
    with open(path) as f:
        return [json.loads(text) for text in f]


def by_path(lines):
    return {line["path"]: line for line in lines}


def without_cost(lines):
    return {line["path"]: {k: v for k, v in line.items() if k != "cost"} for line in lines}


_single = {}


def single_triage(name):
    """The fixture's triage document as lpdebug triage --json gives it (one vmcore, in this process)."""
    if name not in _single:
        result = lpdebug.triage(sample.open_fixture(os.path.join(FIXTURES, name)))
        _single[name] = (json.loads(lpdebug.dumps(result)), lpdebug.exit_status(result))
    return _single[name]


def cli_triage(core, *symbols):
    """lpdebug triage --json -c CORE -s SYMBOL... --no-default-debug-info, as a command."""
    argv = [sys.executable, "-m", "lpdebug.commands.cli", "triage", "--json", "-c", core, "--no-default-debug-info"]
    for path in symbols:
        argv += ["-s", path]
    return subprocess.run(argv, capture_output=True, text=True, timeout=900)


def validate_line(line):
    with open(BATCH_SCHEMA) as f:
        validator = jsonschema.Draft202012Validator(json.load(f))
    errors = [f"{'/'.join(map(str, e.absolute_path)) or '$'}: {e.message}" for e in validator.iter_errors(line)]
    assert not errors, "batch line does not fit docs/batch.schema.json:\n" + "\n".join(errors[:20])


@pytest.fixture(scope="module")
def pool_run(tmp_path_factory):
    """lpdebug batch vmcores/fixtures --jobs 2, from the command line."""
    out = str(tmp_path_factory.mktemp("pool") / "results.jsonl")
    proc = run_batch_cli(FIXTURES, "--out", out, "--jobs", "2")
    return proc, out


def test_the_pool_gives_each_fixture_its_single_triage(pool_run):
    proc, out = pool_run
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = read_lines(out)
    assert sorted(os.path.basename(line["path"]) for line in lines) == NAMES
    for line in lines:
        name = os.path.basename(line["path"])
        expected, status = single_triage(name)
        validate_line(line)
        assert line["triage"] == expected, f"{name}: the batch's document is not lpdebug triage --json's"
        assert (line["status"], line["exit_status"], line["error"]) == (VERDICT[status], status, None), name
        assert line["path"] == os.path.abspath(os.path.join(FIXTURES, name))
        assert line["size"] == os.path.getsize(os.path.join(FIXTURES, name, "fixture.json"))
        assert line["cost"]["seconds"] > 0 and line["cost"]["peak_rss"] > 10 << 20
    statuses = {single_triage(name)[1] for name in NAMES}
    assert proc.returncode == (3 if 3 in statuses else 1 if 1 in statuses else 0), proc.stderr
    # not a terminal: one progress line per vmcore on stderr
    assert len(re.findall(r"^\[\s*\d+/%d\] (clean|findings|incomplete) " % len(NAMES), proc.stderr,
                          re.M)) == len(NAMES), proc.stderr


def test_the_bundled_sample_line_is_the_command_lines_own_json(pool_run):
    _, out = pool_run
    proc = subprocess.run([sys.executable, "-m", "lpdebug.commands.cli", "triage", "--sample", "--json"],
                          capture_output=True, text=True, timeout=900)
    line = by_path(read_lines(out))[os.path.abspath(os.path.join(FIXTURES, "settled"))]
    assert line["exit_status"] == proc.returncode, proc.stderr
    assert line["triage"] == json.loads(proc.stdout)


def test_the_closing_tables_count_the_documents(pool_run):
    proc, _ = pool_run
    verdicts, crashed, kinds = {}, {}, {}
    for name in NAMES:
        doc, status = single_triage(name)
        verdicts[VERDICT[status]] = verdicts.get(VERDICT[status], 0) + 1
        crashed[VERDICT[status]] = crashed.get(VERDICT[status], 0) + bool(doc["summary"]["crashed"])
        for finding in doc["findings"]:
            counts = kinds.setdefault((finding["kind"], finding["severity"]), [0, set()])
            counts[0] += 1
            counts[1].add(name)
    out = proc.stdout
    assert out.startswith("Vmcores by verdict\n"), out
    for verdict, n in verdicts.items():
        assert re.search(rf"^{verdict}\s+{n}\s+{crashed[verdict]}$", out, re.M), (verdict, out)
    assert re.search(rf"^total\s+{len(NAMES)}\s+{sum(crashed.values())}$", out, re.M), out
    assert kinds, "the fixtures hold findings (toc-corrupt, toc-crash, stuck)"
    for (kind, severity), (n, names) in kinds.items():
        assert re.search(rf"^{kind}\s+{severity}\s+{n}\s+{len(names)}$", out, re.M), (kind, out)
    assert "Not triaged" not in out


def test_a_dask_local_cluster_gives_the_pools_lines(pool_run, tmp_path):
    from distributed import LocalCluster

    proc, pool_out = pool_run
    out = str(tmp_path / "results.jsonl")
    # two workers as threads of this process (fast to start), reached by lpdebug batch over TCP
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp",
                      dashboard_address=None) as cluster:
        dask = run_batch_cli(FIXTURES, "--out", out, "--scheduler", cluster.scheduler_address)
    assert "Traceback" not in dask.stderr, dask.stderr
    lines = read_lines(out)
    assert len(lines) == len(NAMES)
    assert without_cost(lines) == without_cost(read_lines(pool_out))
    assert (dask.returncode, dask.stdout) == (proc.returncode, proc.stdout)


def test_run_batch_on_a_cluster_object(tmp_path):
    from distributed import LocalCluster

    out = str(tmp_path / "results.jsonl")
    vmcores = batch.find_vmcores([os.path.join(FIXTURES, "settled"), os.path.join(FIXTURES, "stuck")])
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        done = batch.run_batch(vmcores, out, batch.BatchOptions(), scheduler=cluster)
    assert (done.ran, done.skipped) == (2, 0)
    assert [line.path for line in done.lines] == [v.path for v in vmcores]
    for line in read_lines(out):
        assert line["triage"] == single_triage(os.path.basename(line["path"]))[0]


def test_a_rerun_skips_what_is_done(pool_run, tmp_path):
    proc, pool_out = pool_run
    out = str(tmp_path / "results.jsonl")
    shutil.copy(pool_out, out)
    again = run_batch_cli(FIXTURES, "--out", out, "--jobs", "2")
    assert again.returncode == proc.returncode
    assert read_lines(out) == read_lines(pool_out), "a rerun wrote lines"
    assert f"{len(NAMES)} of {len(NAMES)} vmcores already in {out}: skipped" in again.stderr
    assert again.stdout == proc.stdout


def test_a_line_cut_short_is_triaged_again(pool_run, tmp_path):
    _, pool_out = pool_run
    out = str(tmp_path / "results.jsonl")
    with open(pool_out) as f:
        texts = f.readlines()
    keep = [t for t in texts if not json.loads(t)["path"].endswith(os.sep + "settled")]
    cut = [t for t in texts if json.loads(t)["path"].endswith(os.sep + "settled")][0]
    with open(out, "w") as f:
        f.writelines(keep)
        f.write(cut[: len(cut) // 2])  # the run was killed while writing it
    assert len(batch.read_results(out)) == len(keep)
    with open(out) as f:
        assert f.read() == "".join(keep), "the cut line was not dropped from the file"
    done = batch.run_batch(batch.find_vmcores([FIXTURES]), out, batch.BatchOptions(), jobs=2)
    assert (done.ran, done.skipped) == (1, len(keep))
    assert without_cost(read_lines(out)) == without_cost(read_lines(pool_out))


def test_a_line_that_is_not_a_batch_line_stops_the_run(pool_run, tmp_path):
    _, pool_out = pool_run
    out = tmp_path / "results.jsonl"
    with open(pool_out) as f:
        texts = f.readlines()
    out.write_text(texts[0] + "an edit\n" + texts[1])
    proc = run_batch_cli(FIXTURES, "--out", str(out))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == f"lpdebug: error: {out}:2: not a line of lpdebug batch's results: remove it, or " \
                          "give another --out\n"
    assert out.read_text() == texts[0] + "an edit\n" + texts[1], "the file was changed"


# --- bad vmcores get their own lines -----------------------------------------------------


@pytest.fixture(scope="module")
def settled_files():
    return sample.fixture_paths(os.path.join(FIXTURES, "settled"))


def _case(root, name, files, vmcore_name="vmcore", vmcore_bytes=None):
    """A support team's case directory: the vmcore, vmlinux and modules/ beside it."""
    case = os.path.join(root, name)
    os.makedirs(os.path.join(case, "modules"))
    shutil.copy(files["vmlinux"], os.path.join(case, "vmlinux"))
    for ko in files["modules"]:
        shutil.copy(ko, os.path.join(case, "modules"))
    path = os.path.join(case, vmcore_name)
    if vmcore_bytes is None:
        shutil.copy(files["vmcore"], path)
    else:
        with open(path, "wb") as f:
            f.write(vmcore_bytes)
    return os.path.abspath(path)


def test_a_tree_of_cases_with_a_garbage_and_a_truncated_vmcore(settled_files, tmp_path):
    root = str(tmp_path / "cases")
    with open(settled_files["vmcore"], "rb") as f:
        whole = f.read()
    good = _case(root, "case-good", settled_files, vmcore_name="vmcore.kdump")
    truncated = _case(root, "case-truncated", settled_files, vmcore_bytes=whole[: len(whole) // 3])
    garbage = _case(root, "case-garbage", settled_files, vmcore_bytes=bytes(range(256)) * 40)
    with open(os.path.join(root, "case-good", "vmcore-dmesg.txt"), "w") as f:
        f.write("not a vmcore\n")
    out = str(tmp_path / "results.jsonl")
    proc = run_batch_cli(root, "--out", out, "--jobs", "2", "--no-default-debug-info")
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = by_path(read_lines(out))
    assert sorted(lines) == sorted([good, truncated, garbage])
    for line in lines.values():
        validate_line(line)
    # the vmcore beside its vmlinux and modules/: read with them, as lpdebug triage -s reads
    alone = cli_triage(good, os.path.join(root, "case-good", "modules"), os.path.join(root, "case-good", "vmlinux"))
    assert lines[good]["triage"] == json.loads(alone.stdout)
    assert (lines[good]["status"], lines[good]["exit_status"]) == (VERDICT[alone.returncode], alone.returncode)
    bad = lines[garbage]
    assert (bad["status"], bad["exit_status"], bad["triage"]) == ("error", 2, None)
    assert garbage in bad["error"] and "\n" not in bad["error"]
    # the one line lpdebug triage gives for it
    alone = cli_triage(garbage, os.path.dirname(garbage))
    assert (alone.returncode, alone.stderr) == (2, f"lpdebug: error: {bad['error']}\n")
    # a third of the dump: opened, but what lies past the cut cannot be read
    cut = lines[truncated]
    assert cut["status"] in ("incomplete", "error"), cut["status"]
    alone = cli_triage(truncated, os.path.join(root, "case-truncated", "modules"),
                       os.path.join(root, "case-truncated", "vmlinux"))
    assert alone.returncode == cut["exit_status"], alone.stderr
    if cut["status"] == "incomplete":
        assert cut["triage"]["diagnostics"] and cut["exit_status"] == 3
        assert cut["triage"] == json.loads(alone.stdout)
        assert [f"lpdebug: warning: {w}" for w in cut["warnings"]] == [
            w for w in alone.stderr.splitlines() if w.startswith("lpdebug: warning: ")]
        assert cut["warnings"], "the cut dump's missing modules are warned about"
    assert proc.returncode == 3
    assert re.search(r"^Not triaged\n-+\nvmcore\s+status\s+error\n[- ]+\n" + re.escape(garbage) + r"\s+error\s",
                     proc.stdout, re.M), proc.stdout


def test_a_timeout_then_retry_failed(tmp_path):
    out = str(tmp_path / "results.jsonl")
    settled = os.path.join(FIXTURES, "settled")
    # the test hook: a time limit no triage can meet
    proc = run_batch_cli(settled, "--out", out, "--timeout", "0.05")
    assert proc.returncode == 3, proc.stderr
    (line,) = read_lines(out)
    validate_line(line)
    assert (line["status"], line["exit_status"], line["triage"]) == ("timeout", None, None)
    assert "no answer within 0.05 s" in line["error"]
    assert re.search(r"^timeout\s+1\s+0$", proc.stdout, re.M), proc.stdout
    # a plain rerun leaves it; --retry-failed replaces it
    assert run_batch_cli(settled, "--out", out).returncode == 3
    assert len(read_lines(out)) == 1
    proc = run_batch_cli(settled, "--out", out, "--retry-failed")
    expected, status = single_triage("settled")
    assert proc.returncode == status, proc.stderr
    (line,) = read_lines(out)
    assert line["status"] == VERDICT[status] and line["triage"] == expected


def test_the_memory_limit_is_the_vmcores_own(tmp_path):
    out = str(tmp_path / "results.jsonl")
    # less than the interpreter and drgn hold once imported: the triage cannot allocate
    proc = run_batch_cli(os.path.join(FIXTURES, "settled"), os.path.join(FIXTURES, "stuck"), "--out", out,
                         "--memory-limit", "64", "--jobs", "1")
    assert proc.returncode == 3 and "Traceback" not in proc.stderr, proc.stderr
    for line in read_lines(out):
        validate_line(line)
        assert line["status"] in ("memory_limit", "died") and line["triage"] is None, line
        assert "memory limit of 64 MiB" in line["error"], line["error"]
    assert len(read_lines(out)) == 2


def test_manifests_name_vmcores_and_their_debug_info(settled_files, tmp_path):
    core = _case(str(tmp_path), "elsewhere", settled_files)
    debug = os.path.join(tmp_path, "elsewhere")
    jsonl = tmp_path / "manifest.jsonl"
    jsonl.write_text("# vmcores of the week\n"
                     + json.dumps({"vmcore": os.path.relpath(os.path.join(FIXTURES, "stuck"), tmp_path)}) + "\n"
                     + json.dumps({"vmcore": "elsewhere/vmcore",
                                   "symbols": ["elsewhere/vmlinux", "elsewhere/modules"]}) + "\n")
    with open(tmp_path / "manifest.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["vmcore", "symbols", "debug_directories"])
        writer.writerow([core, f"{debug}/vmlinux;{debug}/modules", ""])
    for manifest in (jsonl, tmp_path / "manifest.csv"):
        vmcores = batch.find_vmcores([str(manifest)])
        assert [v.path for v in vmcores][-1] == core
        assert vmcores[-1].symbols == [f"{debug}/vmlinux", f"{debug}/modules"]
    out = str(tmp_path / "results.jsonl")
    proc = run_batch_cli(str(jsonl), "--out", out, "--no-default-debug-info")
    lines = by_path(read_lines(out))
    alone = cli_triage(core, f"{debug}/vmlinux", f"{debug}/modules")
    assert (lines[core]["triage"], lines[core]["exit_status"]) == (json.loads(alone.stdout), alone.returncode)
    expected, status = single_triage("stuck")
    assert lines[os.path.abspath(os.path.join(FIXTURES, "stuck"))]["triage"] == expected
    assert proc.returncode == max(status, alone.returncode), proc.stderr


@pytest.mark.parametrize("text, fragment", [
    ('{"vmcore": "a"}\n{"vmcore": \n', "manifest.jsonl:2: not a JSON line"),
    ('{"core": "a"}\n', 'manifest.jsonl:1: each entry needs "vmcore"'),
    ('{"vmcore": "a", "symbol": ["b"]}\n', "manifest.jsonl:1: unknown field(s) symbol"),
])
def test_a_malformed_manifest_is_one_line(tmp_path, text, fragment):
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text(text)
    proc = run_batch_cli(str(manifest), "--out", str(tmp_path / "out.jsonl"))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("lpdebug: error: "), proc.stderr
    assert fragment in proc.stderr, proc.stderr
    assert not os.path.exists(tmp_path / "out.jsonl")


def test_results_that_cannot_be_written_are_an_error_before_any_work(tmp_path):
    out = tmp_path / "no" / "such" / "results.jsonl"
    proc = run_batch_cli(os.path.join(FIXTURES, "settled"), "--out", str(out))
    assert (proc.returncode, proc.stderr) == (2, f"lpdebug: error: {out}: cannot write the results there\n")


def test_no_vmcore_found_is_an_error(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here\n")
    proc = run_batch_cli(str(tmp_path), "--out", str(tmp_path / "out.jsonl"))
    assert proc.returncode == 2 and "no vmcore found in" in proc.stderr, proc.stderr


def test_the_schema_rejects_a_line_without_a_status(pool_run):
    _, out = pool_run
    line = read_lines(out)[0]
    validate_line(line)
    with open(BATCH_SCHEMA) as f:
        validator = jsonschema.Draft202012Validator(json.load(f))
    for broken in ({k: v for k, v in line.items() if k != "status"}, {**line, "status": "fine"},
                   {**line, "triage": {**line["triage"], "tasks": "none"}}):
        assert list(validator.iter_errors(broken)), broken


from test_cli import _Stream  # noqa: E402  (a terminal or a pipe, as the CLI's progress bar sees it)


def test_progress_is_a_bar_on_a_tty_and_lines_elsewhere():
    from lpdebug.commands.cli import _batch_progress

    line = {"status": "error", "path": "/cases/1/vmcore", "error": "not a vmcore", "cost": {"seconds": 0.25},
            "triage": None}
    tty = _Stream(tty=True)
    progress, bar = _batch_progress(tty)
    bar._start -= bar.DELAY + 1
    progress(3, 12, line)
    assert "vmcores (1 not triaged) [" + "#" * 7 + "." * 23 + "] 3/12" in tty.text
    assert "/cases/1" not in tty.text
    bar.close()
    plain = _Stream(tty=False)
    progress, bar = _batch_progress(plain)
    progress(3, 12, None)  # a tick while vmcores run: nothing to say
    progress(3, 12, line)
    assert plain.text == "[ 3/12] error 0.2 s /cases/1/vmcore: not a vmcore\n"


def test_each_triage_process_gets_its_share_of_threads(monkeypatch):
    seen = {}

    def popen(argv, env, **kwargs):
        seen.update(argv=argv, env=env)
        raise OSError("no more processes")

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(batch.subprocess, "Popen", popen)
    vmcore = batch.find_vmcores([os.path.join(FIXTURES, "settled")])[0]
    line = batch.triage_vmcore(vmcore, batch.BatchOptions(threads=3))
    assert seen["env"]["OMP_NUM_THREADS"] == "3"
    assert seen["argv"][1:] == ["-m", "lpdebug.batch", "--child"]
    assert (line["status"], line["triage"]) == ("died", None)
    assert line["error"] == "cannot start the triage process: no more processes"
    monkeypatch.setenv("OMP_NUM_THREADS", "5")  # the user's own setting wins
    batch.triage_vmcore(vmcore, batch.BatchOptions(threads=3))
    assert seen["env"]["OMP_NUM_THREADS"] == "5"
