# SPDX-License-Identifier: GPL-2.0-or-later
"""
Tests of lpdebug.target: opening vmcores with debug info from files and
directories, the build-ID check, missing debug info, files that are not
kernel cores (testbed), and the guest VMCOREINFO note parser (synthetic).
"""

import os
import shutil
import signal
import struct
import subprocess
import time

import pytest

from lpdebug import errors, kernel, target
from testbed import scenario

SCENARIO = "settled"


@pytest.mark.testbed
def test_open_vmcore_with_files():
    s = scenario(SCENARIO)
    prog = target.open_vmcore(s["vmcore"], [s["vmlinux"], *s["modules"]], default_debug_info=False)
    assert kernel.release(prog) == open(os.path.join(s["truth"], "uname_r")).read().strip()
    assert target.target_warnings(prog) == []
    # Module debug info is in: a module function is found by name.
    assert prog.symbol("lpd_victim_work").address


@pytest.mark.testbed
def test_open_vmcore_with_a_directory(tmp_path):
    s = scenario(SCENARIO)
    (tmp_path / "mods").mkdir()
    os.symlink(s["vmlinux"], tmp_path / "vmlinux")
    for ko in s["modules"]:
        os.symlink(ko, tmp_path / "mods" / os.path.basename(ko))
    (tmp_path / "README").write_text("not debug info")
    files = target.debug_info_files([str(tmp_path)])
    assert sorted(os.path.basename(f) for f in files) == sorted(
        ["vmlinux", *(os.path.basename(k) for k in s["modules"])])
    prog = target.open_vmcore(s["vmcore"], [str(tmp_path)], default_debug_info=False)
    assert prog.symbol("livepatch_lpd_victim_work_patch").address


@pytest.mark.testbed
def test_module_file_of_an_unloaded_module_is_a_warning():
    s = scenario(SCENARIO)
    stuck_ko = next(k for k in scenario("stuck")["modules"] if os.path.basename(k) == "lpd_stuck.ko")
    prog = target.open_vmcore(s["vmcore"], [s["vmlinux"], *s["modules"], stuck_ko], default_debug_info=False)
    warnings = target.target_warnings(prog)
    assert len(warnings) == 1 and "lpd_stuck.ko" in warnings[0] and "not loaded" in warnings[0]


@pytest.mark.testbed
def test_build_id_mismatch_names_both_ids():
    s = scenario(SCENARIO)
    other = shutil.which("true")  # any ELF executable with another build ID
    expected = kernel.vmcoreinfo(target.open_vmcore(s["vmcore"], [s["vmlinux"]], default_debug_info=False))["BUILD-ID"]
    actual = target.file_build_id(other)
    assert actual and actual != expected
    with pytest.raises(errors.BuildIdMismatch) as info:
        target.open_vmcore(s["vmcore"], [other], default_debug_info=False)
    assert info.value.expected == expected and info.value.actual == actual
    assert expected in str(info.value) and actual in str(info.value)


@pytest.mark.testbed
def test_missing_debug_info_is_a_clear_error():
    s = scenario(SCENARIO)
    with pytest.raises(errors.DebugInfoError) as info:
        target.open_vmcore(s["vmcore"], [], default_debug_info=False)
    message = str(info.value)
    build_id = kernel.parse_vmcoreinfo(open(s["vmcoreinfo"]).read())["BUILD-ID"]
    assert "no debug info for the target's vmlinux" in message
    assert build_id.lower() in message


@pytest.mark.testbed
def test_missing_path_is_a_clear_error():
    s = scenario(SCENARIO)
    with pytest.raises(errors.DebugInfoError, match="no such file"):
        target.open_vmcore(s["vmcore"], ["/nonexistent/vmlinux"], default_debug_info=False)


def _elf_core(path, machine=21):
    # ELF64 LE ET_CORE with no program headers: a core file, but not a kernel's.
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    header = ident + struct.pack("<HHIQQQIHHHHHH", 4, machine, 1, 0, 0, 0, 0, 64, 56, 0, 64, 0, 0)
    path.write_bytes(header)
    return str(path)


@pytest.mark.synthetic
def test_non_kernel_core_is_a_target_error_synthetic(tmp_path):
    with pytest.raises(errors.TargetError):
        target.open_vmcore(_elf_core(tmp_path / "core"), [], default_debug_info=False)


