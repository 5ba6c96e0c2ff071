"""
A clear one-line error for each kind of bad input issue 10 found ending in "internal error", on a real
capture (the committed ``stuck`` fixture) damaged in one place:

- an ELF core truncated in its program headers, or with a garbled header (libelf "invalid data");
- VMCOREINFO values drgn rejects (BadDataError, and numbers too large for it);
- a truncated vmlinux (pyelftools' ELFParseError);
- a damaged module: skipped with a warning that names it, the report goes on;
- a VMCOREINFO without NUMBER(RADIX_MMU) and a vmlinux without cur_cpu_spec: a warning saying what
  cannot be read, and the rest of the report, incomplete (exit 3), instead of a livepatch state lost to
  a LookupError (with cur_cpu_spec, as for 6.1's VMCOREINFO, the report is the capture's).

Each message names the file, says what is wrong with it and what to do.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

from lpdebug import sample

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz"))
import damage  # noqa: E402

pytestmark = pytest.mark.fixtures

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(REPO, "vmcores", "fixtures", "stuck")


@pytest.fixture(scope="module")
def stuck():
    return sample.fixture_paths(FIXTURE)


def _cli(*argv):
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("LPDEBUG_TRACEBACK", None)
    return subprocess.run([sys.executable, "-m", "lpdebug.commands.cli", "triage", *argv],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=300)


def _lines(stderr, kind):
    return [line for line in stderr.splitlines() if line.startswith(f"lpdebug: {kind}:")]


def _one_error(proc, *words):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    errors = _lines(proc.stderr, "error")
    assert len(errors) == 1, proc.stderr
    assert "internal error" not in errors[0] and "Traceback" not in proc.stderr
    for word in words:
        assert word in errors[0], errors[0]
    assert proc.stdout == ""
    return errors[0]


def _core(stuck):
    with open(stuck["vmcore"], "rb") as f:
        return damage.Core(f.read())


def _write(tmp_path, core, name="vmcore"):
    path = str(tmp_path / name)
    with open(path, "wb") as f:
        f.write(core.data)
    return path


def _vmcoreinfo_with(tmp_path, stuck, key, value):
    core = _core(stuck)
    note, lines = damage._vmcoreinfo_lines(core)
    assert any(line.startswith(key + b"=") for line in lines)
    lines = [key + b"=" + value if line.startswith(key + b"=") else line for line in lines
             if value is not None or not line.startswith(key + b"=")]
    damage._write_vmcoreinfo(core, note, lines)
    return _write(tmp_path, core)


def test_core_truncated_in_its_program_headers(tmp_path, stuck):
    core = _core(stuck)
    del core.data[core.phoff + core.phentsize * (core.phnum // 2):]
    path = _write(tmp_path, core)
    line = _one_error(_cli("-c", path, "-s", stuck["vmlinux"]), path, "cannot open as a core dump",
                      "truncated or damaged", "copy the vmcore again")
    assert "libelf" in line


def test_core_with_a_garbled_header(tmp_path, stuck):
    core = _core(stuck)
    core.set_word(32, 0xFFFFFFFFFFFFFF00)  # e_phoff
    path = _write(tmp_path, core)
    _one_error(_cli("-c", path, "-s", stuck["vmlinux"]), path, "invalid data", "truncated or damaged")


def test_core_that_is_no_core(tmp_path, stuck):
    path = str(tmp_path / "vmcore")
    with open(path, "wb") as f:
        f.write(b"\x7fELF" + bytes(60))
    _one_error(_cli("-c", path, "-s", stuck["vmlinux"]), path)


@pytest.mark.parametrize("key, value", [
    (b"PAGESIZE", b"-1"),  # drgn's BadDataError
    (b"PAGESIZE", b"99999999999999999999999"),  # too large for drgn
    (b"SYMBOL(swapper_pg_dir)", b"ffffffffffffffffffff"),
    pytest.param(b"NUMBER(MAX_PHYSMEM_BITS)", b"-1", marks=pytest.mark.needs_drgn(
        "0.0.33", "drgn reads NUMBER(MAX_PHYSMEM_BITS) from 0.0.33 on; an older drgn ignores it, "
        "so the damaged value changes nothing")),
])
def test_vmcoreinfo_with_a_bad_value(tmp_path, stuck, key, value):
    path = _vmcoreinfo_with(tmp_path, stuck, key, value)
    _one_error(_cli("-c", path, "-s", stuck["vmlinux"]), path, "VMCOREINFO",
               "copy the vmcore again")


@pytest.mark.parametrize("keep", [3000, 10_000_000])
def test_truncated_vmlinux(tmp_path, stuck, keep):
    path = str(tmp_path / "vmlinux")
    with open(stuck["vmlinux"], "rb") as src, open(path, "wb") as dst:
        dst.write(src.read(keep))
    _one_error(_cli("-c", stuck["vmcore"], "-s", path), path, "not a valid ELF file",
               "truncated or damaged", "intact copy")


def test_vmlinux_with_a_section_past_its_end(tmp_path, stuck):
    # drgn accepts the file (its build ID fits) and indexes it lazily: libelf's "invalid
    # section header" surfaced at the first lookup as an internal error (fuzz seed 10 run 1341).
    from elftools.elf.elffile import ELFFile

    path = str(tmp_path / "vmlinux")
    shutil.copyfile(stuck["vmlinux"], path)
    with open(path, "rb") as f:
        elf = ELFFile(f)
        index = next(i for i, s in enumerate(elf.iter_sections()) if s.name == ".debug_abbrev")
        header = elf.header["e_shoff"] + index * elf.header["e_shentsize"]
        offset = elf.get_section(index)["sh_offset"]
    with open(path, "r+b") as f:
        f.seek(header + 24)  # sh_offset
        f.write((offset + (8 << 48)).to_bytes(8, "little"))
    line = _one_error(_cli("-c", stuck["vmcore"], "-s", path), path, "debug info cannot be read",
                      "invalid section header", "truncated or damaged", "intact copy")
    assert line.startswith(f"lpdebug: error: {path}:")


def _damaged_module(tmp_path, stuck, directory=None):
    from elftools.elf.elffile import ELFFile

    module = next(m for m in stuck["modules"] if os.path.basename(m) == "lpd_victim.ko")
    path = str(tmp_path / "lpd_victim.ko") if directory is None else directory
    os.makedirs(os.path.dirname(path), exist_ok=True)
    shutil.copyfile(module, path)
    with open(path, "rb") as f:
        rela = ELFFile(f).get_section_by_name(".rela.debug_info")["sh_offset"]
    with open(path, "r+b") as f:
        f.seek(rela + 8)  # the first relocation's r_info: a symbol index far past the symbol table
        f.write((0xFFFFFF00000001).to_bytes(8, "little"))
    return module, path


def test_damaged_module_is_skipped_with_a_warning(tmp_path, stuck):
    # drgn indexes a file given to Module.try_file lazily: the bad relocation would only
    # surface at the first lookup, and fail every lookup after it.
    module, path = _damaged_module(tmp_path, stuck)
    others = [m for m in stuck["modules"] if m != module]
    args = ("-c", stuck["vmcore"], "-s", stuck["vmlinux"], "-s", path,
            *[a for m in others for a in ("-s", m)])
    proc = _cli(*args)
    assert proc.returncode == 3, proc.stderr
    assert not _lines(proc.stderr, "error") and "Traceback" not in proc.stderr
    warnings = [w for w in _lines(proc.stderr, "warning") if path in w]
    assert len(warnings) == 1 and "damaged" in warnings[0], proc.stderr
    assert "lpd_victim" in warnings[0] and "relocation" in warnings[0], warnings[0]
    assert "Livepatches" in proc.stdout
    # the rest of the report: the stuck transition is still blocked by lpd_stuck
    assert "transition_blocked" in proc.stdout
    report = json.loads(_cli(*args, "--json").stdout)
    damaged = [d for d in report["diagnostics"] if d["kind"] == "missing_debug_info"
               and "lpd_victim.ko" in d["message"] and "damaged" in d["message"]]
    assert len(damaged) == 1, report["diagnostics"]
    assert [r["reason"] for r in report["coverage"]["refused"]] == ["damaged"]
    victim = next(m for m in report["coverage"]["modules"] if m["name"] == "lpd_victim")
    assert victim["debug_file"] is None and victim["names_from"] == "kallsyms"
    assert all(m["debug_file"] for m in report["coverage"]["modules"] if m["name"] != "lpd_victim")


@pytest.mark.parametrize("keep", [100, 20_000])
def test_truncated_module_is_skipped_and_the_report_is_incomplete(tmp_path, stuck, keep):
    module = next(m for m in stuck["modules"] if os.path.basename(m) == "lpd_victim.ko")
    path = str(tmp_path / "lpd_victim.ko")
    with open(module, "rb") as src, open(path, "wb") as dst:
        dst.write(src.read(keep))
    others = [m for m in stuck["modules"] if m != module]
    args = ("-c", stuck["vmcore"], "-s", stuck["vmlinux"], "-s", path,
            *[a for m in others for a in ("-s", m)])
    proc = _cli(*args, "--json")
    assert proc.returncode == 3, proc.stderr
    assert not _lines(proc.stderr, "error") and "Traceback" not in proc.stderr
    warnings = [w for w in _lines(proc.stderr, "warning") if path in w]
    assert len(warnings) == 1 and "truncated or damaged" in warnings[0], proc.stderr
    report = json.loads(proc.stdout)
    assert [(r["module"], r["reason"]) for r in report["coverage"]["refused"]] == [("lpd_victim", "damaged")]
    assert [d["kind"] for d in report["diagnostics"]
            if "lpd_victim.ko" in d["message"]] == ["missing_debug_info"]


def test_damaged_module_found_by_the_search_is_named(tmp_path, stuck):
    # A file drgn's own search finds reaches the Program unchecked: one line naming it.
    from lpdebug.debuginfo import file_build_id

    victim = next(m for m in stuck["modules"] if os.path.basename(m) == "lpd_victim.ko")
    build_id = file_build_id(victim)
    directory = tmp_path / "debug"
    _, path = _damaged_module(tmp_path, stuck,
                              str(directory / ".build-id" / build_id[:2] / f"{build_id[2:]}.debug"))
    line = _one_error(_cli("-c", stuck["vmcore"], "-s", stuck["vmlinux"], "--no-default-debug-info",
                           "--debug-directory", str(directory)),
                      path, "module lpd_victim", "damaged", "intact copy")
    assert "relocation" in line


def _vmlinux_without_cur_cpu_spec(tmp_path, stuck):
    # Every name "cur_cpu_spec" (DWARF and symbol table) becomes one no kernel has: a vmlinux whose
    # debug info lacks the object, as a stripped-down one may.
    with open(stuck["vmlinux"], "rb") as f:
        data = f.read()
    assert data.count(b"cur_cpu_spec\0") >= 2
    path = str(tmp_path / "vmlinux")
    with open(path, "wb") as f:
        f.write(data.replace(b"cur_cpu_spec\0", b"cur_cpu_spex\0"))
    return path


def test_vmcoreinfo_without_radix_mmu_nor_cur_cpu_spec(tmp_path, stuck):
    core = _core(stuck)
    note, lines = damage._vmcoreinfo_lines(core)
    # 6.12's VMCOREINFO gives cur_cpu_spec's address too (SYMBOL(cur_cpu_spec)): drop both
    gone = (b"NUMBER(RADIX_MMU)=", b"SYMBOL(cur_cpu_spec)=")
    assert all(any(line.startswith(key) for line in lines) for key in gone)
    damage._write_vmcoreinfo(core, note, [line for line in lines if not line.startswith(gone)])
    path = _write(tmp_path, core)
    vmlinux = _vmlinux_without_cur_cpu_spec(tmp_path, stuck)
    proc = _cli("-c", path, "-s", vmlinux, *[a for m in stuck["modules"] for a in ("-s", m)])
    assert proc.returncode == 3, proc.stderr
    assert not _lines(proc.stderr, "error") and "Traceback" not in proc.stderr
    # Neither NUMBER(RADIX_MMU) nor cur_cpu_spec: module memory is out of reach.
    warning = [w for w in _lines(proc.stderr, "warning") if "NUMBER(RADIX_MMU)" in w]
    assert len(warning) == 1 and "full debug info" in warning[0]
    # The rest of the report is there, and says what it lost: the patches klp_ops show exist.
    assert "klp_ftrace_handler" in proc.stdout


def test_vmcoreinfo_without_radix_mmu_is_read_through_cur_cpu_spec(tmp_path, stuck):
    # As a 6.1 kernel's VMCOREINFO, which has no NUMBER(RADIX_MMU): the MMU type comes from
    # cur_cpu_spec->mmu_features, and the report is the capture's.
    path = _vmcoreinfo_with(tmp_path, stuck, b"NUMBER(RADIX_MMU)", None)
    proc = _cli("-c", path, "-s", stuck["vmlinux"], *[a for m in stuck["modules"] for a in ("-s", m)],
                "--json", "--all-records")
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.rstrip("\n") == sample.expected_json(FIXTURE).rstrip("\n")


def test_a_real_bug_is_still_an_internal_error(monkeypatch, capsys, stuck):
    from lpdebug import report as tr
    from lpdebug.commands import cli

    def bug(*args, **kwargs):
        raise RuntimeError("a bug in lpdebug")

    monkeypatch.delenv("LPDEBUG_TRACEBACK", raising=False)
    monkeypatch.setattr(tr, "triage", bug)
    with pytest.raises(SystemExit) as exited:
        cli.main(["triage", "-c", stuck["vmcore"], "-s", stuck["vmlinux"]])
    assert exited.value.code == 2
    errors = _lines(capsys.readouterr().err, "error")
    assert errors == ["lpdebug: error: internal error: RuntimeError: a bug in lpdebug "
                      "(set LPDEBUG_TRACEBACK=1 for details)"]
