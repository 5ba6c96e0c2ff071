"""
Debug info: the files a user hands over, the ones drgn finds by itself, what
the kernel's memory gives when neither has a module, and how much of the
kernel the report could see (:class:`~lpdebug.model.Coverage`).

What comes in: a Program and paths (files or directories). What goes out:
plain ELF paths ready for drgn (:func:`expand_paths`), modules attached to
their files by name and build ID (:func:`attach_module_files`), a symbol
finder serving each module's own kallsyms when it has no debug info
(:func:`use_module_kallsyms`), and the :class:`~lpdebug.model.Coverage` of
a program (:func:`coverage`).

drgn's own search (``/usr/lib/debug`` by build ID and by release path,
``/lib/modules/RELEASE``, debuginfod where configured) is drgn's: this
module only sets its options (:func:`configure_search`).

Compressed modules (``.ko.xz``, ``.ko.gz``, ``.ko.zst``, as distributions
install them) are decompressed into lpdebug's cache, keyed by the content of
the compressed file, never next to it: a customer's directory may be
read-only, and one cache entry serves every later run.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import logging
import lzma
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import drgn

from . import drgn_compat
from .errors import DebugInfoError, ModuleListUnreadable
from .model import Coverage, ModuleDebugInfo, RefusedDebugFile

__all__ = (
    "COMPRESSED_SUFFIXES",
    "Candidate",
    "expand_paths",
    "name_from_file_name",
    "decompressed",
    "is_vmlinux",
    "file_build_id",
    "module_file_name",
    "configure_search",
    "attach_module_files",
    "damaged_debug_files",
    "check_indexed",
    "use_module_kallsyms",
    "has_module_kallsyms",
    "coverage",
    "quiet_drgn_log",
)

# Suffix -> how to decompress it. Distributions compress installed modules
# with one of these (kmod reads all three).
COMPRESSED_SUFFIXES = (".xz", ".gz", ".zst")
_MODULE_SUFFIXES = (".ko", ".ko.debug") + tuple(".ko" + s for s in COMPRESSED_SUFFIXES)

_GIVEN_KEY = "lpdebug.debuginfo.given"
_REFUSED_KEY = "lpdebug.debuginfo.refused"
_KALLSYMS_KEY = "lpdebug.debuginfo.kallsyms"
_KALLSYMS_FINDER = "lpdebug_module_kallsyms"


def _state(prog: drgn.Program) -> Dict[str, Any]:
    # What lpdebug did to the program (files given and refused, the kallsyms
    # finder): kept across lpdebug.kernel.invalidate.
    from . import kernel

    return kernel.program_state(prog)


# --- files --------------------------------------------------------------------


def _cache_dir() -> str:
    from .sample import cache_dir

    return cache_dir("debuginfo")


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _decompress_zstd(src: str, dest: str) -> None:
    # Python's own zstd (3.14's compression.zstd) where there is one, else
    # the zstd command: one format is not worth a dependency, and every
    # system with .ko.zst modules has the zstd tool.
    try:
        from compression import zstd  # type: ignore[import-not-found]
    except ImportError:
        zstd = None
    if zstd is not None:
        with zstd.open(src, "rb") as fin, open(dest, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
        return
    if shutil.which("zstd") is None:
        raise DebugInfoError(f"{src}: cannot decompress: no zstd command (install zstd)")
    with open(dest, "wb") as out:
        result = subprocess.run(["zstd", "-q", "-d", "-c", src], stdout=out,
                                stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise DebugInfoError(f"{src}: zstd failed: {result.stderr.strip() or result.returncode}")


def decompressed(path: str) -> str:
    """
    A plain file with the content of ``path``: ``path`` itself unless its name
    ends in ``.xz``, ``.gz`` or ``.zst``; then the decompressed copy in the
    cache (``$LPDEBUG_CACHE/debuginfo``, else ``~/.cache/lpdebug/debuginfo``),
    made on first use, named like ``path`` without the suffix.
    """
    suffix = next((s for s in COMPRESSED_SUFFIXES if path.endswith(s)), None)
    if suffix is None:
        return path
    name = os.path.basename(path)[: -len(suffix)]
    try:
        digest = _sha256(path)
    except OSError as e:
        raise DebugInfoError(f"{path}: cannot read: {e}") from e
    dest_dir = os.path.join(_cache_dir(), digest[:32])
    dest = os.path.join(dest_dir, name)
    if os.path.isfile(dest):
        return dest
    try:
        os.makedirs(dest_dir, exist_ok=True)
    except OSError:  # no writable home: a per-user directory under the temporary directory
        dest_dir = os.path.join(tempfile.gettempdir(), f"lpdebug-{os.getuid()}", "debuginfo",
                                digest[:32])
        dest = os.path.join(dest_dir, name)
        if os.path.isfile(dest):
            return dest
        os.makedirs(dest_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=".tmp-")
    os.close(fd)
    try:
        if suffix == ".zst":
            _decompress_zstd(path, tmp)
        else:
            opener = lzma.open if suffix == ".xz" else gzip.open
            with opener(path, "rb") as fin, open(tmp, "wb") as fout:  # type: ignore[operator]
                shutil.copyfileobj(fin, fout, 1 << 20)
        os.replace(tmp, dest)
    except (OSError, EOFError, lzma.LZMAError) as e:
        raise DebugInfoError(f"{path}: cannot decompress: {e}") from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def _wanted_in_directory(name: str) -> bool:
    return (
        name in ("vmlinux", "vmlinux.debug")
        or (name.startswith("vmlinux-") and not name.endswith(COMPRESSED_SUFFIXES))
        or name.endswith(_MODULE_SUFFIXES)
    )


@dataclass(frozen=True)
class Candidate:
    """A file that may hold debug info, as found from the paths a user gave."""

    path: str  # as found (maybe compressed)
    given: bool  # named by the user itself, not found in a directory

    @property
    def is_module_name(self) -> bool:
        return self.path.endswith(_MODULE_SUFFIXES)


def expand_paths(paths: Iterable[str]) -> List[Candidate]:
    """
    The files ``paths`` name: files as they are, directories searched
    recursively for vmlinux and kernel modules (``.ko``, ``.ko.debug``,
    ``.ko.xz``, ``.ko.gz``, ``.ko.zst``). Nothing is decompressed yet: a
    directory like ``/lib/modules/RELEASE`` holds thousands of modules, and
    only those of loaded modules are worth it.
    """
    found: List[Candidate] = []
    for path in paths:
        path = os.fspath(path)
        if os.path.isdir(path):
            for root, dirs, names in os.walk(path):
                dirs.sort()
                for name in sorted(names):
                    if _wanted_in_directory(name):
                        found.append(Candidate(os.path.join(root, name), False))
        elif os.path.exists(path):
            found.append(Candidate(path, True))
        else:
            raise DebugInfoError(f"{path}: no such file or directory")
    return found


def name_from_file_name(path: str) -> str:
    """The module name a file name implies (``crc-itu-t.ko.xz`` -> ``crc_itu_t``), as kmod does."""
    name = os.path.basename(path)
    for suffix in COMPRESSED_SUFFIXES + (".debug", ".ko"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name.replace("-", "_")


def elf_file(path: str):  # type: ignore[no-untyped-def]
    from elftools.elf.elffile import ELFFile

    f = open(path, "rb")
    try:
        return ELFFile(f)
    except BaseException:
        f.close()
        raise


# What pyelftools raises on a truncated or garbled file: its own ELFError
# (ELFParseError included), and struct/construct errors from the raw reads.
def elf_parse_errors() -> tuple:
    from elftools.common.exceptions import ELFError

    return (ELFError, OSError, ValueError, EOFError, IndexError, KeyError, AssertionError,
            UnicodeDecodeError) + _construct_errors()


def _construct_errors() -> tuple:
    try:
        from elftools.construct.core import ConstructError

        return (ConstructError,)
    except ImportError:  # pragma: no cover (pyelftools without its bundled construct)
        return ()


def damaged_elf(path: str, what: str, e: BaseException) -> DebugInfoError:
    detail = " ".join(str(e).split()) or type(e).__name__
    return DebugInfoError(
        f"{path}: not a valid ELF {what} ({detail}): the file is truncated or damaged;"
        " give an intact copy of it"
    )


def file_build_id(path: str) -> Optional[str]:
    """GNU build ID of an ELF file as lowercase hex, None when it has none."""
    try:
        elf = elf_file(path)
    except elf_parse_errors() as e:
        raise damaged_elf(path, "file", e) from e
    try:
        for section in elf.iter_sections():
            if section.header["sh_type"] != "SHT_NOTE":
                continue
            for note in section.iter_notes():
                if note["n_type"] == "NT_GNU_BUILD_ID" and note["n_name"] == "GNU":
                    desc = note["n_desc"]
                    return desc.lower() if isinstance(desc, str) else bytes(desc).hex()
    except elf_parse_errors() as e:
        raise damaged_elf(path, "file", e) from e
    finally:
        elf.stream.close()
    return None


def is_vmlinux(path: str) -> bool:
    """Whether ``path`` is a kernel image rather than a module (or not ELF at all)."""
    # Modules are relocatable objects; vmlinux is ET_EXEC, or ET_DYN when the
    # kernel is built relocatable (the ppc64 default).
    try:
        elf = elf_file(path)
    except elf_parse_errors():
        # Not ELF at all, or too damaged to tell: drgn's loader names the
        # file; a module-like name says which it was meant to be.
        return not path.endswith((".ko", ".ko.debug"))
    try:
        return elf.header["e_type"] != "ET_REL"
    finally:
        elf.stream.close()


def module_file_name(path: str) -> str:
    """
    The name the kernel gives the module in ``path``: the ``name=`` entry of
    its ``.modinfo`` (modpost writes it), else its file name with ``-`` as
    ``_``, as kmod does.
    """
    from elftools.common.exceptions import ELFError

    try:
        elf = elf_file(path)
        try:
            section = elf.get_section_by_name(".modinfo")
            if section is not None:
                for entry in section.data().split(b"\0"):
                    if entry.startswith(b"name="):
                        return entry[5:].decode(errors="replace")
        finally:
            elf.stream.close()
    except (OSError, ELFError):
        pass
    return name_from_file_name(path)


# --- drgn's search ------------------------------------------------------------


def configure_search(prog: drgn.Program, *, default: bool, directories: Sequence[str] = ()) -> bool:
    """
    Set drgn's debug info search for ``prog``. ``directories`` are searched
    the way drgn searches ``/usr/lib/debug`` (by build ID, ``boot/vmlinux-REL``,
    ``lib/modules/REL/...``). With ``default``, drgn's standard places follow
    them (``/usr/lib/debug``, ``/boot``, ``/lib/modules/REL``, debuginfod where
    configured); without, only ``directories`` (and no debuginfod). Returns
    whether any search is enabled.
    """
    directories = tuple(os.path.abspath(d) for d in directories)
    options = prog.debug_info_options
    if default:
        # Loading again (gdb's lp-symbols) must not add them twice.
        options.directories = tuple(dict.fromkeys(directories + tuple(options.directories)))
        return True
    if not directories:
        prog.set_enabled_debug_info_finders([])
        return False
    options.directories = directories
    prog.set_enabled_debug_info_finders(
        [f for f in prog.enabled_debug_info_finders() if f == "standard"])
    return True


# drgn's log lines that lpdebug's coverage and warnings say better.
_SUPERSEDED = ("missing debugging symbols", "missing some debugging symbols",
               "did not match any loaded modules")


def drgn_log_warnings(records: Iterable[logging.LogRecord]) -> List[str]:
    """drgn's warnings held back by :func:`quiet_drgn_log`, less those lpdebug says itself."""
    lines = []
    for record in records:
        message = record.getMessage()
        if record.levelno >= logging.WARNING and not any(s in message for s in _SUPERSEDED):
            lines.append(f"drgn: {message}")
    return lines


