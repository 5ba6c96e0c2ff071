"""
Debug info as users have it, on the committed real-kernel fixtures (fast tier):

- a distribution's layout (Debian's -dbg package: ``usr/lib/debug/boot/vmlinux-REL`` and
  ``usr/lib/debug/lib/modules/REL/kernel/...``; Fedora's ``lib/modules/REL/vmlinux``) found by
  ``--debug-directory`` alone, with no ``-s``;
- ``-s DIR`` with compressed modules (``.ko.xz``, ``.ko.gz``, ``.ko.zst``), decompressed into the
  cache, never next to them;
- a module file whose build ID is not the loaded module's refused by name with both IDs, and a file
  for a module that is not loaded: one warning line each, none from drgn;
- module debug info withheld (``-s vmlinux`` only): the findings stay the same (names and function
  starts come from each module's kallsyms in memory), and whatever could not be checked is said.

The same on full testbed captures (and the whole Debian -dbg layout) is in
tests/test_debuginfo_testbed.py.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

from lpdebug import coverage, report, sample, target
from lpdebug.model import DiagnosticKind

pytestmark = pytest.mark.fixtures

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "vmcores", "fixtures")


def paths(name):
    return sample.fixture_paths(os.path.join(FIXTURES, name))


def release(name):
    return sample.load_fixture(os.path.join(FIXTURES, name))["scenario"]["kernel_release"]


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "lpdebug.commands.cli", *args],
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, **(env or {})), cwd=REPO)


def without_coverage(doc):
    doc = dict(doc)
    doc.pop("coverage")
    if doc.get("summary"):
        doc["summary"] = {k: v for k, v in doc["summary"].items() if k != "coverage"}
    return doc


def triage_json(*args, env=None):
    proc = run_cli("triage", "--json", "--all-records", *args, env=env)
    # 3 (incomplete) too: a fixture holds only the pages an older lpdebug read.
    assert proc.returncode in (0, 1, 3), proc.stderr
    return json.loads(proc.stdout), proc.stderr


def full_json(name):
    p = paths(name)
    args = ["-c", p["vmcore"], "-s", p["vmlinux"]]
    for ko in p["modules"]:
        args += ["-s", ko]
    return triage_json(*args, "--no-default-debug-info")[0]


# Where nolivepatch's modules live in Debian's linux-image-REL-dbg package.
DEBIAN_MODULE_DIRS = {"loop.ko": "drivers/block", "crc-itu-t.ko": "lib", "xor.ko": "crypto"}


def debian_layout(root, name="nolivepatch", vmlinux_at="boot/vmlinux-{rel}"):
    """The fixture's real files laid out under ROOT/usr/lib/debug as the -dbg package installs them."""
    p, rel = paths(name), release(name)
    debug = os.path.join(root, "usr", "lib", "debug")
    vmlinux = os.path.join(debug, vmlinux_at.format(rel=rel))
    os.makedirs(os.path.dirname(vmlinux))
    shutil.copy(p["vmlinux"], vmlinux)
    for ko in p["modules"]:
        where = os.path.join(debug, "lib", "modules", rel, "kernel",
                             DEBIAN_MODULE_DIRS[os.path.basename(ko)])
        os.makedirs(where, exist_ok=True)
        shutil.copy(ko, where)
    return debug


@pytest.mark.parametrize("vmlinux_at", ["boot/vmlinux-{rel}", "lib/modules/{rel}/vmlinux"])
def test_distro_layout_is_found_by_debug_directory_alone(tmp_path, vmlinux_at):
    debug = debian_layout(str(tmp_path), vmlinux_at=vmlinux_at)
    doc, stderr = triage_json("-c", paths("nolivepatch")["vmcore"], "--debug-directory", debug,
                              "--no-default-debug-info")
    cov = doc["coverage"]
    assert cov["vmlinux_found_by"] == "search"
    assert cov["vmlinux_debug_file"] == os.path.basename(vmlinux_at.format(rel=release("nolivepatch")))
    assert sorted(m["name"] for m in cov["modules"]) == ["crc_itu_t", "loop", "xor"]
    assert cov["modules_without_debug_info"] == []
    assert all(m["found_by"] == "search" and m["names_from"] == "debug_info" for m in cov["modules"])
    assert stderr == ""
    # The same report as with every file given by -s.
    assert without_coverage(doc) == without_coverage(full_json("nolivepatch"))


