# SPDX-License-Identifier: GPL-2.0-or-later
"""
The ``lpdebug`` command: the same commands as drgn's ``%lp*`` and gdb's
``lp-*``, for a shell and for scripts. See ``lpdebug --help``.

Exit status (:mod:`lpdebug.report`): 0 clean, 1 findings, 2 error (bad target,
wrong vmlinux, bad arguments; a one-line reason on stderr), 3 incomplete (something
could not be checked; wins over 1, and the report says both).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import textwrap
from typing import Any, List, NoReturn, Optional, Sequence

from lpdebug.commands.common import (
    SPECS,
    ProgressBar,
    UsageError,
    add_arguments,
    drgn_version_problem,
    examples_text,
    spec_by_name,
)

from lpdebug.report import EXIT_CLEAN, EXIT_ERROR, EXIT_FINDINGS, EXIT_INCOMPLETE  # noqa: F401

PROG = "lpdebug"
# The target options every subcommand takes; a command's own option with one of these
# short flags keeps only its long form here (bt -c CPU is bt --cpu CPU).
TARGET_FLAGS = ("-c", "-k", "-s")

_DESCRIPTION = """\
Inspect the livepatch, ftrace and function-graph state of a ppc64 Linux
kernel, from a vmcore, the running kernel or a live QEMU guest: patches and
their transition, ftrace ops and records, the shadow return stacks, true
backtraces (the real return addresses where the plain unwinder shows
return_to_handler or livepatch_handler) and TOC findings.

