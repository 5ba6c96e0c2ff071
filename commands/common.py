# SPDX-License-Identifier: GPL-2.0-or-later
"""
The lpdebug commands, defined once for every front end.

Each :class:`Spec` names a command, its arguments and a ``run`` function that
calls the library and renders text. ``drgn_plugin`` registers them as drgn
commands (``%lpbt``), ``cli`` as subcommands (``lpdebug bt``) and ``gdb`` as
gdb commands (``lp-bt``), so the three show the same output from the same
code. Nothing here analyses anything: it picks a task, calls a walker and
hands the model to :mod:`lpdebug.render` or :mod:`lpdebug.triage`.
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from lpdebug.errors import LpdebugError

__all__ = (
    "MIN_DRGN_VERSION",
    "drgn_version_problem",
    "UsageError",
    "Arg",
    "Spec",
    "Output",
    "SPECS",
    "spec_by_name",
    "add_arguments",
    "examples_text",
    "Progress",
    "ProgressBar",
)

# The command API lpdebug uses (custom_command, parse_shell_command,
# CommandError, the drgn.plugins entry point) is what drgn 0.3.0 ships; older
# releases are not tested.
MIN_DRGN_VERSION = (0, 3, 0)


def _version_tuple(text: str) -> Tuple[int, ...]:
    parts = []
    for piece in text.split("+")[0].split("."):
        digits = "".join(c for c in piece if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def drgn_version_problem() -> Optional[str]:
    """One line saying why the installed drgn is too old, or None when it will do."""
    try:
        import drgn
    except ImportError:
        return "drgn is not installed: pip install 'drgn>=%s'" % ".".join(map(str, MIN_DRGN_VERSION))
    version = getattr(drgn, "__version__", "0")
    if _version_tuple(version) < MIN_DRGN_VERSION:
        return "lpdebug needs drgn %s or later, but drgn %s is installed" % (
            ".".join(map(str, MIN_DRGN_VERSION)), version)
    return None


class UsageError(LpdebugError):
    """A command's arguments do not fit the target (no such task, bad pattern ...)."""


@dataclass
class Arg:
    flags: Tuple[str, ...]
    options: Dict[str, Any] = field(default_factory=dict)


def arg(*flags: str, **options: Any) -> Arg:
    return Arg(flags, options)


@dataclass
class Output:
    text: str
    findings: int = 0  # a front end's exit status reflects these


Progress = Callable[[str, int, int], None]


@dataclass
class Spec:
    name: str  # "bt": drgn %lpbt, gdb lp-bt, CLI "lpdebug bt"
    summary: str  # one line, shown in command lists
    description: str
    args: List[Arg]
    run: Callable[[Any, argparse.Namespace, Optional[Progress]], Output]
    # (arguments, what they do), shown as examples in each front end's syntax
    examples: List[Tuple[str, str]] = field(default_factory=list)


def add_arguments(parser: Any, spec: Spec) -> None:
    for a in spec.args:
        parser.add_argument(*a.flags, **a.options)


def examples_text(spec: Spec, prefix: str, line_mark: str = "") -> str:
    """
    The spec's examples in one front end's syntax. ``line_mark`` starts every
    line: drgn's help formatter keeps lines starting with "|" as they are.
    """
    if not spec.examples:
        return ""
    lines = ["examples:"]
    for args, what in spec.examples:
        lines.append(f"  {prefix}{(' ' + args) if args else ''}")
        lines.append(f"      {what}")
    return "\n".join(line_mark + line for line in lines)


# --- helpers shared by the run functions --------------------------------------


def _symbolizer(prog: Any) -> Any:
    from lpdebug.symbols import Symbolizer

    return Symbolizer(prog)


def _describe(prog: Any) -> Callable[[int], str]:
    try:
        return _symbolizer(prog).describe
    except Exception:  # noqa: BLE001 (naming is a nicety; hex is still right)
        return lambda addr: f"{addr:#x}"


def find_task(prog: Any, which: str) -> Any:
    """The task named by a PID (decimal) or a task_struct address (0x...)."""
    import drgn
    from drgn.helpers.linux.pid import find_task as drgn_find_task

    text = which.strip()
    try:
        if text.lower().startswith("0x"):
            task = drgn.Object(prog, "struct task_struct *", int(text, 16))
            task.pid.value_()  # fail here, with a clear message, if unreadable
            return task
        pid = int(text, 10)
    except ValueError:
        raise UsageError(f"{which!r} is neither a PID nor a task_struct address (0x...)") from None
    except drgn.FaultError as e:
        raise UsageError(f"no task_struct readable at {text}: {e}") from None
    task = drgn_find_task(prog, pid)
    if not task:
        raise UsageError(f"no task with PID {pid}")
    return task


def _trace(prog: Any, which: str) -> Any:
    from lpdebug import live
    from lpdebug.backtrace import true_backtrace

    task = find_task(prog, which)
    if not live.is_moving(prog):
        return true_backtrace(task)
    # A running kernel: read the task until it stands still (its header says when it never did).
    trace, _ = live.settled_trace(task, true_backtrace)
    return trace


