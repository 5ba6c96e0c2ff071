# SPDX-License-Identifier: GPL-2.0-or-later
"""
The lpdebug commands, defined once for every front end.

Each :class:`Spec` names a command, its arguments and a ``run`` function that
calls the library and renders text. ``drgn_plugin`` registers them as drgn
commands (``%lpbt``), ``cli`` as subcommands (``lpdebug bt``) and ``gdb`` as
gdb commands (``lp-bt``), so the three show the same output from the same
code. Nothing here analyses anything: it picks a task, calls a walker and
hands the model to :mod:`lpdebug.render` or :mod:`lpdebug.schema`; the exit
status of each command is :func:`lpdebug.report.exit_status`'s rule.
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from lpdebug import drgn_compat
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

# The oldest drgn lpdebug runs on, and what newer releases add: lpdebug.drgn_compat.
MIN_DRGN_VERSION = drgn_compat.FLOOR


def drgn_version_problem() -> Optional[str]:
    """One line saying why the installed drgn will not do (the version found,
    the version needed, how to get it), or None when it will."""
    return drgn_compat.version_problem()


class UsageError(LpdebugError):
    """A command's arguments do not fit the target (no such task, bad pattern ...)."""


@dataclass
class Arg:
    flags: Tuple[str, ...]
    options: Dict[str, Any] = field(default_factory=dict)


def arg(*flags: str, **options: Any) -> Arg:
    return Arg(flags, options)


@dataclass(eq=False)
class Output:
    """
    What a command gives back, in every front end: the text it printed, the
    findings behind it and the exit status the CLI returns. drgn's
    ``run_command(prog, "lptoc")`` returns this object.
    """

    text: str
    # lpdebug.report's exit status: 0 clean, 1 findings, 3 incomplete (something could not be
    # checked); every front end reports it (the CLI's exit code, the drgn command's return
    # value, gdb's $lp_status)
    status: int = 0
    findings: List[Any] = field(default_factory=list)  # lpdebug.model.Finding
    result: Optional[Any] = None  # the TriageResult behind triage and toc, when there is one
    # one line each, for stderr: what the output rests on that is missing
    warnings: List[str] = field(default_factory=list)

    @property
    def exit_status(self) -> int:
        """What the ``lpdebug`` command exits with: :attr:`status`."""
        return self.status

    # Compares equal to its exit status, and converts to it: run_command(prog, "lptoc") == 1.
    def __eq__(self, other: object) -> bool:
        if isinstance(other, int):
            return self.status == other
        return self is other

    __hash__ = object.__hash__

    def __int__(self) -> int:
        return self.status

    __index__ = __int__

    def __repr__(self) -> str:
        return (f"<lpdebug command output: {len(self.findings)} finding(s), "
                f"exit status {self.status}, {len(self.text.splitlines())} lines>")


def _coverage_warnings(result: Any) -> List[str]:
    from lpdebug import coverage

    return coverage.warnings(result.coverage) if result.coverage is not None else []


def _missing_debug_info(prog: Any, **used: Any) -> List[str]:
    """Warnings for the modules without debug info that what a command shows involves."""
    from lpdebug import coverage, debuginfo

    try:
        found = debuginfo.coverage(prog)
    except Exception:  # noqa: BLE001 (a warning must not cost the command)
        return []
    coverage.mark_usage(found, **used)
    return coverage.warnings(found)


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


def add_arguments(parser: Any, spec: Spec, reserved: Tuple[str, ...] = ()) -> None:
    """
    Add ``spec``'s arguments to ``parser``; a front end's own options in
    ``reserved`` (the CLI's ``-c`` core file) are left out of the flags
    (``bt -c CPU`` is ``bt --cpu CPU`` there).
    """
    for a in spec.args:
        flags = tuple(f for f in a.flags if f not in reserved)
        parser.add_argument(*flags, **a.options)


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