The same commands exist in drgn's REPL (%lp<command>, once lpdebug is
installed) and in gdb (lp-<command>, after 'python import lpdebug.commands.gdb').
"""

_EPILOG = """\
targets (give one, after the command):
  -c VMCORE [-s VMLINUX] [-s MODULE.ko|DIR ...] [--debug-directory DIR ...]
        a kernel core dump (/proc/vmcore as saved by kdump, ELF or
        makedumpfile format); -s directories are searched recursively for
        vmlinux and modules (.ko, .ko.debug, .ko.xz, .ko.gz, .ko.zst); what
        -s does not give is searched for like drgn does: --debug-directory,
        then /usr/lib/debug, /boot, /lib/modules/RELEASE and debuginfod
        (--no-default-debug-info: -s and --debug-directory only)
  --qemu QMP_SOCKET -s VMLINUX [-s MODULE.ko|DIR ...] [--no-pause]
        a live QEMU ppc64 guest, through its QMP socket (no vmcoreinfo file
        needed: lpdebug finds the guest's VMCOREINFO itself). By default the
        guest is paused (QMP stop) while it is read and resumed (cont)
        afterwards, also on an error, Ctrl-C or SIGTERM, and by a watchdog
        process when lpdebug is killed (SIGKILL); a guest found paused
        stays paused (`lpdebug qemu-resume --qemu QMP_SOCKET` resumes it).
        Pausing is the default because a running kernel changes under the
        reader: stacks, lists and shadow stacks read at different moments
        can look corrupt when nothing is. --no-pause reads it running
        (for a guest that must not stop): what changed while it was read is
        marked "changed while reading" and left unchecked, so that report
        may be incomplete
  -k    the running kernel (root; debug info from the standard places)
  --sample
        the real 6.12 ppc64le capture bundled with lpdebug (two livepatches,
        function_graph on), to try lpdebug without a vmcore of your own

examples:
  lpdebug triage --sample
      try it on the bundled sample
  lpdebug triage -c vmcore -s vmlinux -s modules/
      full report as text: livepatch, ftrace, backtraces, findings
  lpdebug triage -c vmcore --debug-directory ROOT/usr/lib/debug
      the same, with a distribution's debug info package unpacked in ROOT
  lpdebug triage -c vmcore -s vmlinux --json > report.json
      the same as a JSON document (schema lpdebug.triage/2); every
      command takes --json
  lpdebug batch /srv/cases --out results.jsonl
      every vmcore under a directory (each beside its vmlinux and modules),
      one JSON line each, resumable (lpdebug batch --help)
  lpdebug bt -c vmcore -s vmlinux 1234
      true backtrace of PID 1234
  lpdebug bt -c vmcore -s vmlinux
      on a crash dump, the task that crashed (-a: every CPU's active task)
  lpdebug records -k -f 'msleep*'
      dyn_ftrace records of msleep* on the running kernel
  lpdebug patches --qemu /tmp/guest/qmp.sock -s vmlinux
      livepatch state of a QEMU guest (paused while it is read)
  lpdebug triage --qemu /tmp/guest/qmp.sock -s vmlinux --no-pause
      a report of a guest that keeps running while it is read

exit status:
  0  complete, no findings
  1  complete, with findings (triage, toc), a stalled livepatch transition
     among them
  2  error: bad arguments, a target that cannot be opened, a vmlinux that
     is not the target's kernel; the reason is one line on stderr
  3  incomplete: something could not be checked (a stage that failed, memory
     that could not be read); wins over 1, and the report lists both

See 'lpdebug COMMAND --help' for each command, docs/triage-schema.md for
the JSON schemas and docs/findings.md for what each finding means.
"""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line and exits 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _target_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("target")
    which = group.add_mutually_exclusive_group(required=True)
    which.add_argument("-c", "--core", metavar="VMCORE", help="kernel core dump to read")
    which.add_argument("-k", "--kernel", action="store_true", help="the running kernel")
    which.add_argument("--qemu", metavar="QMP_SOCKET",
                       help="QMP socket of a live QEMU ppc64 guest (needs -s VMLINUX)")
    which.add_argument("--sample", action="store_true",
                       help="the real ppc64le capture bundled with lpdebug, to try lpdebug "
                            "without a vmcore of your own")
    group.add_argument("-s", "--symbols", metavar="PATH", action="append", default=[],
                       help="vmlinux, a module (.ko, .ko.debug, .ko.xz, .ko.gz, .ko.zst) or a "
                            "directory searched recursively for them; repeatable")
    group.add_argument("--debug-directory", metavar="DIR", action="append", default=[],
                       dest="debug_directories",
                       help="search DIR for debug info the way drgn searches /usr/lib/debug "
                            "(by build ID, boot/vmlinux-RELEASE, lib/modules/RELEASE/...); "
                            "repeatable, searched before the standard places")
    group.add_argument("--no-default-debug-info", action="store_true",
                       help="do not search drgn's standard places (/usr/lib/debug, /boot, "
                            "/lib/modules/RELEASE, debuginfod): only -s and --debug-directory")
    group.add_argument("--no-pause", action="store_true",
                       help="with --qemu: read the guest while it runs instead of pausing it "
                            "(parts that change while read are marked, not checked)")


_BATCH_DESCRIPTION = """\
Triage every vmcore PATH names, each exactly as 'lpdebug triage --json'
would, in a process of its own with a time and a memory limit, and append one
JSON line per vmcore to --out: its triage document, its path and how the
triage ended (schema lpdebug.batch/1, docs/batch.md). A rerun skips the
vmcores --out already has (same path, size and modification time). At the
end, tables across the corpus: vmcores by verdict, findings by kind.

PATH is a directory tree (each vmcore with the vmlinux, modules and debug
trees beside it; committed fixtures as they are), a manifest (.jsonl lines
{"vmcore": ..., "symbols": [...], "debug_directories": [...]}, or .csv with
those columns) or one vmcore file.
"""

_BATCH_EPILOG = """\
examples:
  lpdebug batch vmcores/fixtures --out results.jsonl
      every committed fixture
  lpdebug batch /srv/cases --out results.jsonl --jobs 4
      a tree of cases, each vmcore beside its vmlinux and modules/
  lpdebug batch manifest.jsonl --debug-directory /srv/debuginfo/usr/lib/debug --out results.jsonl
      vmcores listed in a manifest, with a shared distro debuginfo tree
  lpdebug batch /srv/cases --out results.jsonl --scheduler tcp://scheduler:8786
      the same tasks on a Dask cluster (pip install 'lpdebug[dask]')

exit status: 0 every vmcore clean, 1 findings in some, 2 bad arguments,
3 some vmcore incomplete or not triaged (error, timeout, memory_limit, died)
"""


def _batch_parser(commands: Any) -> None:
    from lpdebug import batch

    sub = commands.add_parser(
        "batch", help="triage a corpus of vmcores into JSON lines (resumable, parallel)",
        description=_BATCH_DESCRIPTION, epilog=_BATCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub.add_argument("paths", metavar="PATH", nargs="+",
                     help="a directory tree of vmcores, a manifest (.jsonl, .csv) or a vmcore")
    sub.add_argument("--out", required=True, metavar="RESULTS.jsonl",
                     help="the JSON lines file: appended to, and read to skip what is done")
    where = sub.add_mutually_exclusive_group()
    where.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1, metavar="N",
                       help="vmcores triaged at a time on this machine (default: the CPUs, %(default)s)")
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="run each vmcore as a task on this Dask distributed scheduler "
                            "(tcp://HOST:8786); needs pip install 'lpdebug[dask]'")
    sub.add_argument("-s", "--symbols", metavar="PATH", action="append", default=[],
                     help="debug info for every vmcore, as lpdebug triage -s; repeatable")
    sub.add_argument("--debug-directory", metavar="DIR", action="append", default=[],
                     dest="debug_directories",
                     help="a debug info tree for every vmcore, as lpdebug triage --debug-directory "
                          "(a shared /usr/lib/debug of many releases: found by build ID); repeatable")
    sub.add_argument("--no-default-debug-info", action="store_true",
                     help="do not search drgn's standard places (/usr/lib/debug, debuginfod ...)")
    sub.add_argument("--all-records", action="store_true",
                     help="every dyn_ftrace record in each document (lpdebug triage --all-records)")
    sub.add_argument("--timeout", type=float, default=batch.DEFAULT_TIMEOUT, metavar="SECONDS",
                     help="kill a vmcore's triage after this long (default %(default)g)")
    sub.add_argument("--memory-limit", type=int, default=batch.DEFAULT_MEMORY_LIMIT, metavar="MIB",
                     help="address-space limit of each vmcore's triage process (RLIMIT_AS; "
                          "default %(default)s, 0: none)")
    sub.add_argument("--retry-failed", action="store_true",
                     help="triage again the vmcores whose line is error, timeout, memory_limit or died")


def _batch_progress(stream: Any) -> Any:
    """A bar of the vmcores done on a terminal; a line per vmcore otherwise."""
    bar = ProgressBar(stream)
    failed = []

    def progress(done: int, total: int, line: Optional[dict]) -> None:
        if line is not None and line["triage"] is None:
            failed.append(line["path"])
        if bar.enabled:
            bar(f"vmcores ({len(failed)} not triaged)" if failed else "vmcores", done, total)
        elif line is not None:
            width = len(str(total))
            text = (f"[{done:{width}}/{total}] {line['status']} {line['cost']['seconds']:.1f} s "
                    f"{line['path']}")
            if line.get("error"):
                text += f": {line['error']}"
            stream.write(text + "\n")
            stream.flush()

    return progress, bar


def _run_batch(args: argparse.Namespace) -> int:
    from lpdebug import batch

    if args.jobs < 1:
        raise UsageError("--jobs takes a number of at least 1")
    if args.timeout <= 0 or args.memory_limit < 0:
        raise UsageError("--timeout takes seconds above 0, --memory-limit MiB (0: no limit)")
    vmcores = batch.find_vmcores(args.paths, symbols=args.symbols,
                                 debug_directories=args.debug_directories, exclude=[args.out])
    if not vmcores:
        raise UsageError(f"no vmcore found in {' '.join(args.paths)} (docs/batch.md says what counts)")
    options = batch.BatchOptions(all_records=args.all_records,
                                 default_debug_info=not args.no_default_debug_info,
                                 timeout=args.timeout, memory_limit=args.memory_limit,
                                 threads=1 if args.scheduler else max(1, (os.cpu_count() or 1) // args.jobs))
    progress, bar = _batch_progress(sys.stderr)
    try:
        done = batch.run_batch(vmcores, args.out, options, jobs=args.jobs, scheduler=args.scheduler,
                               retry_failed=args.retry_failed, progress=progress)
    finally:
        bar.close()
    if done.skipped:
        sys.stderr.write(f"{PROG}: {done.skipped} of {len(vmcores)} vmcores already in {args.out}: "
                         "skipped\n")
    sys.stdout.write(batch.corpus_tables(done.lines))
    sys.stdout.flush()
    return batch.corpus_exit_status(done.lines)


def _version_text() -> str:
    import lpdebug

    try:
        import drgn

        drgn_version = drgn.__version__
    except ImportError:
        drgn_version = "not installed"
    return f"{PROG} {lpdebug.__version__} (drgn {drgn_version})"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        usage=f"{PROG} COMMAND TARGET [OPTIONS]",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version_text())
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands",
                                     parser_class=_Parser, prog=PROG)
    commands.required = True
    for spec in SPECS:
        sub = commands.add_parser(
            spec.name,
            help=spec.summary,
            description=textwrap.fill(spec.description, 78),
            epilog=examples_text(spec, f"{PROG} {spec.name} -c vmcore -s vmlinux"),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _target_arguments(sub)
        add_arguments(sub, spec, reserved=TARGET_FLAGS)
    resume = commands.add_parser(
        RESUME_COMMAND, help="resume a QEMU guest that an lpdebug run killed mid-pause left paused",
        description=textwrap.fill(
            "Send cont to the guest behind QMP_SOCKET if it is paused. lpdebug resumes a guest "
            "it paused itself however it ends, and a watchdog process resumes it when lpdebug is "
            "killed with SIGKILL; this is the way out when both were killed (a guest paused "
            "on purpose is resumed too: run it only for a guest you want running).", 78))
    resume.add_argument("--qemu", metavar="QMP_SOCKET", required=True,
                        help="the guest's QMP socket (path, or host:port)")
    _batch_parser(commands)
    return parser


RESUME_COMMAND = "qemu-resume"


def _resume_guest(address: str) -> int:
    from lpdebug import qmp
    from lpdebug.errors import LpdebugError

    try:
        was_paused = qmp.resume(address)
    except LpdebugError as e:
        return _fail(_one_line(e))
    sys.stdout.write(("the guest was paused: resumed\n" if was_paused
                      else "the guest is running: nothing to do\n"))
    return EXIT_CLEAN


def open_target(args: argparse.Namespace, session: Optional[contextlib.ExitStack] = None) -> Any:
    """
    A drgn Program for the target the command line names. A QEMU guest is
    paused until ``session`` closes (unless --no-pause); without a session
    the caller closes nothing and the guest is read running.
    """
    from lpdebug import target

    if args.no_pause and not args.qemu:
        raise UsageError("--no-pause goes with --qemu (a vmcore does not run; -k cannot pause)")
    if args.sample:
        from lpdebug import sample

        return sample.open_sample()
    default = not args.no_default_debug_info
    if args.core:
        return target.open_vmcore(args.core, args.symbols, default_debug_info=default,
                                  debug_directories=args.debug_directories)
    if args.qemu:
        if not args.symbols or not os.path.isfile(args.symbols[0]):
            raise UsageError("--qemu needs -s VMLINUX (the guest kernel's vmlinux file) first")
        if session is None:
            return target.open_qemu(args.qemu, args.symbols[0], args.symbols[1:],
                                    debug_directories=args.debug_directories)
        return session.enter_context(target.qemu_session(
            args.qemu, args.symbols[0], args.symbols[1:], pause=not args.no_pause,
            debug_directories=args.debug_directories))
    return target.open_running_kernel(args.symbols, default_debug_info=default,
                                      debug_directories=args.debug_directories)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__


def _fail(message: str) -> int:
    sys.stderr.write(f"{PROG}: error: {message}\n")
    return EXIT_ERROR


def _warn_target(prog: Any) -> None:
    from lpdebug.target import target_warnings

    for warning in target_warnings(prog):
        sys.stderr.write(f"{PROG}: warning: {_one_line(Exception(warning))}\n")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so every cleanup (resuming a paused guest) runs."""


# Signals received during this run. drgn calls back into Python to read
# memory (lpdebug's linear-map reader); an exception raised there is caught by
# drgn and logged, and drgn goes on with what it could not read. So a signal is
# also remembered, and a run it hit ends as interrupted, whatever drgn did
# with the exception.
_RECEIVED: List[int] = []


@contextlib.contextmanager
def _signals_raise() -> Any:
    def handler(signum: int, frame: Any) -> None:
        _RECEIVED.append(signum)
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    try:
        previous = {signum: signal.signal(signum, handler)
                    for signum in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: leave the signals alone
        yield
        return
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _raise_if_signalled() -> None:
    if signal.SIGTERM in _RECEIVED:
        raise Terminated()
    if _RECEIVED:
        raise KeyboardInterrupt()


def run(argv: Optional[Sequence[str]] = None) -> int:
    problem = drgn_version_problem()
    if problem is not None:
        return _fail(problem)
    args = build_parser().parse_args(argv)
    if args.command == RESUME_COMMAND:
        return _resume_guest(args.qemu)

    import drgn

    from lpdebug.errors import LpdebugError, damaged_input

    if args.command == "batch":
        try:
            return _run_batch(args)
        except LpdebugError as e:
            return _fail(_one_line(e))
        except KeyboardInterrupt:
            return _fail(f"interrupted: the lines written to {args.out} are kept; "
                         "the same command goes on from there")
    spec = spec_by_name(args.command)

    bar = ProgressBar(sys.stderr)
    try:
        # The guest a --qemu session paused is resumed when the session
        # closes: on success, on an error, on Ctrl-C and on SIGTERM alike.
        with contextlib.ExitStack() as session:
            prog = open_target(args, session)
            _raise_if_signalled()
            _warn_target(prog)
            output = spec.run(prog, args, bar)
            _raise_if_signalled()
    except Terminated:
        bar.close()
        return _fail("terminated (SIGTERM)")
    except LpdebugError as e:
        bar.close()
        return _fail(_one_line(e))
    except (drgn.FaultError, LookupError, ValueError, OSError) as e:
        bar.close()
        return _fail(f"{type(e).__name__}: {_one_line(e)}")
    except KeyboardInterrupt:
        bar.close()
        return _fail("interrupted")
    except Exception as e:  # noqa: BLE001 (damaged input is one line; anything else goes on to main())
        bar.close()
        damaged = damaged_input(e)
        if damaged is None or os.environ.get("LPDEBUG_TRACEBACK"):
            raise
        return _fail(_one_line(damaged))
    bar.close()
    for warning in output.warnings:
        sys.stderr.write(f"{PROG}: warning: {_one_line(Exception(warning))}\n")
    sys.stdout.write(output.text + "\n")
    sys.stdout.flush()
    return output.status


def main(argv: Optional[List[str]] = None) -> int:
    try:
        with _signals_raise():
            status = run(argv)
    except Terminated:
        status = _fail("terminated (SIGTERM)")
    except KeyboardInterrupt:
        status = _fail("interrupted")
    except BrokenPipeError:
        # "lpdebug triage ... | head": the reader left; that is not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        status = EXIT_CLEAN
    except Exception as e:  # noqa: BLE001 (a bug still gets one line, not a traceback)
        if os.environ.get("LPDEBUG_TRACEBACK"):
            raise
        from lpdebug.errors import damaged_input

        damaged = damaged_input(e)
        if damaged is not None:
            status = _fail(_one_line(damaged))
        else:
            status = _fail(f"internal error: {type(e).__name__}: {_one_line(e)} "
                           "(set LPDEBUG_TRACEBACK=1 for details)")
    sys.exit(status)


if __name__ == "__main__":
    main()
