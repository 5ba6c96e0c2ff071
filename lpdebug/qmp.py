"""
Just enough of the QEMU Machine Protocol to pause a guest and resume it.

QEMU serves one client at a time on a QMP socket, and drgn's QEMU target
(:meth:`drgn.Program.set_qemu_qmp`) keeps its connection for the Program's
life. So a consistent read of a running guest goes:

1. :func:`paused` connects, asks ``query-status``, sends ``stop`` when the
   guest runs, and disconnects;
2. the Program is opened (drgn connects) and read;
3. :func:`lpdebug.target.close_qemu` shuts the Program's connection down,
   whatever still refers to the Program;
4. :func:`paused` connects again and sends ``cont``, only if it was the one
   that stopped the guest: a guest found paused is left paused.

Step 4 runs however step 2 ends: an exception, Ctrl-C, or SIGTERM turned into
an exception by the caller (see ``lpdebug.commands.cli``). If it cannot
resume the guest it raises :class:`GuestLeftPaused`, whose message says how
to resume it by hand.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import threading
import time
from typing import Any, Dict, Iterator, Tuple, Union

from .errors import TargetError

__all__ = ("QmpClient", "GuestLeftPaused", "Pause", "connect_socket", "paused", "guest_running",
           "vcpu_registers_text", "resume")

# How long to wait for QEMU to accept a connection: it takes the next client
# only once the previous one has gone, and a Program closed a moment ago may
# still be closing.
CONNECT_TIMEOUT = 30.0
REPLY_TIMEOUT = 120.0


class GuestLeftPaused(TargetError):
    """The guest was paused by lpdebug and could not be resumed."""


def _address(address: str) -> Tuple[int, Union[str, Tuple[str, int]]]:
    # Like drgn's set_qemu_qmp: "host:port" (host may be empty) is TCP unless
    # it starts with "/" or "."; anything else is a Unix socket path.
    if not address.startswith(("/", ".")) and ":" in address:
        host, _, port = address.rpartition(":")
        if port.isdigit() and 0 < int(port) < 65536:
            return socket.AF_INET, (host or "localhost", int(port))
    return socket.AF_UNIX, address


def connect_socket(address: str, timeout: float = CONNECT_TIMEOUT) -> socket.socket:
    """A stream socket connected to the QMP ``address`` (retried while QEMU refuses it)."""
    family, where = _address(address)
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.connect(where)
            return sock
        except (ConnectionRefusedError, BlockingIOError) as e:
            # QEMU between two clients, or its backlog full: it comes back.
            sock.close()
            if time.monotonic() >= deadline:
                raise TargetError(f"cannot connect to QMP at {address}: {e}") from None
            time.sleep(0.1)
        except OSError as e:
            sock.close()
            raise TargetError(f"cannot connect to QMP at {address}: {e}") from None


class QmpClient:
    """A QMP session: greeting, ``qmp_capabilities``, then synchronous commands."""

    def __init__(self, address: str, timeout: float = CONNECT_TIMEOUT) -> None:
        self.address = address
        self.sock = connect_socket(address, timeout)
        self.sock.settimeout(REPLY_TIMEOUT)
        self._buffer = b""
        try:
            greeting = self._message()
            if "QMP" not in greeting:
                raise TargetError(f"{address} is not a QMP socket (no QMP greeting)")
            self.command("qmp_capabilities")
        except BaseException:
            self.close()
            raise

    def _message(self) -> Dict[str, Any]:
        while b"\n" not in self._buffer:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                # QEMU greets a client only once the previous one has gone.
                raise TargetError(f"QMP at {self.address} did not answer in {REPLY_TIMEOUT:.0f} s "
                                  "(another client holds it? QEMU serves one at a time)") from None
            if not data:
                raise TargetError(f"QMP at {self.address} closed the connection")
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError:
            raise TargetError(f"QMP at {self.address} sent something that is not JSON") from None

    def command(self, name: str, **arguments: Any) -> Any:
        """Run one command; its ``return`` value (events in between are skipped)."""
        request: Dict[str, Any] = {"execute": name}
        if arguments:
            request["arguments"] = arguments
        self.sock.sendall(json.dumps(request).encode() + b"\n")
        while True:
            reply = self._message()
            if "event" in reply:
                continue
            if "error" in reply:
                error = reply["error"]
                raise TargetError(f"QMP {name} failed: {error.get('desc', error)}")
            return reply.get("return")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> "QmpClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def guest_running(address: str) -> bool:
    """Whether the guest's vCPUs run (QMP ``query-status``)."""
    with QmpClient(address) as qmp:
        return bool(qmp.command("query-status").get("running"))