@pytest.mark.synthetic
def test_not_a_core_file_is_a_target_error_synthetic(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(errors.TargetError, match="cannot open as a core dump"):
        target.open_vmcore(str(path), [], default_debug_info=False)


def _note(name, desc, endian):
    namesz = len(name) + 1
    pad = lambda b: b + bytes(-len(b) % 4)  # noqa: E731
    return struct.pack(endian + "III", namesz, len(desc), 0) + pad(name.encode() + b"\0") + pad(desc)


@pytest.mark.synthetic
@pytest.mark.parametrize("little_endian", [True, False], ids=["le", "be"])
def test_vmcoreinfo_note_parser_synthetic(little_endian):
    text = b"OSRELEASE=6.12.0\nPAGESIZE=65536\n"
    buf = _note("VMCOREINFO", text, "<" if little_endian else ">")
    assert target._parse_vmcoreinfo_note(buf, little_endian) == text.decode()
    with pytest.raises(errors.TargetError, match="no VMCOREINFO"):
        target._parse_vmcoreinfo_note(_note("CORE", text, "<" if little_endian else ">"), little_endian)
    with pytest.raises(errors.TargetError, match="truncated"):
        target._parse_vmcoreinfo_note(buf[:-8], little_endian)


# --- QEMU over QMP ------------------------------------------------------------

QMP_SCENARIOS = ["settled", "settled-6.1", "settled-5.10"]  # 6.1 and 5.10 need the linear-map segment


def _boot(s, workdir):
    """Boot the scenario's guest from the manifest's QEMU command, with our own QMP socket."""
    argv = list(s["qemu"])
    import testbed

    base = os.path.dirname(os.path.abspath(testbed.MANIFEST))  # QEMU's paths are relative to it
    console = os.path.join(workdir, "console.log")
    qmp = os.path.join(workdir, "qmp.sock")
    for i, arg in enumerate(argv):
        if argv[i - 1] == "-serial":
            argv[i] = f"file:{console}"
        elif argv[i - 1] == "-chardev" and arg.startswith("file,"):
            argv[i] = f"file,id=truth,path={os.path.join(workdir, 'hvc1.log')}"
        elif argv[i - 1] == "-qmp":
            argv[i] = f"unix:{qmp},server=on,wait=off"
    proc = subprocess.Popen(argv, cwd=base, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline:
        text = open(console, errors="replace").read() if os.path.exists(console) else ""
        if "LPD-READY" in text:
            return proc, qmp
        if "LPD-FAIL" in text or proc.poll() is not None:
            break
        time.sleep(2)
    proc.kill()
    raise AssertionError(f"guest of {s['name']} did not reach LPD-READY: see {console}")


@pytest.mark.testbed
@pytest.mark.parametrize("name", QMP_SCENARIOS)
def test_open_qemu_from_socket_and_vmlinux_only(name, tmp_path):
    from lpdebug import ftrace, livepatch
    from test_ftrace_testbed import as_lines, parse_tracefs
    from test_livepatch_testbed import our_view, sysfs_view

    s = scenario(name)
    other = scenario(next(n for n in QMP_SCENARIOS if n != name))
    proc, qmp = _boot(s, str(tmp_path))
    try:
        # The other kernel's vmlinux: its vmcoreinfo_note is elsewhere, so the
        # guest's note is not found or its build ID differs; either way a clear error.
        with pytest.raises((errors.BuildIdMismatch, errors.TargetError)):
            target.open_qemu(qmp, other["vmlinux"])
        prog = target.open_qemu(qmp, s["vmlinux"], s["modules"])
        info = kernel.kernel_info(prog)
        assert info.release == open(os.path.join(s["truth"], "uname_r")).read().strip()
        assert info.mmu == s["mmu"] and info.page_size == s["page_size"]
        state = livepatch.livepatch_state(prog)
        assert state.diagnostics == []
        truth_view = sysfs_view(s["truth"])
        assert our_view(state, truth_view) == truth_view
        # The guest repeats the scenario, so tracefs agrees line for line as well.
        truth = parse_tracefs(os.path.join(s["truth"], "enabled_functions"))
        assert dict(as_lines(ftrace.ftrace_records(prog), "ENABLED", ftrace.record_flag_bits(prog))) == dict(truth)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.parametrize("name", ["settled", "settled-5.10"])
def test_symbol_addresses_are_pyelftools_first_symbol_of_each_name(name):
    # open_qemu finds vmcoreinfo_note in vmlinux's symbol table with its own scan of the table;
    # pyelftools' lookup by name (much slower) is the reference, on real kernels' vmlinux.
    from elftools.elf.elffile import ELFFile

    from lpdebug import sample

    fixtures = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "vmcores", "fixtures")
    vmlinux = sample.fixture_paths(os.path.join(fixtures, name))["vmlinux"]
    names = ("vmcoreinfo_note", "max_pfn", "_text", "jiffies", "init_task", "no_such_symbol_here")
    with open(vmlinux, "rb") as f:
        symtab = ELFFile(f).get_section_by_name(".symtab")
        expected = {n: symtab.get_symbol_by_name(n)[0]["st_value"] for n in names
                    if symtab.get_symbol_by_name(n)}
    found = target._symbol_addresses(vmlinux, names)
    assert found == expected
    assert "vmcoreinfo_note" in found and "no_such_symbol_here" not in found