class _DrgnLog(logging.Filter):
    """Holds back drgn's log records while lpdebug loads debug info."""

    def __init__(self) -> None:
        super().__init__()
        self.records: List[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.records.append(record)
        return False


@contextlib.contextmanager
def quiet_drgn_log() -> Iterator[List[logging.LogRecord]]:
    """
    drgn's own log lines while loading debug info ("missing debugging symbols
    ...", "did not match any loaded modules; ignoring") are held back and
    handed to the caller: lpdebug reports each fact once, in its own words.
    """
    logger = logging.getLogger("drgn")
    held = _DrgnLog()
    logger.addFilter(held)
    try:
        yield held.records
    finally:
        logger.removeFilter(held)


# --- module files -------------------------------------------------------------


def _hex(build_id: Optional[bytes]) -> Optional[str]:
    return build_id.hex() if build_id else None


# Waits between walks of a moving kernel's module list: insmod under TCG
# keeps a module unformed for a second or two.
MODULE_LIST_RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 4.0)


def loaded_modules(prog: drgn.Program) -> List[drgn.RelocatableModule]:
    """
    drgn's module for every kernel module loaded in the target (creating
    them). On a kernel that runs while it is read, a walk that a module being
    loaded or unloaded tore (:data:`lpdebug.live.TORN_READ_ERRORS`) is tried
    again a moment later; when every try fails, the modules drgn knows from
    before are returned, and a ``changed_while_reading`` diagnostic is kept
    for the report (:func:`lpdebug.live.torn_module_list`).
    """
    import time

    from . import live

    delays = MODULE_LIST_RETRY_DELAYS if live.is_moving(prog) else ()
    failure: Optional[BaseException] = None
    for delay in (0.0, *delays):
        time.sleep(delay)
        try:
            return [module for module, _ in prog.loaded_modules()
                    if isinstance(module, drgn.RelocatableModule)]
        except live.TORN_READ_ERRORS as e:
            if not delays and live.is_live_target(prog) and not isinstance(e, drgn.FaultError):
                # A guest paused in the middle of an insmod or rmmod: lpdebug.target's
                # qemu_session lets a guest it paused finish it, and pauses it again.
                raise ModuleListUnreadable(
                    f"drgn could not walk the paused guest's module list ({type(e).__name__}: "
                    "a module being loaded or unloaded?)") from e
            if not delays:
                raise
            failure = e
    assert failure is not None
    live.torn_module_list(prog, failure, "the loaded modules")
    return [module for module in prog.modules() if isinstance(module, drgn.RelocatableModule)]


