# SPDX-License-Identifier: GPL-2.0-or-later
"""Errors lpdebug raises where it cannot go on (bad target, wrong debug info)."""


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
