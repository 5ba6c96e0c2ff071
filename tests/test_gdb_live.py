# SPDX-License-Identifier: GPL-2.0-or-later
"""
The front ends against a live guest: one testbed guest booted for this module
(``vmcores/build --live settled``) and stopped at the end.

- the CLI over QMP (``lpdebug ... --qemu``);
- drgn's command machinery on a Program opened over QMP;
- gdb-multiarch in batch mode on the guest's gdbstub, with the lp-* commands;
- the three give the same facts while the guest is paused.

gdb embeds the system's Python; the test makes this interpreter's
site-packages visible to it the way README.md tells users to.
"""

import json
import os
import re
import socket
import subprocess
import sys
import sysconfig
import time

import pytest

from testbed import REPO, live_dir, load_manifest, stop_live_guest, written_since
from test_cli import _json_patches, _sysfs_patches
from test_triage_schema import validate_triage

pytestmark = pytest.mark.testbed

SCENARIO = "settled"
BOOT_TIMEOUT = 2400


def _cli(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "lpdebug.commands.cli", *args],
                          capture_output=True, text=True, timeout=timeout)


class QMP:
    """Just enough QMP to pause and resume the guest."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(60)
        self.sock.connect(path)
        self.buf = b""
        self._reply()  # greeting
        self.cmd("qmp_capabilities")

    def _reply(self):
        while True:
            while b"\n" not in self.buf:
                data = self.sock.recv(65536)
                if not data:
                    raise AssertionError("QMP closed the connection")
                self.buf += data
            line, self.buf = self.buf.split(b"\n", 1)
            msg = json.loads(line)
            if "event" not in msg:
                return msg

    def cmd(self, name):
        self.sock.sendall(json.dumps({"execute": name}).encode() + b"\n")
        reply = self._reply()
        assert "error" not in reply, reply
        return reply.get("return")

    def close(self):
        self.sock.close()


def _qmp(path, *commands):
    q = QMP(path)
    try:
        return [q.cmd(c) for c in commands]
    finally:
        q.close()


LIVE_DIR = live_dir(SCENARIO)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    load_manifest()  # fail loudly, with the testbed's own message, when it was never built
    booted = os.environ.get("LPDEBUG_SETTLED_LIVE")
    if booted:
        # LPDEBUG_SETTLED_LIVE=.../live/settled/live.json: a settled guest booted beforehand
        # (vmcores/build --live settled), used and left running
        with open(booted) as f:
            info = json.load(f)
        assert info["scenario"] == SCENARIO, booted
        yield info
        return
    started = time.time() - 1
    log_path = tmp_path_factory.mktemp("live") / "build.log"
    info_path = os.path.join(LIVE_DIR, "live.json")
    with open(log_path, "w") as log:
        build = subprocess.Popen([os.path.join(REPO, "vmcores", "build"), "--live", SCENARIO],
                                 stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + BOOT_TIMEOUT
        while not written_since(info_path, started):
            if build.poll() is not None or time.time() > deadline:
                with open(log_path) as f:
                    raise AssertionError(f"vmcores/build --live {SCENARIO} did not bring the guest "
                                         f"up (status {build.returncode}):\n{f.read()}")
            time.sleep(2)
        # vmcores/build then checks drgn over QMP; it may keep its own QMP
        # connection open meanwhile, and QEMU serves one client at a time.
        try:
            build.wait(timeout=180)
        except subprocess.TimeoutExpired:
            build.terminate()
            build.wait()
        with open(info_path) as f:
            yield json.load(f)
    finally:
        if build.poll() is None:
            build.terminate()
            build.wait()
        stop_live_guest(SCENARIO, started)


@pytest.fixture
def paused(live):
    """The guest stopped, so every reader sees the same memory; resumed afterwards."""
    _qmp(live["qmp"], "stop")
    yield live
    _qmp(live["qmp"], "cont")


def qemu_args(live):
    args = ["--qemu", live["qmp"], "-s", live["vmlinux"]]
    for ko in live["modules"]:
        args += ["-s", ko]
    return args


_DRGN_OVER_QMP = """
import sys
from drgn.commands import run_command
import lpdebug
sock, vmlinux, *modules = sys.argv[1:-1]
prog = lpdebug.open_qemu(sock, vmlinux, modules)
run_command(prog, sys.argv[-1])
"""


def drgn_command_over_qmp(live, command):
    return subprocess.run([sys.executable, "-c", _DRGN_OVER_QMP, live["qmp"], live["vmlinux"],
                           *live["modules"], command],
                          capture_output=True, text=True, timeout=900)


def gdb_batch(live, *commands, timeout=1800, lp_symbols=True):
    """gdb-multiarch in batch mode on the guest's gdbstub, running lp-* ``commands``;
    returns each command's output. With ``lp_symbols``, the modules' debug info is given
    with lp-symbols first."""
    purelib = sysconfig.get_paths()["purelib"]
    argv = ["gdb-multiarch", "-nx", "-batch", live["vmlinux"],
            "-ex", "set pagination off", "-ex", "set width 0",
            "-ex", f"target remote :{live['gdb_port']}",
            "-ex", f"python import site; site.addsitedir({purelib!r})",
            "-ex", "python import lpdebug.commands.gdb"]
    for ko in live["modules"] if lp_symbols else []:
        argv += ["-ex", f"lp-symbols {ko}"]
    for i, command in enumerate(commands):
        argv += ["-ex", f"echo @@LP-OUTPUT-{i}@@\\n", "-ex", command]
    argv += ["-ex", "echo @@LP-OUTPUT-END@@\\n", "-ex", "detach"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    assert "@@LP-OUTPUT-END@@" in proc.stdout, (proc.stdout[-3000:], proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr
    outputs = []
    for i in range(len(commands)):
        start = proc.stdout.index(f"@@LP-OUTPUT-{i}@@\n") + len(f"@@LP-OUTPUT-{i}@@\n")
        end = proc.stdout.index(f"@@LP-OUTPUT-{i + 1}@@" if i + 1 < len(commands)
                                else "@@LP-OUTPUT-END@@")
        outputs.append(proc.stdout[start:end])
    return outputs, proc


def test_cli_over_qmp(live):
    proc = _cli("patches", *qemu_args(live))
    assert proc.returncode == 0, proc.stderr
    for name in _sysfs_patches_live(live):
        assert name in proc.stdout


def _sysfs_patches_live(live):
    root = os.path.join(live["truth"], "sys_kernel_livepatch")
    return sorted(os.listdir(root))


def test_cli_triage_json_over_qmp_matches_the_guests_sysfs(paused):
    proc = _cli("triage", "--json", *qemu_args(paused))
    assert proc.returncode in (0, 1), proc.stderr
    doc = json.loads(proc.stdout)
    validate_triage(doc)
    assert proc.returncode == (1 if doc["findings"] else 0)
    assert _json_patches(doc) == _sysfs_patches(paused["truth"])


def test_drgn_commands_over_qmp(paused):
    proc = drgn_command_over_qmp(paused, "lppatches")
    assert proc.returncode == 0, proc.stderr
    cli = _cli("patches", *qemu_args(paused))
    assert cli.returncode == 0, cli.stderr
    assert proc.stdout == cli.stdout


def test_gdb_commands(live):
    pid = _victim_pid(live)
    (patches, bt, helptext), proc = gdb_batch(live, "lp-patches", f"lp-bt {pid}", "help lp-bt")
    for name in _sysfs_patches_live(live):
        assert name in patches, (name, patches, proc.stderr[-2000:])
    assert re.search(r"lpd_lp_thread\+0x[0-9a-f]+ \[lpd_victim\]\s+\S+\s+livepatch", bt), bt
    assert "examples:" in helptext and "lp-bt 1" in helptext


_MODULES_WITH_DEBUG_INFO = (
    "python import lpdebug.commands.gdb as g; "
    "print('DEBUG-INFO', sorted(m.name for m in g._session.prog.modules() "
    "if m.debug_file_path and m.name != 'kernel'))")


def test_gdb_program_follows_add_symbol_file(live):
    """A module added with add-symbol-file after the first lp-* command is in the next one."""
    pid = _victim_pid(live)
    victim = next(ko for ko in live["modules"] if os.path.basename(ko) == "lpd_victim.ko")
    (_, info_before, _, bt, info_after), proc = gdb_batch(
        live, f"lp-bt {pid}", _MODULES_WITH_DEBUG_INFO, f"add-symbol-file {victim} 0",
        f"lp-bt {pid}",
        _MODULES_WITH_DEBUG_INFO + "; print('STATUS', gdb.parse_and_eval('$lp_status'))",
        lp_symbols=False)
    assert "'lpd_victim'" not in re.search(r"DEBUG-INFO (.*)", info_before).group(1), info_before
    assert "'lpd_victim'" in re.search(r"DEBUG-INFO (.*)", info_after).group(1), info_after
    assert re.search(r"lpd_lp_thread\+0x[0-9a-f]+ \[lpd_victim\]\s+\S+\s+livepatch", bt), bt
    assert "STATUS 0" in info_after, info_after


def test_gdb_names_livepatch_functions_without_module_debug_info(live):
    # No .ko at all: the livepatch's new function is named from its module's kallsyms in
    # memory (it used to show as "?"), and the missing debug info is said on stderr.
    (patches,), proc = gdb_batch(live, "lp-patches", lp_symbols=False)
    assert "livepatch_lpd_victim_work_patch [lpd_patch]" in patches, patches
    assert "livepatch_cmdline_proc_show [livepatch_sample]" in patches, patches
    assert "? [" not in patches, patches
    assert "no debug info for module lpd_patch" in proc.stderr, proc.stderr[-2000:]


def _victim_pid(live):
    # PIDs differ between boots: the live guest reports its own.
    pids = live.get("lpd_pids") or {}
    assert "lpd_lp_victim" in pids, f"live.json of {SCENARIO} names no lpd_lp_victim pid: {live}"
    return pids["lpd_lp_victim"]


def test_three_front_ends_give_the_same_facts(paused):
    cli = _cli("triage", "--json", *qemu_args(paused))
    assert cli.returncode in (0, 1), cli.stderr
    drgn_run = drgn_command_over_qmp(paused, "lptriage --json")
    assert drgn_run.returncode == 0, drgn_run.stderr
    (gdb_out,), proc = gdb_batch(paused, "lp-triage --json")
    # gdb's detach resumes the guest: pause it again for the fixture's "cont".
    _qmp(paused["qmp"], "stop")
    docs = {"cli": json.loads(cli.stdout), "drgn": json.loads(drgn_run.stdout),
            "gdb": json.loads(gdb_out)}
    for doc in docs.values():
        validate_triage(doc)
    assert docs["cli"]["tasks"], "no tasks read"
    assert docs["drgn"] == docs["cli"]
    assert docs["gdb"] == docs["cli"]


_DRGN_COMMANDS_TO_FILES = """
import json, sys
from drgn.commands import run_command
import lpdebug
import lpdebug.commands.drgn_plugin
sock, vmlinux, *modules = sys.argv[1:-1]
prog = lpdebug.open_qemu(sock, vmlinux, modules)
for command, path in json.loads(sys.argv[-1]):
    run_command(prog, f"{command} > {path}")