def attach_module_files(prog: drgn.Program, candidates: Sequence[Candidate]) -> List[str]:
    """
    Give each module file to the loaded module of its name, if its build ID is
    that module's. A file whose build ID differs is refused (both IDs named);
    a file the user named for a module that is not loaded is set aside, and a
    file whose debug info drgn cannot index (:func:`damaged_debug_files`) is
    skipped, its module left to its kallsyms. Each gives exactly one warning
    (returned) and a
    :class:`~lpdebug.model.RefusedDebugFile` kept for :func:`coverage`. Files
    found in directories are only opened (and decompressed) when their name is
    a loaded module's.
    """
    refused: List[RefusedDebugFile] = _state(prog).setdefault(_REFUSED_KEY, [])
    given = _state(prog).setdefault(_GIVEN_KEY, {})
    warnings: List[str] = []
    if not candidates:
        return warnings
    wanted: List[Tuple[Candidate, str, str, Optional[str], drgn.RelocatableModule]] = []
    try:
        by_name = {m.name: m for m in loaded_modules(prog)}
    except (ValueError, LookupError, drgn.FaultError, NotImplementedError) as e:
        return [f"the target's loaded modules could not be listed ({e}): "
                f"{len(candidates)} module file(s) not used"]
    for candidate in candidates:
        if not candidate.given and name_from_file_name(candidate.path) not in by_name:
            continue
        path = decompressed(candidate.path)
        name = module_file_name(path)
        try:
            file_id = file_build_id(path)
        except DebugInfoError as e:
            # One damaged module file must not cost the others, nor the report.
            warnings.append(f"{candidate.path}: skipped: {e}")
            loaded = by_name.get(name)
            if loaded is not None:
                cause = e.__cause__ or e
                refused.append(RefusedDebugFile(os.path.basename(path), name, None,
                                                _hex(loaded.build_id), "damaged",
                                                " ".join(str(cause).split()) or type(cause).__name__))
            continue
        module = by_name.get(name)
        if module is None:
            if candidate.given:
                refused.append(RefusedDebugFile(os.path.basename(path), name, file_id, None,
                                                "not_loaded"))
                warnings.append(f"{candidate.path}: not used: module {name} is not loaded in "
                                "the target")
            continue
        loaded_id = _hex(module.build_id)
        if loaded_id and file_id and loaded_id != file_id:
            refused.append(RefusedDebugFile(os.path.basename(path), name, file_id, loaded_id,
                                            "build_id_mismatch"))
            warnings.append(f"{candidate.path}: refused: its build ID {file_id} is not the build "
                            f"ID {loaded_id} of the loaded module {name}")
            continue
        given[os.path.realpath(path)] = path
        if module.wants_debug_file() or module.wants_loaded_file():
            wanted.append((candidate, path, name, file_id, module))
    damaged = damaged_debug_files(prog.platform, [path for _, path, _, _, _ in wanted])
    for candidate, path, name, file_id, module in wanted:
        problem = damaged.get(path)
        if problem is None:
            try:
                module.try_file(path)
                continue
            except Exception as e:  # noqa: BLE001 (libelf/libdw failures are plain Exceptions)
                problem = " ".join(str(e).split()) or type(e).__name__
        refused.append(RefusedDebugFile(os.path.basename(path), name, file_id,
                                        _hex(module.build_id), "damaged", problem))
        warnings.append(f"{candidate.path}: skipped, its debug info for module {name} is damaged "
                        f"({problem}): names come from the module's kallsyms in memory; give an "
                        "intact copy of the file")
    return warnings