# --- the commands -------------------------------------------------------------


def _run_patches(prog: Any, args: argparse.Namespace, progress: Optional[Progress]) -> Output:
    from lpdebug import livepatch, render

    state = livepatch.livepatch_state(prog)
    return Output(render.render_livepatch(state, _describe(prog)))


def _run_ops(prog: Any, args: argparse.Namespace, progress: Optional[Progress]) -> Output:
    from lpdebug import ftrace, render

    ops = list(ftrace.ftrace_ops(prog))
    return Output(render.render_ftrace_ops(ops, full=args.full))


def _record_filter(args: argparse.Namespace) -> Callable[[Any], bool]:
    function = args.function
    module = args.module

    def keep(record: Any) -> bool:
        if function is not None and not fnmatch.fnmatchcase(record.symbol or "", function):
            return False
        if module is not None:
            owner = record.module or "vmlinux"
            if not fnmatch.fnmatchcase(owner, module):
                return False
        return True

    return keep


def _run_records(prog: Any, args: argparse.Namespace, progress: Optional[Progress]) -> Output:
    from lpdebug import ftrace, render

    # A name filter must see every record: a function being looked up is
    # often one whose record is still in its default state.
    all_records = args.all or args.function is not None or args.module is not None
    if progress is not None:
        progress("ftrace records", 0, 0)
    errors: List[str] = []
    timings: Dict[str, float] = {}
    ops = ftrace.ftrace_ops(prog, errors)
    records = ftrace.ftrace_records(prog, all_records, ops=ops, errors=errors, timings=timings)
    keep = _record_filter(args)
    shown = [r for r in records if keep(r)]
    ops_names = {o.address: (o.func_symbol or f"{o.func:#x}") + (f" [{o.owner}]" if o.owner else "")
                 for o in ops}
    text = render.render_records(shown, total=int(timings.get("count", len(records))),
                                 ops_names=ops_names)
    return Output(text + ("\n" + render.render_errors(errors).rstrip() if errors else ""))


def _run_bt(prog: Any, args: argparse.Namespace, progress: Optional[Progress]) -> Output:
    from lpdebug import render

    return Output(render.render_backtrace(_trace(prog, args.task), _describe(prog)))


def _toc_owner(prog: Any) -> Optional[Callable[[int], Optional[str]]]:
    try:
        from lpdebug import toc

        return toc.module_tocs(prog, cross_check=False).toc_owner
    except Exception:  # noqa: BLE001 (owner names only label the column)
        return None


def _run_stacks(prog: Any, args: argparse.Namespace, progress: Optional[Progress]) -> Output:
    from lpdebug import render

    trace = _trace(prog, args.task)
    return Output(render.render_shadow_stacks(trace, _describe(prog), _toc_owner(prog)))


def _run_toc(prog: Any, args: argparse.Namespace, progress: Optional[Progress]) -> Output:
    from lpdebug import render, triage

    result = triage.toc_check(prog, progress=progress)
    text = "\n".join(p for p in (
        "Module TOCs\n-----------\n" + render.render_tocs(result.tocs),
        "Findings\n--------\n" + render.render_findings(result.findings),
        render.render_errors(result.errors).rstrip("\n"),
    ) if p)
    return Output(text, len(result.findings))


def _run_triage(prog: Any, args: argparse.Namespace, progress: Optional[Progress]) -> Output:
    from lpdebug import render, triage

    result = triage.triage(prog, all_records=args.all_records, progress=progress)
    if args.json:
        text = triage.dumps(result).rstrip("\n")
    else:
        text = render.render_triage(result, _describe(prog), all_tasks=args.all_tasks).rstrip("\n")
    return Output(text, len(result.findings))


_TASK_ARG = arg("task", metavar="PID|0xTASK",
                help="PID of the task, or the address of its task_struct (0x...)")

