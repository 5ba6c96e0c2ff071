# SPDX-License-Identifier: GPL-2.0-or-later
"""
Which drgn release gives lpdebug what, in one place.

lpdebug runs on drgn :data:`FLOOR` and later. The floor is measured, not
guessed: the triage JSON of every testbed capture and every committed fixture
under drgn 0.0.31, 0.0.32, 0.0.33, 0.1.0 and 0.2.0 equals, byte for byte, the
JSON under 0.3.0 (README, "drgn versions"). drgn 0.0.30 and older lack the
module API lpdebug loads debug info with (``Program.modules``,
``debug_info_options``, drgn 0.0.31).

What older releases lack, lpdebug either does itself, the same way (below),
or refuses with one line naming the release it needs (:data:`FEATURES`):

- ``module_kallsyms`` (the symbols of a module without debug info) is public
  from drgn 0.0.33; 0.0.31 and 0.0.32 have the same function as
  ``_module_kallsyms``.
- ``DRGN_PREFER_PGTABLE_READER`` (drgn 0.2.0) makes drgn walk the kernel page
  tables itself for a kdump-compressed file, instead of libkdumpfile's
  translation, which fails on ppc64 (docs/libkdumpfile-ppc64.md). With an
  older drgn, lpdebug serves those addresses with its own walk of the same
  page tables (:func:`lpdebug.hash_mmu.add_page_table_segments`).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

__all__ = (
    "FLOOR",
    "FEATURES",
    "version",
    "version_tuple",
    "version_problem",
    "feature_problem",
    "module_kallsyms",
    "bad_data_errors",
    "walks_kdump_page_tables",
)

# The oldest drgn lpdebug supports; pyproject.toml's dependency says the same.
FLOOR = (0, 0, 31)

# Where a drgn comes from when PyPI has no wheel for the machine (ppc64le): pip
# builds drgn's sdist (a C compiler and elfutils' headers), or a wheel
# cross-built on x86-64 by lpdebug's recipe.
_HOW_TO_GET = ("pip install --upgrade 'drgn>=%s' (on ppc64le, where PyPI has no drgn wheel, pip builds "
               "it from source, or use a wheel made by lpdebug's vmcores/build --drgn-wheel: README, "
               "'On the POWER host')")


def _text(v: Tuple[int, ...]) -> str:
    return ".".join(map(str, v))


def version_tuple(text: str) -> Tuple[int, ...]:
    """``"0.0.31+12.gabc"`` -> ``(0, 0, 31)``; a pre-release part (``"0rc1"``) ends it."""
    parts: List[int] = []
    for piece in text.split("+")[0].split("."):
        digits = ""
        for c in piece:
            if not c.isdigit():
                break
            digits += c
        if not digits:
            break
        parts.append(int(digits))
        if len(digits) != len(piece):  # "0rc1": a pre-release of the part before
            break
    return tuple(parts)


def version() -> Optional[str]:
    """The installed drgn's version string, or None when drgn is not installed."""
    try:
        import drgn
    except ImportError:
        return None
    return str(getattr(drgn, "__version__", "0"))


def how_to_get(needed: Tuple[int, ...]) -> str:
    """What to run to have drgn ``needed`` or later."""
    return _HOW_TO_GET % _text(needed)


def version_problem() -> Optional[str]:
    """One line saying that the installed drgn is missing or older than
    :data:`FLOOR` (the version found, the one needed, how to get it), or None."""
    found = version()
    if found is None:
        return "drgn is not installed: " + how_to_get(FLOOR)
    if version_tuple(found) < FLOOR:
        return "lpdebug needs drgn %s or later, but drgn %s is installed: %s" % (
            _text(FLOOR), found, how_to_get(FLOOR))
    return None


def _has_program_method(name: str) -> Callable[[], bool]:
    def probe() -> bool:
        try:
            import drgn
        except ImportError:
            return False
        return hasattr(drgn.Program, name)

    return probe


def _has_command_api() -> bool:
    try:
        from drgn.commands import parse_shell_command  # noqa: F401
        from drgn.commands.linux import linux_kernel_custom_command  # noqa: F401
    except ImportError:
        return False
    return True


# feature -> (the drgn release that brought what it needs, who needs it, what
# from drgn, a probe of the installed drgn). The probe decides; the release is
# what the message names.
FEATURES: Dict[str, Tuple[Tuple[int, ...], str, str, Callable[[], bool]]] = {
    "qemu": ((0, 2, 0), "--qemu needs", "its QEMU target, Program.set_qemu_qmp",
             _has_program_method("set_qemu_qmp")),
    # gdb reads the memory; drgn is given the guest's VMCOREINFO by hand
    "memory_readers": ((0, 1, 0), "lpdebug's gdb commands need", "Program.set_linux_kernel_custom",
                       _has_program_method("set_linux_kernel_custom")),
    "commands": ((0, 1, 0), "lpdebug's drgn commands (%lptriage ...) need",
                 "its command API with parse_shell_command", _has_command_api),
}


def feature_problem(feature: str) -> Optional[str]:
    """One line saying that the installed drgn cannot do ``feature`` (a key of
    :data:`FEATURES`): who needs what, the version needed, the version found,
    how to get it; None when it can."""
    needed, who, what, probe = FEATURES[feature]
    if probe():
        return None
    return "%s drgn %s or later (%s), but drgn %s is installed: %s" % (
        who, _text(needed), what, version() or "none", how_to_get(needed))


# drgn loads its plugins, lpdebug's own drgn commands among them, when the first Program is made. Below
# drgn 0.1.0 those commands cannot load and say so, which helps in drgn's REPL but is noise on every
# `lpdebug` command: so lpdebug's front ends make their programs through new_program(), and the
# commands' note is left out for them.
programs_made_by_lpdebug = False


def new_program(*args: Any) -> Any:
    """A drgn.Program made by lpdebug itself (arguments as drgn.Program's)."""
    global programs_made_by_lpdebug
    import drgn

    programs_made_by_lpdebug = True
    return drgn.Program(*args)


def module_kallsyms(module: Any) -> List[Any]:
    """drgn's ``module_kallsyms(struct module *)``: the symbols in the module's
    own kallsyms, as a list of :class:`drgn.Symbol`."""
    from drgn.helpers.linux import kallsyms

    # drgn 0.0.31 and 0.0.32 have the same function, private
    helper = getattr(kallsyms, "module_kallsyms", None) or getattr(kallsyms, "_module_kallsyms")  # noqa: B009
    return helper(module)  # type: ignore[no-any-return]


def bad_data_errors() -> Tuple[type, ...]:
    """drgn's exception for bytes it cannot parse in a debug file or core
    (``drgn.BadDataError``, drgn 0.3.0), as a tuple for ``except`` and
    ``isinstance``: empty with an older drgn, which raises plain exceptions there."""
    import drgn

    error = getattr(drgn, "BadDataError", None)
    return (error,) if isinstance(error, type) else ()


def walks_kdump_page_tables() -> bool:
    """Whether drgn walks the kernel page tables itself for a kdump-compressed
    file when ``DRGN_PREFER_PGTABLE_READER`` is set (drgn 0.2.0 and later).
    An environment variable has no probe: the version decides."""
    found = version()
    return found is not None and version_tuple(found) >= (0, 2, 0)