def vcpu_registers_text(address: str) -> str:
    """
    QEMU's monitor dump of every vCPU's registers (HMP ``info registers -a``
    through QMP's ``human-monitor-command``): meaningful while the guest is
    paused (see :mod:`lpdebug.vcpu`).
    """
    with QmpClient(address) as qmp:
        text = qmp.command("human-monitor-command", **{"command-line": "info registers -a"})
    if not isinstance(text, str):
        raise TargetError(f"QMP at {address}: info registers gave no text")
    return text


class Pause:
    """What :func:`paused` yields."""

    def __init__(self, address: str, stopped_here: bool) -> None:
        self.address = address
        self.stopped_here = stopped_here  # False: the guest was paused already, and stays so

    def run_for(self, seconds: float) -> None:
        """Let the guest run ``seconds`` and stop it again (no QMP client may be connected)."""
        with _signals_held(), QmpClient(self.address) as qmp:
            qmp.command("cont")
            time.sleep(seconds)
            qmp.command("stop")


@contextlib.contextmanager
def paused(address: str) -> Iterator[Pause]:
    """
    The guest behind QMP ``address`` stopped for the duration of the block
    (see the module docstring). Yields a :class:`Pause` saying whether this
    call stopped it (if not, it was paused already, and stays paused). No QMP
    connection is held inside the block, so drgn can open its own.

    A process killed with SIGKILL runs no cleanup: a watchdog (see
    :func:`_start_watchdog`) resumes the guest then.
    """
    watchdog = _start_watchdog(address)
    try:
        with QmpClient(address) as qmp:
            stopped_here = bool(qmp.command("query-status").get("running"))
            if stopped_here:
                qmp.command("stop")
    except BaseException:
        _disarm(watchdog)
        raise
    if not stopped_here:
        _disarm(watchdog)  # not lpdebug's pause: nothing to resume
    try:
        yield Pause(address, stopped_here)
    finally:
        if stopped_here:
            _resume(address)
            _disarm(watchdog)


# The watchdog: a child process in its own session (a Ctrl-C or a SIGKILL
# sent to lpdebug's process group does not reach it) that reads a pipe whose
# write end only lpdebug holds. lpdebug writes "done" once the guest runs
# again, or when it did not pause it. End of file without "done" means that
# lpdebug died mid-pause: the kernel closed its descriptors (drgn's QMP
# connection too, so QEMU takes a new client), and the watchdog sends cont.
_WATCHDOG = r"""
import json, socket, sys, time
if sys.stdin.buffer.read() == b"done":
    sys.exit(0)
address = sys.argv[1]
host, _, port = address.rpartition(":")
tcp = not address.startswith(("/", ".")) and port.isdigit()
deadline = time.monotonic() + 60
while True:
    try:
        if tcp:
            s = socket.create_connection((host or "localhost", int(port)))
        else:
            s = socket.socket(socket.AF_UNIX)
            s.connect(address)
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit(1)
        time.sleep(0.2)
f = s.makefile("rwb")
f.readline()
for command in ("qmp_capabilities", "cont"):
    f.write(json.dumps({"execute": command}).encode() + b"\n")
    f.flush()
    while "event" in json.loads(f.readline() or b'{"return": 0}'):
        pass
sys.stderr.write("lpdebug died with the guest paused: its watchdog resumed the guest\n")
"""


def _start_watchdog(address: str) -> Any:
    import subprocess
    import sys

    try:
        return subprocess.Popen([sys.executable, "-c", _WATCHDOG, address], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, start_new_session=True, close_fds=True)
    except OSError:
        return None  # no watchdog: `lpdebug qemu-resume` is the way out (see --help)


def _disarm(watchdog: Any) -> None:
    if watchdog is None:
        return
    with contextlib.suppress(OSError):
        watchdog.stdin.write(b"done")
        watchdog.stdin.close()
    with contextlib.suppress(Exception):
        watchdog.wait(timeout=10)


def resume(address: str) -> bool:
    """
    Resume the guest behind QMP ``address`` (``cont``) if it is paused: the
    way out when an lpdebug run and its watchdog were both killed mid-pause.
    Returns whether it was paused.
    """
    with QmpClient(address) as qmp:
        if qmp.command("query-status").get("running"):
            return False
        qmp.command("cont")
        return True


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    # A second Ctrl-C or SIGTERM must not cut the resume short: hold them
    # until the guest runs again (they are delivered afterwards).
    held = {signal.SIGINT, signal.SIGTERM}
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _resume(address: str) -> None:
    try:
        with _signals_held(), QmpClient(address) as qmp:
            qmp.command("cont")
    except TargetError as e:
        raise GuestLeftPaused(
            f"the guest is still paused: lpdebug could not resume it ({e}); resume it with the "
            f"QMP command cont on {address}") from None