SPECS: List[Spec] = [
    Spec(
        name="patches",
        summary="livepatch state: patches, functions, klp_ops and the transition",
        description=(
            "Show every livepatch the kernel holds (enabled or in transition), "
            "its objects and functions with the old and new address and symbol, "
            "sympos, patched/transition/nop, each klp_ops with its func_stack and "
            "the function in effect, klp_state entries, the shadow-variable "
            "count, and the transition in progress."
        ),
        args=[],
        run=_run_patches,
        examples=[("", "list patches, functions and the transition")],
    ),
    Spec(
        name="ops",
        summary="ftrace_ops: flags, handler and owner, filter and notrace functions",
        description=(
            "Walk ftrace_ops_list and show each ftrace_ops: its address, its "
            "handler function and the module owning it, its flags decoded with "
            "the running kernel's bit layout, the functions in its filter and "
            "notrace hashes, and its trampoline."
        ),
        args=[arg("--full", action="store_true",
                  help="list every filter and notrace function, not only the first ones")],
        run=_run_ops,
        examples=[("", "list the registered ftrace_ops"),
                  ("--full", "the same, with every filtered function")],
    ),
    Spec(
        name="records",
        summary="dyn_ftrace records: flags, refcount and attached ops",
        description=(
            "Show the dyn_ftrace records (one per traceable call site), with "
            "their flags and reference count decoded for this kernel and the "
            "ftrace_ops attached to each. Without filters only records that are "
            "enabled or otherwise not in their default state are shown, like "
            "tracefs enabled_functions. Patterns are shell globs."
        ),
        args=[
            arg("-f", "--function", metavar="PATTERN",
                help="only records of functions whose name matches PATTERN"),
            arg("-m", "--module", metavar="PATTERN",
                help="only records in modules matching PATTERN ('vmlinux' for the kernel)"),
            arg("-a", "--all", action="store_true",
                help="every record, including those in their default state"),
        ],
        run=_run_records,
        examples=[("", "records in use (like enabled_functions)"),
                  ("-f 'msleep*'", "records of functions named msleep*"),
                  ("-m livepatch_sample", "every record of one module")],
    ),
    Spec(
        name="bt",
        summary="true backtrace of one task, through fgraph and livepatch",
        description=(
            "Show a task's true backtrace: drgn's unwinding with each "
            "return_to_handler return address replaced by the real one from "
            "task->ret_stack and each livepatch_handler return by the caller's "
            "from the livepatch stack. The 'via' column says where each return "
            "address came from (unwound, fgraph, livepatch) and 'unwinder saw' "
            "what the plain unwinder showed where it differs."
        ),
        args=[_TASK_ARG],
        run=_run_bt,
        examples=[("1", "true backtrace of PID 1"),
                  ("0xc000000002a41e00", "of the task_struct at that address")],
    ),
    Spec(
        name="stacks",
        summary="shadow stacks of one task: task->ret_stack and the livepatch stack",
        description=(
            "Show a task's function-graph shadow stack (task->ret_stack: the real "
            "return address, traced function and retp of each hooked call) and "
            "its ppc64 livepatch stack (saved TOC, saved and real LR, magic), "
            "oldest first."
        ),
        args=[_TASK_ARG],
        run=_run_stacks,
        examples=[("42", "both shadow stacks of PID 42")],
    ),
    Spec(
        name="toc",
        summary="module TOCs and every TOC finding over all tasks",
        description=(
            "Compute the TOC of vmlinux and of each module, cross-check it with "
            "the module's function prologues, walk every task's true backtrace "
            "and livepatch stack, and report each saved TOC that does not belong "
            "to the code it returns to, bad livepatch-stack magic, out-of-bounds "
            "stacks and unreadable memory."
        ),
        args=[],
        run=_run_toc,
        examples=[("", "list module TOCs and TOC findings")],
    ),
    Spec(
        name="triage",
        summary="everything: kernel, livepatch, ftrace, tasks, TOC findings",
        description=(
            "Run every walker and check over the kernel and report: kernel "
            "identity, livepatch state and transition (with the tasks holding it "
            "back), ftrace ops and records, the true backtraces worth reading, "
            "module TOCs and all findings. With --json, print the lpdebug.triage/1 "
            "document described in docs/triage-schema.md."
        ),
        args=[
            arg("--json", action="store_true",
                help="print the lpdebug.triage/1 JSON document instead of tables"),
            arg("--all-records", action="store_true",
                help="include every dyn_ftrace record, not only the non-default ones"),
            arg("--all-tasks", action="store_true",
                help="show every task's backtrace in the text report, not only the "
                     "interesting ones (JSON always has every task)"),
        ],
        run=_run_triage,
        examples=[("", "the full report as text"),
                  ("--json > report.json", "the report as JSON, for a ticket")],
    ),
]


def spec_by_name(name: str) -> Spec:
    for spec in SPECS:
        if spec.name == name:
            return spec
    raise KeyError(name)


# --- progress -----------------------------------------------------------------


class ProgressBar:
    """
    A one-line progress bar on a terminal: ``stage [#####.....] done/total``.

    It draws only when the stream is a tty and only after the walk has taken
    a moment, so quick commands and redirected output stay clean.
    """

    WIDTH = 30
    DELAY = 0.5  # seconds before the bar first appears

    def __init__(self, stream: Any = None) -> None:
        import time

        self._time = time.monotonic
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self._start = self._time()
        self._drawn = False
        self._last = 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = self._time()
        if now - self._start < self.DELAY:
            return
        finished = total and done >= total
        if not finished and now - self._last < 0.1:
            return
        self._last = now
        if total:
            filled = self.WIDTH * done // total
            bar = "#" * filled + "." * (self.WIDTH - filled)
            line = f"{stage} [{bar}] {done}/{total}"
        else:
            line = f"{stage} ..."
        self.stream.write("\r\033[K" + line)
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._drawn = False

