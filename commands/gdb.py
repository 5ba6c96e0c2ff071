# SPDX-License-Identifier: GPL-2.0-or-later
"""
lpdebug's commands inside gdb, for a live kernel behind a gdbstub (QEMU's
``-s``/``-gdb tcp::PORT``)::

    gdb-multiarch vmlinux -ex 'target remote :1234'
    (gdb) python import lpdebug.commands.gdb
    (gdb) lp-triage
    (gdb) lp-bt 1
    (gdb) lp-triage --json > report.json
    (gdb) lp-records | grep msleep
    (gdb) help lp-records

Every ``lp-*`` command is one of :mod:`lpdebug.commands.common`, run on a
drgn Program whose memory reads go through gdb, so the analysis is the same
code as in drgn and the ``lpdebug`` CLI. The Program is built from gdb's
objfiles (vmlinux, and any module added with ``add-symbol-file``) and the
guest's VMCOREINFO, found the way the QEMU target finds it
(:mod:`lpdebug.target`). It follows gdb's objfiles: when a module is added
with ``add-symbol-file`` after it was built, or gdb drops its objfiles
(``file``, ``symbol-file``), the next command builds it anew, so no fact read
with the old debug info outlives it.
``lp-symbols PATH...`` adds module debug info (``.ko`` files or directories)
without going through gdb. After each command, ``$lp_status`` holds its exit
status (:func:`lpdebug.report.exit_status`: 0 clean, 1 findings, 3 incomplete).

gdb embeds the system's Python, which may not be the one lpdebug was
installed into. Before the import, make the installation visible, e.g.::

    (gdb) python import site; site.addsitedir("/path/to/site-packages")

(``python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'``
prints it). ``site.addsitedir`` also reads the ``.pth`` files an editable
``pip install -e`` leaves there; ``PYTHONPATH`` works for a plain install.
The two Pythons must have the same major.minor version, because drgn is a C
extension.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from typing import Any, Dict, List, Optional

import gdb  # type: ignore[import-not-found]


def _import_drgn() -> None:
    # gdb links the system's libdw and libelf; drgn's wheel bundles its own
    # (another version) under other file names but with the same symbol
    # names. Loaded normally, drgn's calls bind to gdb's copies and fail
    # ("libdw error", crashes). RTLD_DEEPBIND makes drgn use its own.
    if "drgn" in sys.modules or not hasattr(os, "RTLD_DEEPBIND"):
        return
    flags = sys.getdlopenflags()
    sys.setdlopenflags(os.RTLD_NOW | os.RTLD_DEEPBIND)
    try:
        import drgn  # noqa: F401
    except ImportError:
        pass  # said in one line when the commands are registered (_register)
    finally:
        sys.setdlopenflags(flags)


_import_drgn()

from lpdebug.commands.common import (  # noqa: E402 (drgn must be imported first)
    SPECS,
    Spec,
    UsageError,
    add_arguments,
    drgn_version_problem,
    examples_text,
)
from lpdebug import debuginfo, drgn_compat  # noqa: E402
from lpdebug.errors import LpdebugError, damaged_input  # noqa: E402

PREFIX = "lp-"
# Reads through the gdb remote protocol cost a round trip each: read whole
# chunks and keep them for the duration of one command (the target is
# stopped while a command runs; it may run between commands).
_CHUNK = 4096


class _GdbMemory:
    def __init__(self) -> None:
        self._chunks: Dict[int, bytes] = {}

    def clear(self) -> None:
        self._chunks.clear()

    def _chunk(self, base: int) -> bytes:
        data = self._chunks.get(base)
        if data is None:
            data = bytes(gdb.selected_inferior().read_memory(base, _CHUNK))
            self._chunks[base] = data
        return data

    def read(self, address: int, count: int) -> bytes:
        import drgn

        out = bytearray()
        at = address
        end = address + count
        try:
            while at < end:
                base = at - at % _CHUNK
                try:
                    chunk = self._chunk(base)
                except gdb.MemoryError:
                    # A chunk may straddle unmapped memory: read just what was asked.
                    out += bytes(gdb.selected_inferior().read_memory(at, end - at))
                    break
                piece = chunk[at - base : min(end, base + _CHUNK) - base]
                out += piece
                at += len(piece)
        except gdb.MemoryError as e:
            raise drgn.FaultError(f"gdb cannot read memory: {e}", address) from None
        return bytes(out)


def _is_module_file(name: str) -> bool:
    return name.endswith((".ko", ".ko.debug"))


class _Session:
    """
    The drgn Program on gdb's target, built on first use and built anew when
    gdb's objfiles change (see :meth:`on_new_objfile`, :meth:`on_clear_objfiles`).
    """

    def __init__(self) -> None:
        self.memory = _GdbMemory()
        self.prog: Any = None
        self.extra_debug_info: List[str] = []
        # why the next command builds the program anew (None: it is current)
        self.stale: Optional[str] = None

    def on_new_objfile(self, event: Any) -> None:
        """gdb.events.new_objfile: a module added with add-symbol-file; rebuild with it."""
        name = getattr(event.new_objfile, "filename", None)
        if self.prog is not None and name and _is_module_file(name):
            self.stale = f"gdb added {name}"

    def on_clear_objfiles(self, event: Any) -> None:
        """gdb.events.clear_objfiles: gdb dropped its symbols; rebuild."""
        if self.prog is not None:
            self.stale = "gdb dropped its objfiles"

    def vmlinux(self) -> str:
        path = gdb.current_progspace().filename
        if not path:
            raise UsageError("gdb has no executable: start gdb with the guest's vmlinux "
                             "(gdb-multiarch vmlinux -ex 'target remote :PORT')")
        return path

    def module_files(self, vmlinux: str) -> List[str]:
        files = []
        for objfile in gdb.objfiles():
            name = objfile.filename
            if name and os.path.realpath(name) != os.path.realpath(vmlinux) \
                    and _is_module_file(name):
                files.append(name)
        return files + self.extra_debug_info

    def program(self) -> Any:
        self.memory.clear()
        if self.prog is None or self.stale is not None:
            # A new Program rather than more debug info loaded into the old one:
            # every fact cached on the old one was read with the old debug info.
            self.prog = None
            self.prog = self._build()
            self.stale = None
        else:
            from lpdebug.kernel import invalidate

            # Modules may have come and gone while the target ran.
            invalidate(self.prog)
        _give_vcpu_registers(self.prog)
        return self.prog

    def _build(self) -> Any:
        from lpdebug import target
        from lpdebug.kernel import LINEAR_MAP_BASE, LINEAR_MAP_MIN_SIZE

        if gdb.selected_inferior().pid == 0 and not gdb.selected_inferior().threads():
            raise UsageError("gdb is not connected to a target: 'target remote :PORT' first")
        vmlinux = self.vmlinux()
        memory = self.memory

        def read_virtual(address: int, count: int, offset: int, physical: bool) -> bytes:
            return memory.read(address, count)

        def read_physical(address: int, count: int, offset: int, physical: bool) -> bytes:
            # The gdbstub reads virtual addresses; physical memory is the
            # linear map.
            return memory.read(LINEAR_MAP_BASE + address, count)

        def add_segments(prog: Any) -> None:
            prog.add_memory_segment(LINEAR_MAP_BASE, (1 << 64) - LINEAR_MAP_BASE, read_virtual)
            prog.add_memory_segment(0, LINEAR_MAP_MIN_SIZE, read_physical, True)

        return target.open_memory_readers(vmlinux, add_segments, self.module_files(vmlinux))


def _give_vcpu_registers(prog: Any) -> None:
    """
    Each of gdb's threads is a vCPU of the stopped guest (QEMU's gdbstub):
    its registers, read now, unwind the task it runs (:mod:`lpdebug.vcpu`).
    """
    from lpdebug import vcpu

    selected = gdb.selected_thread()
    vcpus = []
    try:
        for thread in sorted(gdb.selected_inferior().threads(), key=lambda t: t.num):
            thread.switch()
            frame = gdb.newest_frame()
            values = {name: int(frame.read_register(name)) & (1 << 64) - 1
                      for name in vcpu.GDB_REGISTER_NAMES}
            for name in ("srr0", "srr1"):  # QEMU's gdbstub may describe the SPRs
                try:
                    values[name] = int(frame.read_register(name)) & (1 << 64) - 1
                except (gdb.error, ValueError):
                    pass
            vcpus.append(vcpu.from_gdb_registers(thread.num - 1, values))
    except gdb.error:
        vcpu.clear_vcpu_registers(prog)  # no registers: the running tasks stay not unwound
        return
    finally:
        if selected is not None and selected.is_valid():
            selected.switch()
    vcpu.set_vcpu_registers(prog, vcpus, "gdb")


_session = _Session()


def _program() -> Any:
    return _session.program()


class LpCommand(gdb.Command):
    """One lpdebug command as a gdb command (help text set per instance)."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.name = PREFIX + spec.name
        self.parser = argparse.ArgumentParser(
            prog=self.name,
            description=textwrap.fill(spec.description, 78),
            epilog=examples_text(spec, self.name),
            formatter_class=argparse.RawDescriptionHelpFormatter,
            add_help=True,
        )
        add_arguments(self.parser, spec)
        self.__doc__ = (spec.summary[0].upper() + spec.summary[1:] + ".\n"
                        + self.parser.format_help())
        super().__init__(self.name, gdb.COMMAND_DATA)

    def invoke(self, argument: str, from_tty: bool) -> None:
        if _drgn_problem is not None:
            gdb.set_convenience_variable("lp_status", 2)
            raise gdb.GdbError(f"{self.name}: {_drgn_problem}")
        from drgn.commands import parse_shell_command

        # The same command line as drgn's %lp* commands: shell words, "> FILE",
        # ">> FILE" and "| COMMAND".
        try:
            parsed = parse_shell_command(argument)
        except SyntaxError as e:
            raise gdb.GdbError(f"{self.name}: {e}") from None
        try:
            args = self.parser.parse_args(list(parsed.args))
        except SystemExit:
            # argparse already printed the help or the usage error.
            return
        try:
            prog = _program()
            debuginfo.check_indexed(prog)
            output = self.spec.run(prog, args, None)
        except LpdebugError as e:
            raise gdb.GdbError(f"{self.name}: {e}") from None
        except Exception as e:  # noqa: BLE001 (gdb shows one line, like every gdb error)
            damaged = damaged_input(e)
            if damaged is not None:
                raise gdb.GdbError(f"{self.name}: {damaged}") from None
            raise gdb.GdbError(f"{self.name}: internal error: {type(e).__name__}: {e}") from None
        for warning in output.warnings:
            gdb.write(f"{self.name}: warning: {warning}\n", gdb.STDERR)
        _deliver(self.name, output.text + "\n", parsed.redirections, parsed.pipeline)
        gdb.set_convenience_variable("lp_status", output.status)