def _hex_text(text: str) -> Optional[int]:
    # crash(8): "0x..." is an address; so is a bare hex number that cannot be a
    # PID (it has hex letters, or a kernel address's 16 digits).
    lowered = text.lower()
    if lowered.startswith("0x"):
        return int(lowered, 16)
    if all(c in "0123456789abcdef" for c in lowered) and lowered and (
            any(c in "abcdef" for c in lowered) or len(lowered) >= 16):
        return int(lowered, 16)
    return None


def _task_at(prog: Any, address: int, text: str) -> Any:
    import drgn

    task = drgn.Object(prog, "struct task_struct *", address)
    try:
        task.pid.value_()  # fail here, with a clear message, if unreadable
    except drgn.FaultError as e:
        raise UsageError(f"no task_struct readable at {text}: {e}") from None
    return task


def online_cpus(prog: Any) -> List[int]:
    """The online CPUs; the possible ones when cpu_online_mask is not in the dump."""
    import drgn
    from drgn.helpers.linux.cpumask import for_each_online_cpu, for_each_possible_cpu

    try:
        return list(for_each_online_cpu(prog))
    except drgn.FaultError:
        return list(for_each_possible_cpu(prog))


def idle_tasks(prog: Any) -> List[Any]:
    """Every online CPU's idle task (PID 0 exists once per CPU), CPU order."""
    from drgn.helpers.linux.sched import idle_task

    return [idle_task(prog, cpu) for cpu in online_cpus(prog)]


def find_tasks(prog: Any, which: str) -> List[Any]:
    """
    The tasks named by a PID (decimal; PID 0 is every CPU's idle task) or a
    task_struct address (``0x...``, or bare hex as crash(8) takes it).
    """
    from drgn.helpers.linux.pid import find_task as drgn_find_task

    text = which.strip()
    try:
        address = _hex_text(text)
        if address is not None:
            return [_task_at(prog, address, text)]
        pid = int(text, 10)
    except ValueError:
        raise UsageError(f"{which!r} is neither a PID nor a task_struct address (0x...)") from None
    if pid == 0:
        return idle_tasks(prog)
    task = drgn_find_task(prog, pid)
    if not task:
        raise UsageError(f"no task with PID {pid}")
    return [task]


def find_task(prog: Any, which: str) -> Any:
    """The task named by a PID (decimal; 0 is CPU 0's idle task) or a task_struct address."""
    return find_tasks(prog, which)[0]


def _cpu_list(text: str) -> List[int]:
    # "1", "0,2", "0-3": crash(8)'s -c syntax
    cpus: List[int] = []
    try:
        for part in text.split(","):
            if "-" in part:
                low, high = part.split("-", 1)
                cpus.extend(range(int(low), int(high) + 1))
            else:
                cpus.append(int(part))
    except ValueError:
        raise UsageError(f"{text!r} is not a CPU list (e.g. 1, 0,2 or 0-3)") from None
    return cpus


def active_tasks(prog: Any, cpus: Optional[List[int]] = None) -> List[Any]:
    """The task running on each online CPU (``cpus``: only those), idle tasks included."""
    from drgn.helpers.linux.sched import cpu_curr

    online = online_cpus(prog)
    if cpus is None:
        cpus = online
    for cpu in cpus:
        if cpu not in online:
            raise UsageError(f"CPU {cpu} is not online (online: {', '.join(map(str, online))})")
    return [cpu_curr(prog, cpu) for cpu in cpus]


def crashed_task(prog: Any) -> Any:
    """The task that crashed, on a crash dump; a UsageError elsewhere."""
    from lpdebug.tasks import crashed_task

    try:
        return crashed_task(prog)
    except LookupError as e:
        raise UsageError("no crashed task (this is not a crash dump): give a PID, a "
                         f"task_struct address, -a or -c CPU ({e})") from None


def bt_tasks(prog: Any, args: argparse.Namespace) -> List[Any]:
    """The tasks ``bt`` shows: crash(8)'s selection by PID, address, -a, -c or the crashed task."""
    if getattr(args, "all_cpus", False):
        return active_tasks(prog)
    if getattr(args, "cpu", None) is not None:
        return active_tasks(prog, _cpu_list(args.cpu))
    tasks = getattr(args, "tasks", None)
    if not tasks:
        return [crashed_task(prog)]
    found: List[Any] = []
    for which in tasks:
        found.extend(find_tasks(prog, which))
    return found


