"""
A kernel that moves while it is read, and a reader that never writes: one
``churn`` guest (``vmcores/build --live churn``) booted for this module and
stopped at the end.

- ``lpdebug triage --qemu --no-pause`` 100 times in a row while the guest
  forks, switches function_graph on and off, enables and disables a
  livepatch, loads and unloads its module and wakes the victims: every run
  ends within bounds, without a traceback, with a valid report, no finding
  at all (the churn guest has no corruption and no bad TOC), and everything
  torn marked ``changed_while_reading`` with its address.
- The default (paused) mode: the guest's own views, printed with its churn
  held, equal what lpdebug reads at the pause that follows; the guest runs
  again afterwards, also when lpdebug fails, is interrupted (SIGINT) or is
  terminated (SIGTERM); a guest found paused stays paused.
- Read-only: with the guest paused, a hash of all guest RAM (QMP ``pmemsave``
  into a pipe) is the same before and after every command over QMP, and
  before and after every command over the gdbstub.
"""

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from testbed import REPO, live_dir, load_manifest, stop_live_guest, written_since
from test_triage_schema import validate_triage

pytestmark = pytest.mark.testbed

SCENARIO = "churn"
BOOT_TIMEOUT = 2400
RUNS = int(os.environ.get("LPDEBUG_CHURN_RUNS", "100"))
# LPDEBUG_CHURN_LIVE=.../live/churn/live.json runs the tests on a churn guest booted beforehand.
RUN_TIMEOUT = 600  # any one command of the 2-vCPU TCG guest, with room for a busy host
RUN_BOUND = 120  # one triage run on the churning guest (23 s at most over 100 runs, host load 17)
TOC_KINDS = {"frame_toc_mismatch", "livepatch_stack_toc_mismatch", "livepatch_stack_lr_mismatch",
             "crashed_cpu_toc_mismatch", "toc_prologue_mismatch"}
LIVE_DIR = live_dir(SCENARIO)