def _index_problem(platform: Optional[drgn.Platform], paths: Sequence[str]) -> Optional[str]:
    # A scratch Program holding only these files, each as an extra module, and
    # one lookup: that makes drgn index their DWARF (applying their
    # relocations) as it would in the target's Program at its first lookup.
    scratch = drgn_compat.new_program(platform)
    try:
        for i, path in enumerate(paths):
            scratch.extra_module(f"lpdebug-check-{i}", create=True).try_file(path, force=True)
        scratch.type("int")
    except LookupError:
        pass  # indexed, and no "int" in these files
    except Exception as e:  # noqa: BLE001 (drgn's BadDataError, libelf/libdw's plain Exceptions)
        return " ".join(str(e).split()) or type(e).__name__
    return None


def damaged_debug_files(platform: Optional[drgn.Platform], paths: Sequence[str]) -> Dict[str, str]:
    """
    The files of ``paths`` whose debug info drgn cannot index, each with drgn's
    reason (a relocation against a symbol that does not exist, DWARF it cannot
    parse). drgn indexes a file handed to ``Module.try_file`` lazily, at the
    first lookup of anything, and a file that fails then fails every lookup of
    the Program: so the files are indexed first in a scratch Program, all at
    once, and one by one only when that fails.
    """
    if not paths or _index_problem(platform, paths) is None:
        return {}
    damaged = {}
    for path in paths:
        problem = _index_problem(platform, [path])
        if problem is not None:
            damaged[path] = problem
    return damaged