def _json_document(command: str, **parts: Any) -> str:
    from lpdebug import schema

    return schema.command_dumps(command, **parts)


# --- the commands -------------------------------------------------------------


def _status(findings: int, diagnostics: int) -> int:
    from lpdebug.report import exit_status_of

    return exit_status_of(findings, diagnostics)


def _with_diagnostics(text: str, diagnostics: List[Any]) -> str:
    from lpdebug import render

    return text + ("\n\n" + render.render_diagnostics(diagnostics).rstrip() if diagnostics else "")


def _run_patches(prog: Any, args: argparse.Namespace, progress: Optional[Progress]) -> Output:
    from lpdebug import livepatch, render

    state = livepatch.livepatch_state(prog)
    status = _status(0, len(state.diagnostics))
    warnings = _missing_debug_info(prog, livepatch=state)
    if args.json:
        return Output(_json_document("patches", livepatch=state), status, warnings=warnings)
    return Output(render.render_livepatch(state, _describe(prog)), status, warnings=warnings)


def _run_ops(prog: Any, args: argparse.Namespace, progress: Optional[Progress]) -> Output:
    from lpdebug import ftrace, render

    diagnostics: List[Any] = []
    ops = list(ftrace.ftrace_ops(prog, diagnostics))
    if args.json:
        return Output(_json_document("ops", ops=ops, diagnostics=diagnostics),
                      _status(0, len(diagnostics)))
    return Output(_with_diagnostics(render.render_ftrace_ops(ops, full=args.full), diagnostics),
                  _status(0, len(diagnostics)))


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
    diagnostics: List[Any] = []
    timings: Dict[str, float] = {}
    ops = ftrace.ftrace_ops(prog, diagnostics)
    records = ftrace.ftrace_records(prog, all_records, ops=ops, diagnostics=diagnostics,
                                    timings=timings)
    keep = _record_filter(args)
    shown = [r for r in records if keep(r)]
    total = int(timings.get("count", len(records)))
    if args.json:
        return Output(_json_document("records", records=sorted(shown, key=lambda r: r.ip),
                                     total_records=total, diagnostics=diagnostics),
                      _status(0, len(diagnostics)))
    ops_names = {o.address: (o.func_symbol or f"{o.func:#x}") + (f" [{o.owner}]" if o.owner else "")
                 for o in ops}
    text = render.render_records(shown, total=total, ops_names=ops_names)
    return Output(_with_diagnostics(text, diagnostics), _status(0, len(diagnostics)))


def _traces_status(traces: List[Any], moved: Sequence[Any] = ()) -> int:
    from lpdebug.diagnostics import task_diagnostics

    return _status(0, sum(len(list(task_diagnostics(t))) for t in traces) + len(moved))


def _traces(prog: Any, tasks: List[Any]) -> Tuple[List[Any], List[Any]]:
    # The tasks' true backtraces, and the diagnostics of those a running kernel
    # changed every time they were read (their headers say so too).
    from lpdebug import live
    from lpdebug.backtrace import true_backtrace

    if not live.is_moving(prog):
        return [true_backtrace(task) for task in tasks], []
    traces, moved = [], []
    for task in tasks:
        trace, torn = live.settled_trace(task, true_backtrace)
        traces.append(trace)
        if torn is not None:
            moved.append(torn)
    return traces, moved


def _run_bt(prog: Any, args: argparse.Namespace, progress: Optional[Progress]) -> Output:
    from lpdebug import render

    traces, moved = _traces(prog, bt_tasks(prog, args))
    warnings = _missing_debug_info(prog, tasks=traces)
    if args.json:
        return Output(_json_document("bt", tasks=traces), _traces_status(traces, moved),
                      warnings=warnings)
    describe = _describe(prog)
    text = "\n\n".join(render.render_backtrace(t, describe) for t in traces)
    return Output(_with_diagnostics(text, moved), _traces_status(traces, moved), warnings=warnings)


