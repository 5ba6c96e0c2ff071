# SPDX-License-Identifier: GPL-2.0-or-later
"""
Fast tier on the committed real-kernel fixtures (no QEMU, no testbed).

Every fixture under vmcores/fixtures/ (the bundled sample, lpdebug/sample_data/settled, is linked there
too) is a real ppc64le capture cut down by vmcores/fixtures/minimize.py: a vmcore holding only the pages
lpdebug's full triage reads, a vmlinux pruned to the DWARF it needs, the modules, the triage JSON lpdebug
gave on the FULL capture, and the capture's ground truth. Here:

- each fixture stays within 3 MiB compressed;
- lpdebug's full triage (all ftrace records) on the fixture equals, byte for byte, the committed JSON of
  the full capture (when it does not, either lpdebug's answer changed or it now reads memory or types
  the fixture does not hold: regenerate with ``python3 vmcores/fixtures/minimize.py NAME`` on a machine
  with the testbed, and review the JSON diff);
- that JSON agrees with the ground truth the guest itself reported (tracefs, sysfs, /proc).
"""

import collections
import io
import json
import lzma
import os
import tarfile

import pytest

import lpdebug
from lpdebug import sample
import lpdebug as tr

pytestmark = pytest.mark.fixtures

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "vmcores", "fixtures")
LIMIT = 3 * 1024 * 1024


def fixture_names():
    if not os.path.isdir(FIXTURES):
        return []
    return sorted(n for n in os.listdir(FIXTURES) if os.path.isfile(os.path.join(FIXTURES, n, "fixture.json")))


NAMES = fixture_names()


# every scenario vmcores/build makes has its committed fixture, but the scale ones (too big)
SCENARIOS = ["settled", "settled-6.1", "settled-64k", "settled-hash", "settled-64k-hash",
             "settled-6.1-hash", "stuck", "stacked", "toc-corrupt", "toc-crash", "nolivepatch",
             "settled-5.10", "stuck-5.10", "toc-corrupt-5.10", "toc-crash-5.10",
             "panic-5.10"]


def test_minimize_makes_exactly_these_fixtures():
    # its list is explicit: the scale scenarios of the manifest must not become fixtures
    import importlib.util

    spec = importlib.util.spec_from_file_location("minimize", os.path.join(FIXTURES, "minimize.py"))
    minimize = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(minimize)
    assert list(minimize.FIXTURE_SCENARIOS) == SCENARIOS


def test_fixtures_present():
    missing = sorted(set(SCENARIOS) - set(NAMES))
    assert not missing, f"no committed fixture for {missing}: run vmcores/fixtures/minimize.py {' '.join(missing)}"
    assert "settled" in sample.samples(), "the bundled sample is missing from lpdebug/sample_data"
    assert os.path.realpath(os.path.join(FIXTURES, "settled")) == os.path.realpath(sample.sample_dir("settled"))


_results = {}


def result_json(name):
    if name not in _results:
        prog = sample.open_fixture(os.path.join(FIXTURES, name))
        _results[name] = tr.dumps(tr.triage(prog, all_records=True))
    return _results[name]


def doc(name):
    return json.loads(result_json(name))


def fixture_pid(name, comm):
    """PID of the testbed kthread ``comm`` in fixture ``name`` (PIDs shift between boots)."""
    return sample.load_fixture(os.path.join(FIXTURES, name))["scenario"]["lpd_pids"][comm]


def truth(name):
    """{path inside truth/: bytes} of a fixture's ground truth."""
    meta = sample.load_fixture(os.path.join(FIXTURES, name))
    if not meta.get("truth"):
        return {}
    out = {}
    with lzma.open(os.path.join(FIXTURES, name, meta["truth"])) as f:
        with tarfile.open(fileobj=io.BytesIO(f.read())) as tar:
            for m in tar.getmembers():
                if "/" not in m.name:
                    continue
                if m.isfile():
                    out[m.name.split("/", 1)[1]] = tar.extractfile(m).read()
                elif m.isdir():
                    out[m.name.split("/", 1)[1]] = None
    return out


@pytest.mark.parametrize("name", NAMES)
def test_size_limit(name):
    d = os.path.join(FIXTURES, name)
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(d) for f in fs)
    assert total <= LIMIT, f"fixture {name} is {total} bytes compressed, over 3 MiB"