def check_indexed(prog: drgn.Program) -> None:
    """
    Make drgn index every debug file ``prog`` has been given so far, and raise
    :class:`DebugInfoError` naming the module and file when one cannot be
    indexed: such a file fails every later lookup of ``prog``. lpdebug checks
    the files handed to it before they reach ``prog`` (see
    :func:`attach_module_files`); this catches those drgn's own search found,
    or drgn's REPL loaded. Cheap once ``prog`` is indexed.
    """
    try:
        prog.type("int")
    except LookupError:
        pass
    except Exception as e:  # noqa: BLE001 (drgn's BadDataError, libelf/libdw's plain Exceptions)
        detail = " ".join(str(e).split()) or type(e).__name__
        files = {m.debug_file_path: m.name for m in prog.modules()
                 if m.debug_file_status == drgn.ModuleFileStatus.HAVE and m.debug_file_path}
        damaged = damaged_debug_files(prog.platform, list(files))
        named = "; ".join(f"{path} (module {files[path]}): {why}" for path, why in damaged.items())
        raise DebugInfoError(
            f"damaged debug info: {named or detail}: drgn cannot look anything up with it;"
            " replace the file with an intact copy or remove it from the search path"
        ) from e


def note_given(prog: drgn.Program, files: Iterable[str]) -> None:
    """Remember ``files`` as handed over by the user (vmlinux), for :func:`coverage`."""
    given = _state(prog).setdefault(_GIVEN_KEY, {})
    given.update((os.path.realpath(f), f) for f in files)


# --- names from memory ----------------------------------------------------------


class _ModuleKallsyms:
    """
    A drgn symbol finder over the kallsyms that modules without debug info
    keep in memory (``mod->kallsyms``), as crash does: their function names
    and sizes, without their ELF files.
    """

    def __init__(self) -> None:
        self.index: Optional[drgn.SymbolIndex] = None
        self.modules: Dict[str, int] = {}  # module -> number of symbols served
        self.unreadable: Dict[str, str] = {}  # module -> why its kallsyms could not be read

    def __call__(self, prog: drgn.Program, name: Optional[str], address: Optional[int],
                 one: bool) -> List[drgn.Symbol]:
        if self.index is None:
            return []
        return self.index(prog, name, address, one)


def _kallsyms_finder(prog: drgn.Program) -> _ModuleKallsyms:
    finder = _state(prog).get(_KALLSYMS_KEY)
    if finder is None:
        finder = _ModuleKallsyms()
        prog.register_symbol_finder(_KALLSYMS_FINDER, finder, enable_index=-1)
        _state(prog)[_KALLSYMS_KEY] = finder
    return finder