"""


def test_three_front_ends_give_the_same_bytes(paused, tmp_path):
    # One command list through the CLI (stdout), drgn's command machinery and gdb (both with
    # "> FILE"), on the paused guest: byte for byte the same.
    pid = _victim_pid(paused)
    commands = ["patches", "patches --json", "ops", "records -f 'msleep*'", f"bt {pid}",
                f"bt {pid} --json", f"stacks {pid}", "toc --json", "triage", "triage --json"]
    cli_out = []
    for command in commands:
        words = re.findall(r"'[^']*'|\S+", command)
        proc = _cli(words[0], *qemu_args(paused), *[w.strip("'") for w in words[1:]])
        assert proc.returncode in (0, 1), (command, proc.stderr)
        cli_out.append(proc.stdout)
    drgn_files = [(f"lp{c}", str(tmp_path / f"drgn-{i}.txt")) for i, c in enumerate(commands)]
    proc = subprocess.run([sys.executable, "-c", _DRGN_COMMANDS_TO_FILES, paused["qmp"],
                           paused["vmlinux"], *paused["modules"], json.dumps(drgn_files)],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr
    gdb_files = [str(tmp_path / f"gdb-{i}.txt") for i in range(len(commands))]
    _, gdb_proc = gdb_batch(paused, *[f"lp-{c} > {path}" for c, path in zip(commands, gdb_files)])
    _qmp(paused["qmp"], "stop")  # gdb's detach resumes the guest
    for command, want, (_, drgn_path), gdb_path in zip(commands, cli_out, drgn_files, gdb_files):
        with open(drgn_path) as f:
            assert f.read() == want, f"drgn %lp{command} differs from the CLI"
        with open(gdb_path) as f:
            assert f.read() == want, f"gdb lp-{command} differs from the CLI: {gdb_proc.stderr[-2000:]}"


# gdb's own view of each vCPU (gdbstub thread): its registers, the task the kernel's paca says
# it runs, and gdb's own unwinding (its physical frames, inline frames folded), printed as JSON.
_GDB_VCPUS = r"""python
import json
out = []
for thread in sorted(gdb.selected_inferior().threads(), key=lambda t: t.num):
    thread.switch()
    frame = gdb.newest_frame()
    regs = {n: int(frame.read_register(n)) & (1 << 64) - 1 for n in ("pc", "r1", "lr", "r13", "msr")}
    current = gdb.parse_and_eval("((struct paca_struct *)$r13)->__current")
    pcs, names = [], []
    while frame is not None and len(pcs) < 32:
        if frame.type() != gdb.INLINE_FRAME:
            pcs.append(int(frame.pc()))
            names.append(frame.name())
        try:
            frame = frame.older()
        except gdb.error:
            break
    out.append({"regs": regs, "task": int(current), "pid": int(current["pid"]), "pcs": pcs,
                "names": names})