def test_debug_directory_without_vmlinux_is_one_line_naming_where_it_looked(tmp_path):
    proc = run_cli("triage", "-c", paths("nolivepatch")["vmcore"], "--debug-directory",
                   str(tmp_path), "--no-default-debug-info")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "no debug info for the target's vmlinux" in lines[0] and str(tmp_path) in lines[0]


def _compress(src, dest_dir, suffix):
    dest = os.path.join(dest_dir, os.path.basename(src) + suffix)
    tool = {".xz": ["xz", "-c"], ".gz": ["gzip", "-c"], ".zst": ["zstd", "-q", "-c"]}[suffix]
    with open(dest, "wb") as out:
        subprocess.run(tool + [src], stdout=out, check=True)
    return dest


def test_compressed_modules_in_a_directory_tree(tmp_path):
    p = paths("settled")
    mods = tmp_path / "lib" / "modules" / "extra"
    mods.mkdir(parents=True)
    suffixes = {"lpd_victim.ko": ".xz", "lpd_patch.ko": ".gz", "livepatch-sample.ko": ".zst"}
    for ko in p["modules"]:
        _compress(ko, str(mods), suffixes[os.path.basename(ko)])
    # A module that is not loaded, in the same tree: not opened, not decompressed, no warning
    # (a distribution's lib/modules/RELEASE holds thousands).
    _compress(next(k for k in paths("toc-crash")["modules"] if k.endswith("/lpd_toc_crash.ko")),
              str(mods), ".xz")
    before = sorted(os.listdir(mods))
    cache = tmp_path / "cache"
    env = {"LPDEBUG_CACHE": str(cache)}
    doc, stderr = triage_json("-c", p["vmcore"], "-s", p["vmlinux"], "-s", str(tmp_path / "lib"),
                              "--no-default-debug-info", env=env)
    assert stderr == ""
    cov = doc["coverage"]
    assert cov["modules_without_debug_info"] == []
    assert {m["name"]: m["debug_file"] for m in cov["modules"]} == {
        "livepatch_sample": "livepatch-sample.ko", "lpd_patch": "lpd_patch.ko",
        "lpd_victim": "lpd_victim.ko"}
    assert without_coverage(doc) == without_coverage(full_json("settled"))
    # Decompressed into the cache, keyed by content; nothing written next to the originals.
    assert sorted(os.listdir(mods)) == before
    cached = sorted(os.path.basename(f) for d in os.listdir(cache / "debuginfo")
                    for f in os.listdir(cache / "debuginfo" / d))
    assert cached == ["livepatch-sample.ko", "lpd_patch.ko", "lpd_victim.ko"]
    # A second run reuses the cache (same files, same content).
    stamp = {d: os.stat(cache / "debuginfo" / d).st_mtime_ns for d in os.listdir(cache / "debuginfo")}
    triage_json("-c", p["vmcore"], "-s", p["vmlinux"], "-s", str(tmp_path / "lib"),
                "--no-default-debug-info", env=env)
    assert {d: os.stat(cache / "debuginfo" / d).st_mtime_ns
            for d in os.listdir(cache / "debuginfo")} == stamp


def test_another_kernels_vmlinux_in_a_directory_is_passed_over(tmp_path):
    p = paths("settled")
    os.symlink(paths("settled-64k")["vmlinux"], tmp_path / "vmlinux-6.12.117-64k")
    os.symlink(p["vmlinux"], tmp_path / "vmlinux-6.12.117")
    doc, stderr = triage_json("-c", p["vmcore"], "-s", str(tmp_path), *sum((["-s", k] for k in p["modules"]), []),
                              "--no-default-debug-info")
    assert stderr == ""
    assert doc["coverage"]["vmlinux_debug_file"] == "vmlinux-6.12.117"
    assert doc["coverage"]["vmlinux_found_by"] == "given"


def test_module_with_another_build_id_is_refused_by_name_with_both_ids():
    # settled-64k's lpd_victim.ko: the same module source built for another kernel.
    p = paths("settled")
    wrong = next(k for k in paths("settled-64k")["modules"] if k.endswith("/lpd_victim.ko"))
    right = next(k for k in p["modules"] if k.endswith("/lpd_victim.ko"))
    wrong_id, right_id = target.file_build_id(wrong), target.file_build_id(right)
    assert wrong_id != right_id
    others = [k for k in p["modules"] if k != right]
    args = ["-c", p["vmcore"], "-s", p["vmlinux"], "-s", wrong]
    for ko in others:
        args += ["-s", ko]
    doc, stderr = triage_json(*args, "--no-default-debug-info")
    lines = stderr.strip().splitlines()
    refused = [line for line in lines if "lpd_victim.ko" in line]
    assert len(refused) == 1, stderr
    assert "refused" in refused[0] and wrong_id in refused[0] and right_id in refused[0]
    assert not any("drgn" in line or "did not match" in line for line in lines), stderr
    cov = doc["coverage"]
    assert cov["refused"] == [{"file": "lpd_victim.ko", "module": "lpd_victim",
                               "file_build_id": wrong_id, "loaded_build_id": right_id,
                               "reason": "build_id_mismatch", "detail": None}]
    assert cov["modules_without_debug_info"] == ["lpd_victim"]
    victim = next(m for m in cov["modules"] if m["name"] == "lpd_victim")
    assert victim["build_id"] == right_id and victim["names_from"] == "kallsyms"


