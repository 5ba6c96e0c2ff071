# SPDX-License-Identifier: GPL-2.0-or-later
"""Errors lpdebug raises where it cannot go on (bad target, wrong debug info, damaged input)."""

from typing import Optional


class LpdebugError(Exception):
    """Base class: a one-line reason a front end can print as it is."""


class TargetError(LpdebugError):
    """The target cannot be opened or is not a kernel lpdebug can read."""


class DebugInfoError(LpdebugError):
    """Debug info is missing or does not fit the target."""


class BuildIdMismatch(DebugInfoError):
    """The vmlinux given is not the target's kernel."""

    def __init__(self, vmlinux: str, expected: str, actual: str) -> None:
        super().__init__(
            f"{vmlinux} has build ID {actual}, but the target kernel's build ID is {expected}:"
            " give the vmlinux of the kernel that made the dump"
        )
        self.vmlinux = vmlinux
        self.expected = expected
        self.actual = actual


class ModuleListUnreadable(DebugInfoError):
    """drgn could not walk the kernel's module list to place module debug info.

    drgn 0.3.0 fails (MemoryError) on a module still being loaded
    (MODULE_STATE_UNFORMED: no sect_attrs yet); on a live kernel it passes once
    the load is done."""


class DamagedInput(LpdebugError):
    """
    Data met while reading is impossible: a size or count in the vmcore or the
    debug info that drgn cannot allocate or represent (MemoryError,
    OverflowError), or bytes of a debug file drgn cannot parse
    (``drgn.BadDataError``, raised lazily at the first lookup, after the file
    was accepted). The input is damaged; lpdebug has no bug to report.
    """

    def __init__(self, cause: BaseException) -> None:
        detail = " ".join(str(cause).split())
        if isinstance(cause, (MemoryError, OverflowError)):
            message = (f"damaged input: {type(cause).__name__} while reading ({detail or 'no detail'}):"
                       " a size or count in the vmcore or the debug info is impossible;"
                       " give intact copies of the vmcore, vmlinux and modules")
        else:
            message = (f"damaged input: {detail or type(cause).__name__}: a debug file or the vmcore"
                       " holds data drgn cannot parse; give intact copies of the files named here")
        super().__init__(message)
        self.cause = cause


def damaged_input(e: BaseException) -> Optional[DamagedInput]:
    """
    The :class:`DamagedInput` that ``e``, raised while reading a target, stands
    for; None when ``e`` says nothing about the input (then it is a bug). Every
    front end asks this before calling an exception an internal error.
    """
    from .drgn_compat import bad_data_errors

    if isinstance(e, DamagedInput):
        return e
    if isinstance(e, (MemoryError, OverflowError, *bad_data_errors())):
        return DamagedInput(e)
    return None