def _deliver(name: str, text: str, redirections: Any, pipeline: Any) -> None:
    """Write a command's text to gdb, a file (``> FILE``, ``>> FILE``) or a shell pipeline."""
    import subprocess

    for fd, op, _path in redirections:
        if fd != 1 or op not in (">", ">>"):
            raise gdb.GdbError(f"{name}: only '> FILE', '>> FILE' and '| COMMAND' are supported")
    if pipeline is not None:
        proc = subprocess.run(pipeline, shell=True, input=text, capture_output=True, text=True)
        text = proc.stdout
        if proc.stderr:
            gdb.write(proc.stderr, gdb.STDERR)
        if proc.returncode != 0 and not redirections:
            gdb.write(text)
            raise gdb.GdbError(f"{name}: '{pipeline}' exited with status {proc.returncode}")
    if not redirections:
        gdb.write(text)
        return
    for _, op, path in redirections:
        try:
            with open(path, "w" if op == ">" else "a") as f:
                f.write(text)
        except OSError as e:
            raise gdb.GdbError(f"{name}: {path}: {e.strerror}") from None


class LpSymbolsCommand(gdb.Command):
    """Add module debug info for the lp-* commands: lp-symbols PATH...

PATH is a module (.ko, .ko.debug, .ko.xz, .ko.gz, .ko.zst) or a directory
searched recursively for them. Modules loaded in
gdb with add-symbol-file are used without this."""

    def __init__(self) -> None:
        super().__init__(PREFIX + "symbols", gdb.COMMAND_FILES, gdb.COMPLETE_FILENAME)

    def invoke(self, argument: str, from_tty: bool) -> None:
        paths = gdb.string_to_argv(argument)
        if not paths:
            raise gdb.GdbError("lp-symbols: give at least one .ko file or directory")
        _session.extra_debug_info.extend(paths)
        if _session.prog is not None:
            from lpdebug import target

            try:
                # Drops every cached fact of the program, the Symbolizer included.
                target.load_debug_info(_session.prog, paths, default=False)
            except LpdebugError as e:
                raise gdb.GdbError(f"lp-symbols: {e}") from None


# Why the installed drgn cannot serve the lp-* commands (one line), or None.
# gdb reads the target's memory for drgn, which is given the VMCOREINFO by hand.
_drgn_problem = drgn_version_problem() or drgn_compat.feature_problem("memory_readers")


def _register() -> None:
    if _drgn_problem is not None:
        # One line, not a traceback, and gdb stays usable: the commands are
        # registered and each says the same line, with $lp_status 2.
        gdb.write(f"lpdebug: error: {_drgn_problem}\n", gdb.STDERR)
        gdb.set_convenience_variable("lp_status", 2)
    for spec in SPECS:
        LpCommand(spec)
    LpSymbolsCommand()
    gdb.events.new_objfile.connect(_session.on_new_objfile)
    gdb.events.clear_objfiles.connect(_session.on_clear_objfiles)


_register()