def _toc_owner(prog: Any) -> Optional[Callable[[int], Optional[str]]]:
    try:
        from lpdebug import toc

        return toc.module_tocs(prog, cross_check=False).toc_owner
    except Exception:  # noqa: BLE001 (owner names only label the column)
        return None


def _run_stacks(prog: Any, args: argparse.Namespace, progress: Optional[Progress]) -> Output:
    from lpdebug import render

    traces, moved = _traces(prog, find_tasks(prog, args.task))
    warnings = _missing_debug_info(prog, tasks=traces)
    if args.json:
        return Output(_json_document("stacks", tasks=traces), _traces_status(traces, moved),
                      warnings=warnings)
    describe, owner = _describe(prog), _toc_owner(prog)
    text = "\n\n".join(render.render_shadow_stacks(t, describe, owner) for t in traces)
    return Output(_with_diagnostics(text, moved), _traces_status(traces, moved), warnings=warnings)


def _run_toc(prog: Any, args: argparse.Namespace, progress: Optional[Progress]) -> Output:
    from lpdebug import render, report

    result = report.toc_check(prog, progress=progress)
    if args.json:
        return Output(_json_document("toc", tocs=result.tocs, findings=result.findings,
                                     diagnostics=result.diagnostics),
                      report.exit_status(result), result.findings, result)
    text = "\n".join(p for p in (
        render.result_line(len(result.findings), len(result.diagnostics)) + "\n",
        render.render_diagnostics(result.diagnostics),
        "Module TOCs\n-----------\n" + render.render_tocs(result.tocs, diagnostics=False),
        "Findings\n--------\n" + render.render_findings(result.findings),
    ) if p)
    return Output(text, report.exit_status(result), result.findings, result,
                  warnings=_coverage_warnings(result))


def _run_triage(prog: Any, args: argparse.Namespace, progress: Optional[Progress]) -> Output:
    from lpdebug import render, report, schema

    result = report.triage(prog, all_records=args.all_records, progress=progress)
    if args.json:
        text = schema.dumps(result).rstrip("\n")
    else:
        text = render.render_triage(result, _describe(prog), all_tasks=args.all_tasks).rstrip("\n")
    return Output(text, report.exit_status(result), result.findings, result,
                  warnings=_coverage_warnings(result))


_TASK_ARG = arg("task", metavar="PID|TASK",
                help="PID of the task (0: every CPU's idle task), or the address of its "
                     "task_struct (0x..., or bare hex)")
_JSON_ARG = arg("--json", action="store_true",
                help="print a JSON document (its schema id and fields: docs/triage-schema.md)")

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
        args=[_JSON_ARG],
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
                  help="list every filter and notrace function, not only the first ones"),
              _JSON_ARG],
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
            _JSON_ARG,
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
        args=[
            arg("tasks", metavar="PID|TASK", nargs="*",
                help="PID (0: every CPU's idle task) or task_struct address (0x..., or bare "
                     "hex); none: the crashed task of a crash dump"),
            arg("-a", "--all-cpus", action="store_true",
                help="the task active on every online CPU, idle tasks included"),
            arg("-c", "--cpu", metavar="CPU",
                help="the task active on CPU (a list: 0,2 or 0-3)"),
            _JSON_ARG,
        ],
        run=_run_bt,
        examples=[("1", "true backtrace of PID 1"),
                  ("0xc000000002a41e00", "of the task_struct at that address"),
                  ("c000000002a41e00", "the same: bare hex is an address, as in crash(8)"),
                  ("", "on a crash dump, the task that crashed"),
                  ("-a", "the task active on every CPU, idle tasks included"),
                  ("-c 1", "the task active on CPU 1"),
                  ("0", "every CPU's idle task (PID 0)")],
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
        args=[_TASK_ARG, _JSON_ARG],
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
        args=[_JSON_ARG],
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
            "module TOCs and all findings, and first what could not be checked. "
            "With --json, print the lpdebug.triage/2 document described in "
            "docs/triage-schema.md."
        ),
        args=[
            arg("--json", action="store_true",
                help="print the lpdebug.triage/2 JSON document instead of tables"),
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

