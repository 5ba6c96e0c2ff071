# SPDX-License-Identifier: GPL-2.0-or-later
"""
lpdebug's drgn commands, loaded by drgn through the ``drgn.plugins`` entry
point that installing lpdebug registers.

In drgn's REPL::

    >>> %lptriage
    >>> %lpbt 1234
    >>> %lprecords -f 'msleep*'
    >>> %lpbt --help
    >>> %help            (every command, drgn's and lpdebug's)

The commands are those of :mod:`lpdebug.commands.common` with an ``lp``
prefix; they are enabled for Linux kernel programs only. From a script,
``drgn.commands.run_command(prog, "lptoc")`` runs one and returns its
:class:`~lpdebug.commands.common.Output`: ``.findings``, ``.exit_status``
(:func:`lpdebug.report.exit_status`: 0 clean, 1 findings, 3 incomplete; it
also compares equal to that number) and ``.text``; in the REPL it is left in
``_``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Dict, Optional, Sequence

from lpdebug.commands.common import (
    SPECS,
    Output,
    ProgressBar,
    Spec,
    drgn_version_problem,
    examples_text,
)
from lpdebug import drgn_compat
from lpdebug.errors import LpdebugError, damaged_input

PREFIX = "lp"

_log = logging.getLogger("drgn.plugins")


def command_name(spec: Spec) -> str:
    return PREFIX + spec.name


def _help_argument() -> Any:
    from drgn.commands import argument

    # drgn's argparse parsers are built without -h; lpdebug commands take it
    # so that "%lpbt --help" works like every lpdebug front end.
    return argument("-h", "--help", action="store_true", help="show this help and exit")


def _wants_help(words: Sequence[str]) -> bool:
    for word in words:
        if word == "--":
            return False
        if word in ("-h", "--help"):
            return True
    return False


def _prepare(prog: Any) -> None:
    # drgn's REPL loaded the debug info itself: a file drgn could not index
    # would fail every lookup (one error naming it instead), and modules it
    # found none for are named from their kallsyms, as lpdebug's own targets
    # do (once per program).
    from lpdebug import debuginfo

    debuginfo.check_indexed(prog)
    if not debuginfo.has_module_kallsyms(prog):
        try:
            debuginfo.use_module_kallsyms(prog)
        except Exception as e:  # noqa: BLE001 (names are a nicety; the command still runs)
            _log.warning("lpdebug: module kallsyms could not be read: %s", e)
        from lpdebug import kernel

        kernel.invalidate(prog)


def _make_command(spec: Spec) -> None:
    from drgn.commands import (
        CommandError,
        argument,
        parse_shell_command,
    )
    from drgn.commands.linux import linux_kernel_custom_command

    arguments = [argument(*a.flags, **a.options) for a in spec.args] + [_help_argument()]

    def run(prog: Any, name: str, words: Sequence[str], *, parser: argparse.ArgumentParser,
            **kwargs: Any) -> Optional[Output]:
        if _wants_help(words):
            print(f"usage: {parser.format_usage().split(':', 1)[-1].strip()}")
            print()
            print(parser.format_help().split("\n", 1)[1].lstrip("\n").rstrip())
            return None
        args = parser.parse_args(list(words))
        bar = ProgressBar(sys.stderr)
        try:
            _prepare(prog)
            output = spec.run(prog, args, bar)
        except LpdebugError as e:
            raise CommandError(f"{name}: {e}") from None
        except Exception as e:
            damaged = damaged_input(e)
            if damaged is None:
                raise  # a bug: drgn shows its traceback
            raise CommandError(f"{name}: {damaged}") from None
        finally:
            bar.close()
        for warning in output.warnings:
            print(f"{name}: warning: {warning}", file=sys.stderr)
        print(output.text)
        # run_command() returns it: .findings, .exit_status, .text
        return output

    run.__name__ = "_cmd_" + command_name(spec)
    linux_kernel_custom_command(
        name=command_name(spec),
        description=spec.summary,
        long_description=spec.description,
        epilog=examples_text(spec, "%" + command_name(spec), line_mark="|"),
        arguments=arguments,
        parse=parse_shell_command,
    )(run)


def _register_help_if_missing() -> None:
    # drgn 0.3.0's default namespace has no command that lists commands, so
    # "%help" is added here; a drgn that has its own keeps it.
    from drgn.commands import DEFAULT_COMMAND_NAMESPACE, argument, command

    registered = getattr(DEFAULT_COMMAND_NAMESPACE, "_commands", None)
    if registered is None or "help" in registered:
        return

    @command(
        name="help",
        description="list commands, or show one command's help",
        arguments=(argument("command", nargs="?", help="command to describe"),),
    )
    def _cmd_help(prog: Any, name: str, args: argparse.Namespace, **kwargs: Any) -> None:
        if args.command:
            cmd = DEFAULT_COMMAND_NAMESPACE.lookup(prog, args.command)
            print(f"{args.command} - {cmd.description()}\n")
            print(f"usage: {cmd.format_usage()}\n")
            print(cmd.format_help(indent="  "))
            return
        rows = sorted(DEFAULT_COMMAND_NAMESPACE.enabled(prog))
        width = max((len(n) for n, _ in rows), default=0)
        print("Commands (run with %; %help NAME or %NAME --help for details):")
        for cmd_name, cmd in rows:
            print(f"  {cmd_name.ljust(width)}  {cmd.description()}")


def drgn_prog_set(prog: Any) -> None:
    """drgn plugin hook: runs once every plugin has registered its commands."""
    if _registered:
        _register_help_if_missing()


def _register() -> bool:
    problem = drgn_version_problem() or drgn_compat.feature_problem("commands")
    if problem is not None:
        if not drgn_compat.programs_made_by_lpdebug:
            _log.warning("lpdebug commands not loaded: %s", problem)
        return False
    for spec in SPECS:
        _make_command(spec)
    return True


_registered = _register()

COMMANDS: Dict[str, Spec] = {command_name(s): s for s in SPECS}