print("LP-VCPUS " + json.dumps(out))
end"""


def _gdb_vcpus(live, tmp_path):
    path = str(tmp_path / "vcpus.gdb")
    argv = ["gdb-multiarch", "-nx", "-batch", live["vmlinux"], "-ex", "set pagination off",
            "-ex", f"target remote :{live['gdb_port']}"]
    with open(path, "w") as f:
        f.write(_GDB_VCPUS + "\n")
    proc = subprocess.run(argv + ["-x", path, "-ex", "disconnect"], capture_output=True,
                          text=True, timeout=600)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("LP-VCPUS ")), None)
    assert line, (proc.stdout[-3000:], proc.stderr[-3000:])
    return json.loads(line[len("LP-VCPUS "):])


# gdb's unwinder does not know the ftrace entry (a function's "mflr r0; bl _mcount" prologue)
# and invents a frame there; its frames are compared up to that one.
_GDB_LOST_AT = ("mcount", "_mcount", "ftrace_caller", "ftrace_regs_caller")


def test_paused_guests_running_tasks_unwound_from_their_vcpus(paused, tmp_path):
    """
    With the guest paused, each vCPU's task (the kernel's paca->__current, as gdb reads it
    through the gdbstub) is unwound from that vCPU's registers: the report is complete (exit
    0), the registers lpdebug read over QMP are gdb's, and its frames are gdb's own unwinding
    as far as gdb gets (at least the leaf's caller, which the back chain alone skips).
    """
    proc = _cli("triage", "--json", *qemu_args(paused))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    validate_triage(doc)
    vcpus = _gdb_vcpus(paused, tmp_path)
    assert not _qmp(paused["qmp"], "query-status")[0]["running"], "gdb resumed the guest"
    running = {t["address"]: t for t in doc["tasks"] if t["cpu_unwind"] == "vcpu"}
    assert set(running) == {v["task"] for v in vcpus}, (running.keys(), vcpus)
    for v in vcpus:
        task = running[v["task"]]
        assert task["pid"] == v["pid"] and not task["diagnostics"], task
        regs = task["cpu_registers"]
        assert (regs["nip"], regs["r1"], regs["link"], regs["msr"]) == \
            (v["regs"]["pc"], v["regs"]["r1"], v["regs"]["lr"], v["regs"]["msr"]), (regs, v)
        gdb_pcs = []
        for pc, name in zip(v["pcs"], v["names"]):
            if name in _GDB_LOST_AT:
                break
            gdb_pcs.append(pc)
        assert len(gdb_pcs) >= 2, v
        ours = [f["raw_pc"] for f in task["frames"]]
        assert ours[:len(gdb_pcs)] == gdb_pcs, (task["pid"], [hex(p) for p in ours],
                                                [hex(p) for p in gdb_pcs])
        # and beyond gdb, down to the task's first frame: an idle task's ends in its CPU's start
        assert task["frames"][-1]["symbol"] in ("start_here_common", "start_secondary_prolog"), \
            task["frames"]