def _cli(*args, timeout=RUN_TIMEOUT):
    return subprocess.run([sys.executable, "-m", "lpdebug.commands.cli", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


def _cli_process(*args):
    return subprocess.Popen([sys.executable, "-m", "lpdebug.commands.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)


class QMP:
    """A QMP client of the test's own (not lpdebug's)."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(600)
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

    def cmd(self, name, **arguments):
        request = {"execute": name}
        if arguments:
            request["arguments"] = arguments
        self.sock.sendall(json.dumps(request).encode() + b"\n")
        reply = self._reply()
        assert "error" not in reply, reply
        return reply.get("return")

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def qmp(live, name, **arguments):
    with QMP(live["qmp"]) as q:
        return q.cmd(name, **arguments)


def running(live):
    return qmp(live, "query-status")["running"]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    load_manifest()  # fail loudly, with the testbed's own message, when it was never built
    booted = os.environ.get("LPDEBUG_CHURN_LIVE")
    if booted:
        # a churn guest already running (its live.json): used, and left running
        with open(booted) as f:
            info = json.load(f)
        assert info["scenario"] == SCENARIO, booted
        assert running(info), "the churn guest is not running"
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
        try:
            build.wait(timeout=300)  # it checks drgn over QMP, holding QEMU's one QMP client
        except subprocess.TimeoutExpired:
            build.terminate()
            build.wait()
        with open(info_path) as f:
            info = json.load(f)
        assert running(info), "the churn guest is not running"
        yield info
    finally:
        if build.poll() is None:
            build.terminate()
            build.wait()
        stop_live_guest(SCENARIO, started)


def qemu_args(live):
    args = ["--qemu", live["qmp"], "-s", live["vmlinux"]]
    for ko in live["modules"]:
        args += ["-s", ko]
    return args


# --- the guest's console shell ----------------------------------------------------------


def console(live, command, end, timeout=300):
    """Type ``command`` on the guest's console shell; what the console printed up to marker ``end``."""
    received = b""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(live["console_socket"])
        s.settimeout(0.5)
        s.sendall(command.encode() + b"\n")
        deadline = time.time() + timeout
        while True:
            # Read as it comes: a console nobody drains makes QEMU drop what the guest prints.
            try:
                data = s.recv(65536)
                assert data, "the console socket closed"
                received += data
            except socket.timeout:
                pass
            text = received.decode(errors="replace")
            if re.search(rf"^{re.escape(end)}\r?$", text, re.M):
                return text
            assert "LPD-HOLD-FAIL" not in text, text
            assert time.time() < deadline, f"no {end} on the console after {command!r}:\n{text}"


def churn_status(live):
    text = console(live, "lpd-churn status", "LPD-CHURN-STATUS-END")
    m = re.search(r"LPD-CHURN forks=(\d*)\+(\d*) fgraph=(\d*) livepatch=(\d*)", text)
    assert m, text
    return {"forks": int(m.group(1) or 0) + int(m.group(2) or 0), "fgraph": int(m.group(3) or 0),
            "livepatch": int(m.group(4) or 0)}


def hold(live):
    """Park the churn; the guest's own views at that point."""
    text = console(live, "lpd-churn hold", "LPD-HOLD-END")
    body = text.split("LPD-HOLD-BEGIN", 1)[1].split("LPD-HOLD-END", 1)[0]
    held = {"patches": {}, "modules": set(), "tasks": {}, "tracer": None}
    for line in body.splitlines():
        words = line.strip().split()
        if not words:
            continue
        if words[0] == "patch":
            fields = dict(w.split("=", 1) for w in words[2:])
            held["patches"][words[1]] = {"enabled": fields["enabled"] == "1",
                                         "transition": fields["transition"] == "1"}
        elif words[0] == "module":
            held["modules"].add(words[1])
        elif words[0] == "task" and len(words) >= 2:
            held["tasks"][int(words[1])] = " ".join(words[2:])
        elif words[0] == "current_tracer":
            held["tracer"] = words[1]
    return held


def go(live):
    console(live, "lpd-churn go", "LPD-GO")


# --- 1. a running, churning guest ------------------------------------------------------


def test_triage_100_runs_on_a_running_churning_guest(live):
    before = churn_status(live)
    started = time.monotonic()
    torn_runs = 0
    durations = []
    for run in range(RUNS):
        t0 = time.monotonic()
        proc = _cli("triage", "--json", "--no-pause", *qemu_args(live))
        durations.append(time.monotonic() - t0)
        assert durations[-1] < RUN_BOUND, (run, durations[-1])
        assert "Traceback" not in proc.stderr, (run, proc.stderr)
        assert "internal error" not in proc.stderr, (run, proc.stderr)
        assert proc.returncode in (0, 1, 3), (run, proc.returncode, proc.stderr)
        doc = json.loads(proc.stdout)
        validate_triage(doc)
        assert doc["tasks"], (run, "no task read")
        # The churn guest has no corruption and no bad TOC: any finding is false.
        assert not [f for f in doc["findings"] if f["kind"] in TOC_KINDS], (run, doc["findings"])
        # Only a warning that a livepatch transition is under way is true now and then (the
        # churn enables and disables one; the report's transition says which).
        others = [f for f in doc["findings"] if f["kind"] != "transition_blocked"]
        assert others == [], (run, others)
        if len(others) < len(doc["findings"]):
            assert doc["livepatch"]["transition"]["patch"] is not None, (run, doc["livepatch"])
        torn = [d for d in doc["diagnostics"] if d["kind"] == "changed_while_reading"]
        for d in torn:
            assert d["address"] is not None, (run, d)
        # A task running on a vCPU of a running guest cannot be unwound (its registers change
        # as they are read): the diagnostic names its task_struct.
        addresses = {t["address"] for t in doc["tasks"]}
        for d in doc["diagnostics"]:
            if d["stage"] == "tasks" and "running task" in d["message"]:
                assert d["address"] in addresses, (run, d)
        for task in doc["tasks"]:
            if task["changed_while_reading"]:
                assert any(d["address"] == task["address"] for d in torn), (run, task["pid"])
        torn_runs += bool(torn)
    after = churn_status(live)
    # The guest did churn all along (the oracle: its own counters).
    assert after["forks"] > before["forks"], (before, after)
    assert after["fgraph"] > before["fgraph"], (before, after)
    assert after["livepatch"] > before["livepatch"], (before, after)
    print(f"{RUNS} runs in {time.monotonic() - started:.0f} s (max {max(durations):.1f} s), "
          f"{torn_runs} with a part changed while reading; churn {before} -> {after}")


# --- 2. the paused (default) mode -------------------------------------------------------


def test_paused_read_equals_the_guests_views_at_that_pause(live):
    held = hold(live)
    try:
        proc = _cli("triage", "--json", *qemu_args(live))
        assert running(live), "lpdebug did not resume the guest"
    finally:
        go(live)
    doc = json.loads(proc.stdout)
    validate_triage(doc)
    # Paused: nothing moved, nothing is marked, and the tasks running on the vCPUs are unwound
    # from the vCPUs' registers read at the pause: the report is complete.
    assert doc["diagnostics"] == [], doc["diagnostics"]
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    assert not any(t["changed_while_reading"] for t in doc["tasks"])
    assert doc["findings"] == []
    on_vcpus = [t for t in doc["tasks"] if t["cpu_unwind"] == "vcpu"]
    assert len(on_vcpus) == 2 == len({t["on_cpu"] for t in on_vcpus}), on_vcpus  # 2 vCPUs
    for task in on_vcpus:
        in_user_mode = task["cpu_stop"]["user_mode"]
        assert bool(task["frames"]) != in_user_mode, task
    # A task in the exit path at the pause: do_exit() has set its exit_state (exit_notify():
    # EXIT_ZOMBIE, or EXIT_DEAD when autoreaped), so the kernel's own task_state_index(), which
    # /proc/PID/stat prints, says Z or X, and it stays in the pid IDR and the task list until
    # release_task() unhashes it (kernel/exit.c): the guest would list it too, dead. Whatever
    # state it had when the guest listed it before the pause, at the pause it is dead and its
    # stack (from its saved SP, or from its vCPU when it runs do_task_dead()) is do_exit()'s.
    for task in doc["tasks"]:
        if task["state"] in ("X", "Z") and task["frames"]:
            assert "do_exit" in [f["symbol"] for f in task["frames"]], task
    patches = {p["name"]: {"enabled": p["enabled"], "transition": p["transition"]}
               for p in doc["livepatch"]["patches"]}
    assert patches == held["patches"]
    modules = {i["module"] for i in doc["tocs"]["images"]} - {"vmlinux"}
    assert modules == held["modules"]
    # /proc lists thread-group leaders, and the hold command with the children it forks to
    # list them (gone by the pause; their comm may read empty as they go); lpdebug lists
    # every thread.
    read = {t["pid"]: t["comm"] for t in doc["tasks"]}
    listed = {pid: comm for pid, comm in held["tasks"].items()
              if comm not in ("", "lpd-churn", "cat")}
    # Idle kworkers exit on their own (the worker pool shrinks), held churn or not.
    missing = {pid: comm for pid, comm in listed.items()
               if pid not in read and not comm.startswith("kworker/")}
    assert not missing, missing
    assert len(set(listed) & set(read)) >= len(listed) - 3, (listed, read)
    # task->comm keeps TASK_COMM_LEN - 1 bytes; /proc/PID/comm adds a kworker's current
    # workqueue after a "-" (wq_worker_comm())
    renamed = {pid: (comm, read[pid]) for pid, comm in listed.items()
               if pid in read and read[pid] != comm[:15] and not comm.startswith(read[pid] + "-")}
    assert not renamed, renamed
    if held["tracer"] == "function_graph":
        assert any(t["ret_stack"] for t in doc["tasks"]), "function_graph on, no ret_stack read"


def test_a_failing_command_resumes_the_guest(live):
    proc = _cli("bt", "999999", *qemu_args(live))
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "no task with PID 999999" in proc.stderr
    assert running(live)


@pytest.mark.parametrize("signum, message", [(signal.SIGINT, "interrupted"),
                                              (signal.SIGTERM, "terminated")])
def test_a_signal_resumes_the_guest(live, signum, message):
    proc = _cli_process("triage", "--json", "--all-records", *qemu_args(live))
    try:
        # The guest is paused within a second (before debug info is loaded); opening it and
        # walking its 14,000 ftrace records take several more.
        time.sleep(3.5)
        assert proc.poll() is None, "triage finished before the signal: no interruption tested"
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 2, (proc.returncode, err)
    assert message in err and "Traceback" not in err, err
    assert running(live), "the guest stayed paused"


def _watchdog_armed(pid):
    """Whether process ``pid`` has its QMP pause watchdog (lpdebug.qmp._WATCHDOG) running."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and b"its watchdog resumed the guest" in cmdline:
            return True
    return False


def test_sigkill_mid_pause_the_watchdog_resumes_the_guest(live):
    # SIGKILL cannot be caught: the watchdog lpdebug started at the pause sends cont.
    proc = _cli_process("triage", "--json", "--all-records", *qemu_args(live))
    try:
        # killed while its watchdog is armed (from just before the stop until the guest runs again),
        # not after a fixed time: on a quiet machine a triage can be past its pause within seconds
        deadline = time.monotonic() + 60
        while not _watchdog_armed(proc.pid):
            assert proc.poll() is None, "triage finished before the kill: nothing tested"
            assert time.monotonic() < deadline, "no watchdog within 60 s"
            time.sleep(0.02)
        proc.kill()
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 60
    while not running(live):
        assert time.monotonic() < deadline, f"the guest stayed paused after SIGKILL: {err}"
        time.sleep(0.5)
    assert "watchdog resumed the guest" in err, err


def test_qemu_resume_is_the_way_out(live):
    # Both lpdebug and its watchdog killed: `lpdebug qemu-resume` resumes the guest, and says
    # so; on a running guest it has nothing to do.
    qmp(live, "stop")
    try:
        proc = _cli("qemu-resume", "--qemu", live["qmp"])
        assert proc.returncode == 0, proc.stderr
        assert "the guest was paused: resumed" in proc.stdout
        assert running(live)
    finally:
        qmp(live, "cont")
    proc = _cli("qemu-resume", "--qemu", live["qmp"])
    assert proc.returncode == 0 and "nothing to do" in proc.stdout, (proc.stdout, proc.stderr)
    proc = _cli("qemu-resume", "--qemu", live["qmp"] + ".missing")
    assert proc.returncode == 2 and "cannot connect to QMP" in proc.stderr, proc.stderr


def test_a_guest_found_paused_stays_paused(live):
    for _attempt in range(5):
        qmp(live, "stop")
        try:
            proc = _cli("patches", *qemu_args(live))
            assert not running(live), "lpdebug resumed a guest it had not paused"
        finally:
            qmp(live, "cont")
        # Stopped in the middle of an insmod, drgn cannot place module debug info, and a guest
        # lpdebug did not pause is not lpdebug's to run: it says so. Stop it elsewhere.
        if "module list" not in proc.stderr:
            break
        time.sleep(1)
    assert proc.returncode == 0, proc.stderr


# --- 3. read-only -------------------------------------------------------------------------


def ram_hash(live, tmp_path):
    """sha256 of all guest RAM, saved by QMP pmemsave into a pipe (no copy on disk)."""
    fifo = str(tmp_path / f"ram-{time.monotonic_ns()}.fifo")
    os.mkfifo(fifo)
    digest = hashlib.sha256()
    size = [0]

    def drain():
        with open(fifo, "rb") as f:
            while True:
                chunk = f.read(1 << 20)
                if not chunk:
                    return
                digest.update(chunk)
                size[0] += len(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        qmp(live, "pmemsave", val=0, size=live["ram_size"], filename=fifo)
    finally:
        reader.join(600)
        os.unlink(fifo)
    assert size[0] == live["ram_size"], size[0]
    return digest.hexdigest()


def _victim_pid(live):
    pids = live.get("lpd_pids") or {}
    assert "lpd_lp_victim" in pids, live
    return str(pids["lpd_lp_victim"])


def every_command(live):
    pid = _victim_pid(live)
    return [["patches"], ["ops", "--full"], ["records", "-a"], ["bt", pid], ["stacks", pid],
            ["toc"], ["triage"], ["triage", "--json", "--all-records", "--all-tasks"]]


def test_reading_over_qmp_writes_nothing(live, tmp_path):
    qmp(live, "stop")
    try:
        before = ram_hash(live, tmp_path)
        assert ram_hash(live, tmp_path) == before, "RAM of a paused guest changed by itself"
        for command in every_command(live):
            proc = _cli(*command, *qemu_args(live))
            assert proc.returncode in (0, 1, 3), (command, proc.stderr)
            assert not running(live)
            assert ram_hash(live, tmp_path) == before, f"guest RAM changed by {command}"
    finally:
        qmp(live, "cont")


def gdb_batch(live, commands, timeout=1800):
    """gdb-multiarch on the gdbstub runs lp-* ``commands`` and disconnects without resuming."""
    import sysconfig

    purelib = sysconfig.get_paths()["purelib"]
    argv = ["gdb-multiarch", "-nx", "-batch", live["vmlinux"],
            "-ex", "set pagination off", "-ex", "set width 0",
            "-ex", f"target remote :{live['gdb_port']}",
            "-ex", f"python import sys; sys.path.insert(0, {REPO!r})",
            "-ex", f"python import site; site.addsitedir({purelib!r})",
            "-ex", "python import lpdebug.commands.gdb"]
    for ko in live["modules"]:
        argv += ["-ex", f"lp-symbols {ko}"]
    for command in commands:
        argv += ["-ex", command]
    argv += ["-ex", "echo @@LP-OUTPUT-END@@\\n", "-ex", "disconnect"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    assert "@@LP-OUTPUT-END@@" in proc.stdout, (proc.stdout[-3000:], proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_reading_over_the_gdbstub_writes_nothing(live, tmp_path):
    qmp(live, "stop")
    try:
        before = ram_hash(live, tmp_path)
        proc = gdb_batch(live, ["lp-" + " ".join(c) for c in every_command(live)])
        assert "lpd_lp_thread" in proc.stdout, proc.stdout[-3000:]
        assert not running(live), "gdb resumed the guest: RAM could not be compared"
        assert ram_hash(live, tmp_path) == before, "guest RAM changed by the gdb commands"
    finally:
        qmp(live, "cont")