@pytest.mark.parametrize("name", NAMES)
def test_triage_equals_full_capture(name):
    got = result_json(name)
    want = sample.expected_json(os.path.join(FIXTURES, name))
    if got != want:
        # difflib over two 3 MB documents that differ on every record takes minutes: show
        # where they start to differ instead.
        want_lines, got_lines = want.splitlines(), got.splitlines()
        at = next((i for i, (a, b) in enumerate(zip(want_lines, got_lines)) if a != b),
                  min(len(want_lines), len(got_lines)))
        diff = "\n".join([f"first difference at line {at + 1}:"]
                          + [f"- {line}" for line in want_lines[at:at + 8]]
                          + [f"+ {line}" for line in got_lines[at:at + 8]])
        pytest.fail(f"triage of fixture {name} differs from the full capture's JSON "
                    f"(regenerate with vmcores/fixtures/minimize.py {name} if lpdebug's answer changed "
                    f"on purpose):\n{diff}")


@pytest.mark.parametrize("name", NAMES)
def test_schema(name):
    from test_triage_schema import validate_triage

    validate_triage(doc(name))


@pytest.mark.parametrize("name", NAMES)
def test_kernel_matches_truth(name):
    t = truth(name)
    d = doc(name)
    meta = sample.load_fixture(os.path.join(FIXTURES, name))
    if "uname_r" in t:
        assert d["kernel"]["release"] == t["uname_r"].decode().strip()
    assert d["kernel"]["arch"] == "ppc64le"
    sc = meta.get("scenario", {})
    if sc.get("mmu"):
        assert d["kernel"]["mmu"] == sc["mmu"]
    if sc.get("page_size"):
        assert d["kernel"]["page_size"] == sc["page_size"]


@pytest.mark.parametrize("name", NAMES)
def test_modules_match_truth(name):
    t = truth(name)
    if "modules" not in t:
        pytest.skip("no /proc/modules in this fixture's truth")
    want = {line.split()[0] for line in t["modules"].decode().splitlines() if line.strip()}
    images = {i["module"] for i in doc(name)["tocs"]["images"] if i.get("module")}
    images.discard("vmlinux")
    assert images == want


def _sysfs_patches(t):
    """
    {patch: {"enabled":.., "transition":.., "replace":..,
             "objects": {obj: {"patched":.., "funcs": {(name, pos)}}}}}
    """
    patches = {}
    for path, data in sorted(t.items()):
        parts = path.split("/")
        if parts[0] != "sys_kernel_livepatch" or len(parts) < 3:
            continue
        p = patches.setdefault(parts[1], {"objects": {}})
        if len(parts) == 3:
            if data is not None:
                p[parts[2]] = data.decode().strip()
            else:
                p["objects"].setdefault(parts[2], {"funcs": set()})
        else:
            o = p["objects"].setdefault(parts[2], {"funcs": set()})
            if len(parts) == 4 and parts[3] == "patched":
                o["patched"] = data.decode().strip()
            elif "," in parts[3]:  # the function's directory (or a file standing for it)
                func, _, pos = parts[3].rpartition(",")
                o["funcs"].add((func, int(pos)))
    return patches


@pytest.mark.parametrize("name", NAMES)
def test_livepatch_matches_sysfs(name):
    t = truth(name)
    want = _sysfs_patches(t)
    got = {p["name"]: p for p in doc(name)["livepatch"]["patches"]}
    assert set(got) == set(want)
    for pname, w in want.items():
        g = got[pname]
        for attr in ("enabled", "transition", "replace"):
            if attr in w:
                assert int(g[attr]) == int(w[attr]), (pname, attr)
        gobjs = {(o["name"] or "vmlinux"): o for o in g["objects"]}
        assert set(gobjs) == set(w["objects"]), pname
        for oname, wo in w["objects"].items():
            go = gobjs[oname]
            if "patched" in wo:
                assert int(go["patched"]) == int(wo["patched"]), (pname, oname)
            # sysfs names a function "old_name,sympos" with sympos 0 shown as 1
            funcs = {(f["name"], f["sympos"] or 1) for f in go["funcs"]}
            assert funcs == wo["funcs"], (pname, oname)


def _enabled_functions(text):
    """[(symbol, module, refcount, ipmodify)] of tracefs enabled_functions."""
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        head, _, rest = line.partition(" (")
        words = head.split()
        sym = words[0]
        mod = words[1][1:-1] if len(words) > 1 and words[1].startswith("[") else None
        count, _, flags = rest.partition(")")
        out.append((sym, mod, int(count), " I " in f" {flags} "))
    return out


