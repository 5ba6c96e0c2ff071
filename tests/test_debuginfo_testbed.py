"""
Debug info as users have it, on the full testbed captures:

- nolivepatch runs Debian's own kernel; vmcores/build unpacks its linux-image-REL-dbg package (the
  vmlinux and the loaded modules, at the package's own paths under usr/lib/debug). ``lpdebug triage
  -c VMCORE --debug-directory ROOT/usr/lib/debug`` finds vmlinux and every module with no ``-s``, by
  release path, and by build ID alone (the package's ``.build-id`` links);
- with every module's debug info withheld (``-s vmlinux`` only), toc-crash, toc-corrupt and stuck give
  the same findings, frames and livepatch names as with full debug info: module names and function
  starts come from each module's kallsyms in memory; nothing is left unchecked.
"""

import json
import os
import subprocess
import sys

import pytest

from lpdebug import report, target
from lpdebug.model import DiagnosticKind
from testbed import scenario, truth

pytestmark = pytest.mark.testbed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "lpdebug.commands.cli", *args],
                          capture_output=True, text=True, timeout=900, cwd=REPO)


def triage_json(*args):
    proc = run_cli("triage", "--json", "--all-records", *args)
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout), proc.stderr


def without_coverage(doc):
    doc = dict(doc)
    doc.pop("coverage")
    if doc.get("summary"):
        doc["summary"] = {k: v for k, v in doc["summary"].items() if k != "coverage"}
    return doc


def debian_debug_root():
    """usr/lib/debug of the unpacked -dbg package that nolivepatch's vmlinux comes from."""
    s = scenario("nolivepatch")
    vmlinux = os.path.realpath(s["vmlinux"])
    suffix = os.path.join("usr", "lib", "debug", "boot", "vmlinux-" + s["kernel_release"])
    assert vmlinux.endswith(os.sep + suffix), vmlinux
    return vmlinux[: -len(os.path.join("boot", "vmlinux-" + s["kernel_release"])) - 1]


def with_files_json(name):
    s = scenario(name)
    args = ["-c", s["vmcore"], "-s", s["vmlinux"]]
    for ko in s["modules"]:
        args += ["-s", ko]
    return triage_json(*args, "--no-default-debug-info")[0]


def test_debian_dbg_package_is_found_by_debug_directory_alone():
    s = scenario("nolivepatch")
    debug = debian_debug_root()
    doc, stderr = triage_json("-c", s["vmcore"], "--debug-directory", debug)
    cov = doc["coverage"]
    assert cov["vmlinux_found_by"] == "search"
    assert cov["vmlinux_debug_file"] == "vmlinux-" + s["kernel_release"]
    loaded = sorted(m["name"] for m in cov["modules"])
    assert loaded == sorted(os.path.basename(k)[:-3].replace("-", "_") for k in s["modules"])
    assert cov["modules_without_debug_info"] == []
    assert all(m["found_by"] == "search" for m in cov["modules"])
    assert stderr == ""
    assert without_coverage(doc) == without_coverage(with_files_json("nolivepatch"))


def test_debian_debug_info_is_found_by_build_id_alone(tmp_path):
    # Only the .build-id/xx/yyyy.debug links a -dbg package installs, nothing by release path.
    s = scenario("nolivepatch")
    for path in [s["vmlinux"], *s["modules"]]:
        build_id = target.file_build_id(path)
        link = tmp_path / ".build-id" / build_id[:2] / (build_id[2:] + ".debug")
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.realpath(path), link)
    doc, stderr = triage_json("-c", s["vmcore"], "--debug-directory", str(tmp_path),
                              "--no-default-debug-info")
    cov = doc["coverage"]
    assert cov["vmlinux_found_by"] == "search"
    assert cov["modules_without_debug_info"] == []
    assert stderr == ""
    assert without_coverage(doc) == without_coverage(with_files_json("nolivepatch"))


def kernel_module_symbols(name):
    """address -> names of module symbols, from the guest's own /proc/kallsyms."""
    table = {}
    with open(truth(name, "kallsyms")) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 4 and parts[3].startswith("["):
                table.setdefault(int(parts[0], 16), set()).add(parts[2])
    return table


def _finding_key(f):
    return (f.kind, f.pid, f.frame, f.address, f.expected_toc, f.actual_toc, f.message)


@pytest.mark.parametrize("name", ["toc-crash", "toc-corrupt", "stuck"])
def test_withheld_module_debug_info_changes_no_finding(name):
    s = scenario(name)
    full = report.triage(target.open_vmcore(s["vmcore"], [s["vmlinux"], *s["modules"]],
                                            default_debug_info=False), all_records=True)
    bare = report.triage(target.open_vmcore(s["vmcore"], [s["vmlinux"]], default_debug_info=False),
                         all_records=True)
    assert sorted(map(_finding_key, bare.findings)) == sorted(map(_finding_key, full.findings))
    if name == "toc-crash":
        assert {f.kind for f in bare.findings} == {"crashed_cpu_toc_mismatch", "frame_toc_mismatch"}
    cov = bare.coverage
    assert cov.modules_without_debug_info == sorted(m.name for m in full.coverage.modules)
    assert all(m.names_from == "kallsyms" for m in cov.modules), cov.modules
    assert [d for d in bare.diagnostics if d.kind == DiagnosticKind.MISSING_DEBUG_INFO] == []
    assert bare.diagnostics == [] or [d.message for d in bare.diagnostics] == [
        d.message for d in full.diagnostics]
    def frames(r):
        return [(t.pid, f.index, f.pc, f.symbol, f.offset, f.module, f.toc_restore,
                 f.toc_restored_before_pc, f.toc_slot) for t in r.tasks for f in t.frames]

    assert frames(bare) == frames(full)
    def new_symbols(r):
        return [(f.name, f.new_symbol, f.new_module) for p in r.livepatch.patches
                for o in p.objects for f in o.funcs]

    assert new_symbols(bare) == new_symbols(full)
    assert None not in [sym for _, sym, _ in new_symbols(bare)]
    # The names are the kernel's own: every module frame's function is in the guest's /proc/kallsyms
    # at the function's start.
    kallsyms = kernel_module_symbols(name)
    module_frames = [f for t in bare.tasks for f in t.frames if f.module is not None]
    assert module_frames
    for f in module_frames:
        assert f.symbol in kallsyms.get(f.pc - f.offset, ()), (f.pc, f.symbol, f.module)


def test_withheld_module_debug_info_is_said_on_stderr_and_at_the_top():
    s = scenario("toc-crash")
    proc = run_cli("triage", "-c", s["vmcore"], "-s", s["vmlinux"], "--no-default-debug-info")
    assert proc.returncode == 1, proc.stderr
    assert "\nCoverage\n--------\n" in proc.stdout
    warned = [line for line in proc.stderr.splitlines()
              if "no debug info for module lpd_toc_crash" in line]
    assert len(warned) == 1 and "findings" in warned[0]
    assert "Findings (2)" in proc.stdout