def has_module_kallsyms(prog: drgn.Program) -> bool:
    """Whether :func:`use_module_kallsyms` has run on ``prog``."""
    return _KALLSYMS_KEY in _state(prog)


def use_module_kallsyms(prog: drgn.Program) -> None:
    """
    Serve the in-memory kallsyms of every loaded module that has no debug info
    through a symbol finder, so ``prog.symbol()``, ``prog.symbols()`` and
    lpdebug's :class:`~lpdebug.symbols.Symbolizer` name their functions.
    Modules with debug info keep drgn's ELF symbols (no duplicates).
    """
    from .drgn_compat import module_kallsyms

    finder = _kallsyms_finder(prog)
    symbols: List[drgn.Symbol] = []
    finder.modules.clear()
    finder.unreadable.clear()
    try:
        modules = loaded_modules(prog)
    except (ValueError, LookupError, drgn.FaultError, NotImplementedError):
        modules = []
    for module in modules:
        if module.debug_file_status == drgn.ModuleFileStatus.HAVE:
            continue
        try:
            found = module_kallsyms(module.object)
        except (drgn.FaultError, NotImplementedError, LookupError, AttributeError, ValueError,
                UnicodeDecodeError, IndexError) as e:
            finder.unreadable[module.name] = str(e).splitlines()[0] if str(e) else type(e).__name__
            continue
        if not found:
            finder.unreadable[module.name] = "its kallsyms hold no symbols"
            continue
        finder.modules[module.name] = len(found)
        symbols.extend(found)
    finder.index = drgn.SymbolIndex(symbols) if symbols else None


# --- coverage -------------------------------------------------------------------


def _how_found(path: Optional[str], given: Dict[str, str]) -> Optional[str]:
    if path is None:
        return None
    return "given" if os.path.realpath(path) in given else "search"


def _file_name(path: Optional[str], given: Dict[str, str]) -> Optional[str]:
    # The name the user gave it (drgn reports the file behind a symlink).
    if path is None:
        return None
    return os.path.basename(given.get(os.path.realpath(path), path))


def coverage(prog: drgn.Program) -> Coverage:
    """
    What debug info ``prog`` has: vmlinux's build ID and debug file, each
    loaded module's (or where its names come from instead), and the files
    refused. Filtered pages and unreadable parts come from the report's
    diagnostics (:func:`lpdebug.coverage.with_diagnostics`).
    """
    given: Dict[str, str] = _state(prog).get(_GIVEN_KEY, {})
    finder: Optional[_ModuleKallsyms] = _state(prog).get(_KALLSYMS_KEY)
    vmlinux_id = None
    vmlinux_file = None
    try:
        main = prog.main_module()
        vmlinux_id = _hex(main.build_id)
        vmlinux_file = main.debug_file_path
    except LookupError:
        pass
    if vmlinux_id is None:
        from . import kernel

        value = kernel.vmcoreinfo(prog).get("BUILD-ID")
        vmlinux_id = value.lower() if value else None
    modules: List[ModuleDebugInfo] = []
    errors: List[str] = []
    try:
        loaded = loaded_modules(prog)
    except (ValueError, LookupError, drgn.FaultError, NotImplementedError) as e:
        loaded = []
        errors.append(f"the loaded modules could not be listed: {e}")
    for module in sorted(loaded, key=lambda m: m.name):
        path = module.debug_file_path if module.debug_file_status == drgn.ModuleFileStatus.HAVE \
            else None
        if path is not None:
            names_from: Optional[str] = "debug_info"
        elif finder is not None and module.name in finder.modules:
            names_from = "kallsyms"
        else:
            names_from = None
        modules.append(ModuleDebugInfo(
            name=module.name,
            build_id=_hex(module.build_id),
            debug_file=_file_name(path, given),
            found_by=_how_found(path, given),
            names_from=names_from,
            kallsyms_error=(finder.unreadable.get(module.name) if finder is not None else None),
        ))
    refused = sorted(_state(prog).get(_REFUSED_KEY, []), key=lambda r: (r.module, r.file))
    return Coverage(
        vmlinux_build_id=vmlinux_id,
        vmlinux_debug_file=_file_name(vmlinux_file, given),
        vmlinux_found_by=_how_found(vmlinux_file, given),
        modules=modules,
        modules_without_debug_info=[m.name for m in modules if m.debug_file is None],
        refused=refused,
        errors=errors,
    )