@pytest.mark.parametrize("name", NAMES)
def test_ftrace_records_match_enabled_functions(name):
    t = truth(name)
    if "enabled_functions" not in t:
        pytest.skip("no enabled_functions in this fixture's truth")
    lines = collections.Counter(_enabled_functions(t["enabled_functions"].decode()))
    # the kernel lists exactly the records with a refcount, named by kallsyms' rules (kallsyms
    # knows no sizes: it names a record past its symbol's end after that symbol)
    records = collections.Counter((r["symbol"] or r["past_end_of"], r["module"], r["refcount"],
                                   "IPMODIFY" in r["flags"])
                                  for r in doc(name)["ftrace"]["records"] if r["refcount"])
    assert lines == records, (sorted((lines - records).items())[:10], sorted((records - lines).items())[:10])


INJECTED_KINDS = {"frame_toc": "frame_toc_mismatch", "livepatch_stack_toc": "livepatch_stack_toc_mismatch"}


def _injected(data):
    """The fault records of injected.json (one JSON object a line inside a list; other lines ignored)."""
    try:
        items = json.loads(data)
        return items if isinstance(items, list) else [items]
    except ValueError:
        out = []
        for line in data.decode(errors="replace").splitlines():
            line = line.strip().rstrip(",")
            if line.startswith("{"):
                out.append(json.loads(line))
        return out


INJECTED = [n for n in NAMES if sample.load_fixture(os.path.join(FIXTURES, n)).get("injected")]


def test_fault_scenarios_present():
    assert {"toc-corrupt", "toc-crash"} <= set(INJECTED)


@pytest.mark.parametrize("name", INJECTED)
def test_injected_faults_found(name):
    t = truth(name)
    assert "injected.json" in t
    findings = doc(name)["findings"]
    injected = _injected(t["injected.json"])
    assert injected
    for inj in injected:
        kind = INJECTED_KINDS.get(inj.get("kind"))
        matches = [f for f in findings
                   if (kind is None or f["kind"] == kind) and f["pid"] == inj.get("pid")
                   and f["severity"] == "error"
                   and ("written_value" not in inj or f["actual_toc"] == inj["written_value"])
                   and ("expected_toc" not in inj or f["expected_toc"] == inj["expected_toc"])]
        assert matches, (inj, findings)


def test_open_sample_api():
    prog = sample.open_sample()
    r = lpdebug.triage(prog)
    assert r.kernel.arch == "ppc64le"
    assert r.livepatch.patches, "the sample has livepatches"
    paths = sample.sample_paths()
    for key in ("vmcore", "vmlinux"):
        assert os.path.isfile(paths[key])
    assert all(os.path.isfile(m) for m in paths["modules"])


def test_sample_cli_paths(capsys):
    assert sample.main(["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert os.path.isfile(out["vmcore"])


@pytest.mark.parametrize("name", ["toc-crash", "toc-crash-5.10"])
def test_crashed_task_backtrace_equals_the_oops(name):
    """The crashed task's frames in the fixture's JSON are those of the oops
    the kernel printed to its console (kept as truth/console.log)."""
    from oops import oops_frames

    console = truth(name).get("console.log")
    assert console, f"fixture {name} has no truth/console.log: regenerate it with minimize.py {name}"
    want = oops_frames(console.decode(errors="replace"))
    (task,) = [t for t in doc(name)["tasks"] if t["crashed"]]
    got = [(f["symbol"], f["offset"], f["module"]) for f in task["frames"]]
    assert got == [w.key() for w in want]
    assert all(w.sp is None or w.sp == f["sp"] for f, w in zip(task["frames"], want))


def test_panic_backtrace_equals_the_panic_stack_dump():
    """panic() without an exception frame (sysrq c on 5.10): the crash note
    comes from ppc_save_regs(); from panic() outward the frames are those of
    the stack panic()'s dump_stack() printed (truth/console.log)."""
    from oops import call_trace_after

    name = "panic-5.10"
    console = truth(name).get("console.log")
    assert console, f"fixture {name} has no truth/console.log: regenerate it with minimize.py {name}"
    dump = call_trace_after(console.decode(errors="replace"), "Kernel panic - not syncing")
    (task,) = [t for t in doc(name)["tasks"] if t["crashed"]]
    assert task["cpu_registers"]["trap"] == 0 and task["frames"][0]["symbol"] == "__crash_kexec"
    first = next(i for i, e in enumerate(dump) if e.symbol == "panic")
    want, got = dump[first:], task["frames"][1:]
    assert [(f["symbol"], f["sp"]) for f in got] == [(e.symbol, e.sp) for e in want]
    assert [(f["symbol"], f["offset"], f["module"]) for f in got[1:]] == [e.key() for e in want[1:]]