def test_module_that_is_not_loaded_is_one_warning_line():
    p = paths("settled")
    extra = next(k for k in paths("toc-crash")["modules"] if k.endswith("/lpd_toc_crash.ko"))
    args = ["-c", p["vmcore"], "-s", p["vmlinux"], "-s", extra]
    for ko in p["modules"]:
        args += ["-s", ko]
    proc = run_cli("patches", *args, "--no-default-debug-info")
    assert proc.returncode in (0, 3), proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "lpd_toc_crash.ko" in lines[0] and "not loaded" in lines[0]


def _finding_key(f):
    return (f.kind, f.pid, f.frame, f.address, f.expected_toc, f.actual_toc, f.message)


@pytest.mark.parametrize("name", ["toc-crash", "toc-corrupt", "stuck"])
def test_withheld_module_debug_info_keeps_the_findings(name):
    p = paths(name)
    full = report.triage(target.open_vmcore(p["vmcore"], [p["vmlinux"], *p["modules"]],
                                            default_debug_info=False), all_records=True)
    bare = report.triage(target.open_vmcore(p["vmcore"], [p["vmlinux"]], default_debug_info=False),
                         all_records=True)
    assert sorted(map(_finding_key, bare.findings)) == sorted(map(_finding_key, full.findings))
    cov = bare.coverage
    assert cov.modules_without_debug_info == sorted(m.name for m in full.coverage.modules)
    # Every module a finding or a frame involves is named from its kallsyms in memory...
    for module in cov.modules:
        if "findings" in module.used_by or "frames" in module.used_by:
            assert module.names_from == "kallsyms", module
    # ...and so are the frames: the same functions as with debug info.
    def frames(r):
        return [(t.pid, f.index, f.symbol, f.offset, f.module) for t in r.tasks for f in t.frames]

    assert frames(bare) == frames(full)
    # What still could not be named (the fixture's vmcore lacks a module's kallsyms pages) is said,
    # as a typed diagnostic naming the module.
    nameless = [m.name for m in cov.modules if m.names_from is None]
    missing = [d for d in bare.diagnostics
               if d.kind == DiagnosticKind.MISSING_DEBUG_INFO and d.stage == "checks"]
    for module in nameless:
        assert any(module in d.message for d in missing), (module, missing)
    assert all(any(m in d.message for m in nameless) for d in missing)


def test_withheld_debug_info_is_at_the_top_of_the_report_and_on_stderr():
    p = paths("toc-crash")
    proc = run_cli("triage", "-c", p["vmcore"], "-s", p["vmlinux"], "--no-default-debug-info")
    assert proc.returncode in (1, 3), proc.stderr
    # The coverage block follows the verdict (whose summary carries the coverage line).
    assert "\nCoverage\n--------\n" in proc.stdout
    block = proc.stdout.split("\nCoverage\n--------\n", 1)[1].split("\n\n\n")[0]
    assert proc.stdout.index("\nCoverage\n") < proc.stdout.index("Findings (")
    assert "4 loaded, 0 with debug info" in block
    warned = [line for line in proc.stderr.splitlines() if "lpd_toc_crash" in line]
    assert len(warned) == 1 and "findings" in warned[0] and "kallsyms" in warned[0]
    assert "warning: " + warned[0].split("warning: ", 1)[1] in block
    assert "Findings (2)" in proc.stdout


def test_coverage_line_and_block_name_every_missing_module():
    p = paths("toc-crash")
    result = report.triage(target.open_vmcore(p["vmcore"], [p["vmlinux"]], default_debug_info=False))
    from lpdebug import render

    line = render.coverage_line(result.coverage)
    assert "\n" not in line and line.startswith("Coverage: ")
    for name in result.coverage.modules_without_debug_info:
        assert name in line
    assert "0 of 4 modules with debug info" in line
    assert coverage.warnings(result.coverage)
