# SPDX-License-Identifier: GPL-2.0-or-later
"""
Open a kernel as a :class:`drgn.Program`: a vmcore, the running kernel, or a
QEMU guest over QMP; load vmlinux and module debug info from files or
directories.

Debug info must fit the target: drgn uses a vmlinux only when its GNU build
ID is the one in the target's VMCOREINFO (``Module.try_file``); one it
refuses for that raises :class:`errors.BuildIdMismatch`, naming both IDs.

QEMU ``pseries`` guests have no fw_cfg, so QEMU cannot tell drgn where the
guest's VMCOREINFO is. :func:`open_qemu` finds it itself: the vmlinux symbol
table gives the address of the kernel variable ``vmcoreinfo_note`` (a
pointer to the note, in both 6.1 ``crash_core.c`` and 6.12
``vmcore_info.c``); vmlinux and the note sit in the linear map, so both are
read physically at ``virtual - kernel.LINEAR_MAP_BASE``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import drgn

from . import debuginfo, drgn_compat, dumpfile, hash_mmu, kernel, live, qmp, vcpu
from .errors import BuildIdMismatch, DebugInfoError, ModuleListUnreadable, TargetError

__all__ = (
    "open_vmcore",
    "open_running_kernel",
    "open_qemu",
    "close_qemu",
    "qemu_session",
    "load_debug_info",
    "debug_info_files",
    "file_build_id",
    "check_build_id",
    "target_warnings",
    "open_memory_readers",
)


def target_warnings(prog: drgn.Program) -> List[str]:
    """Problems met while opening ``prog`` that did not stop it (missing module debug info ...)."""
    return kernel.program_state(prog).setdefault("warnings", [])


def _warn(prog: drgn.Program, message: str) -> None:
    target_warnings(prog).append(message)


# --- ELF files --------------------------------------------------------------


file_build_id = debuginfo.file_build_id
_is_vmlinux = debuginfo.is_vmlinux
_elf = debuginfo.elf_file
_elf_parse_errors = debuginfo.elf_parse_errors
_damaged_elf = debuginfo.damaged_elf


def debug_info_files(paths: Iterable[str]) -> List[str]:
    """
    Expand ``paths``: files as they are, directories searched recursively for
    vmlinux and kernel modules (``.ko``, ``.ko.debug``, ``.ko.xz``, ``.ko.gz``,
    ``.ko.zst``); compressed files are decompressed into lpdebug's cache.
    """
    return [debuginfo.decompressed(c.path) for c in debuginfo.expand_paths(paths)]


def _fits(prog: drgn.Program, vmlinux: str) -> bool:
    expected = kernel.build_id(prog)
    return expected is None or file_build_id(vmlinux) in (None, expected)


def check_build_id(prog: drgn.Program, vmlinux: str) -> None:
    """
    Offer ``vmlinux`` to drgn for the target's kernel; raise
    :class:`BuildIdMismatch` when drgn refuses it because its build ID is
    another kernel's.
    """
    main = kernel.main_module(prog)
    expected = kernel.build_id(prog)
    if main is None or expected is None:
        _warn(prog, "the target has no BUILD-ID in VMCOREINFO: could not check that the vmlinux fits")
        return
    if not main.wants_debug_file():
        return  # drgn has vmlinux's debug info already
    try:
        main.try_file(vmlinux)
    except (OSError, ValueError) as e:
        raise DebugInfoError(f"{vmlinux}: not a readable ELF file ({e})") from e
    if not main.wants_debug_file():
        return
    actual = file_build_id(vmlinux)
    if actual is None:
        _warn(prog, f"{vmlinux} has no build ID: drgn could not check that it fits the target")
    elif actual != expected:
        raise BuildIdMismatch(vmlinux, expected, actual)


# --- debug info -------------------------------------------------------------


def load_debug_info(
    prog: drgn.Program, paths: Sequence[str] = (), *, default: bool = False,
    directories: Sequence[str] = (),
) -> List[str]:
    """
    Load debug info from ``paths`` (files, or directories searched for vmlinux
    and kernel modules, compressed or not), then let drgn search for the rest:
    in ``directories`` (laid out like ``/usr/lib/debug``) and, with
    ``default``, in drgn's standard places (``/usr/lib/debug``, ``/boot``,
    ``/lib/modules/RELEASE``, debuginfod where configured).

    Every vmlinux named by the user is checked against the target's build ID
    first (one found in a directory that is another kernel's is passed over).
    Each module file goes to the loaded module of its name only if the build
    IDs agree; otherwise it is refused, naming both IDs. Raises
    :class:`DebugInfoError` when vmlinux's debug info is still missing
    afterwards. Modules left without debug info are named from their own
    kallsyms in memory. Problems that do not stop the target (a refused file,
    a file for a module that is not loaded) are returned, one line each, and
    kept in :func:`target_warnings`.
    """
    vmlinux_files: List[str] = []
    module_files: List[debuginfo.Candidate] = []
    for candidate in debuginfo.expand_paths(paths):
        # In a directory a module is known by its file name; a file named
        # by the user is whatever its ELF header says.
        if candidate.is_module_name:
            module_files.append(candidate)
            continue
        path = debuginfo.decompressed(candidate.path)
        if _is_vmlinux(path):
            if not candidate.given and not _fits(prog, path):
                continue  # another kernel's vmlinux in the same directory
            vmlinux_files.append(path)
        elif candidate.given:
            module_files.append(candidate)
    debuginfo.note_given(prog, vmlinux_files)
    search = debuginfo.configure_search(prog, default=default, directories=directories)
    warnings: List[str] = []
    with debuginfo.quiet_drgn_log() as drgn_log:
        for path in vmlinux_files:
            check_build_id(prog, path)
        # vmlinux first: on a hash-MMU kernel drgn can only find the loaded
        # modules (struct module lives in vmalloc space) once the hash-MMU
        # segments, which need vmlinux's types, are in place.
        if not _has_kernel_types(prog, vmlinux_files):
            _load(prog, vmlinux_files, default=False, main=True)
            kernel.invalidate(prog)
        if not _has_kernel_types(prog, vmlinux_files):
            bid = kernel.build_id(prog)
            where = (" (searched " + ", ".join(prog.debug_info_options.directories) + ")"
                     if search else "")
            raise DebugInfoError(
                "no debug info for the target's vmlinux"
                + (f" (build ID {bid})" if bid else "") + where
                + ": give the matching vmlinux (a file or a directory that holds it)"
            )
        _add_hash_mmu_segments(prog, warnings)
        if kernel.is_ppc64(prog) and kernel.mmu(prog) is None:
            warnings.append(
                "the MMU type is unknown (VMCOREINFO has no NUMBER(RADIX_MMU) and the debug info has no "
                "cur_cpu_spec): module and vmalloc memory cannot be read; give the vmlinux with its full "
                "debug info"
            )
        # Before any module file is tried: its __init sections must be found.
        _unrename_module_init_sections(prog)
        # Module files are matched to loaded modules here, by name and build
        # ID, so a wrong one is refused by name and an unused one is said
        # once (drgn would only log that it matched nothing).
        warnings.extend(debuginfo.attach_module_files(prog, module_files))
        if search:
            _load(prog, [], default=True, main=False)
            debuginfo.check_indexed(prog)
        kernel.invalidate(prog)
        try:
            debuginfo.use_module_kallsyms(prog)
        except (ValueError, LookupError, drgn.FaultError, NotImplementedError) as e:
            warnings.append(f"module kallsyms could not be read: {e}")
        kernel.invalidate(prog)
    warnings.extend(debuginfo.drgn_log_warnings(drgn_log))
    target_warnings(prog).extend(warnings)
    return warnings


def _has_kernel_types(prog: drgn.Program, vmlinux_files: Sequence[str]) -> bool:
    # The first lookups make drgn index the vmlinux that check_build_id()
    # handed over: libelf and libdw failures on a damaged file surface here.
    try:
        found = kernel.has_type(prog, "struct task_struct")
        if found:
            prog.symbols("init_task")  # and its ELF symbol table, read lazily too
        return found
    except Exception as e:  # noqa: BLE001 (drgn's BadDataError, libelf's plain Exceptions)
        detail = " ".join(str(e).split()) or type(e).__name__
        what = vmlinux_files[0] if len(vmlinux_files) == 1 else "the vmlinux debug info"
        raise DebugInfoError(f"{what}: its debug info cannot be read ({detail}): the file is "
                             "truncated or damaged; give an intact copy of it") from e


def _unrename_module_init_sections(prog: drgn.Program) -> None:
    """
    ppc64 kernels before d4be60fe66b7 ("powerpc/module_64: use
    module_init_section instead of patching names"; 5.10.223 still
    renames, 6.1.192 does not) keep a module's ``.init*`` sections, renamed
    ``_init*`` by module_frob_arch_sections(), in its core memory for good.
    ``mod->sect_attrs`` then names them ``_init.text``..., which match no
    section of the .ko file, so drgn would leave the module's ``__init``
    functions without an address (and their ftrace records, which stay, would
    be named after the function before them). Give drgn the file's names too.
    """
    if not kernel.is_ppc64(prog):
        return
    try:
        for module, _ in prog.loaded_modules():
            if not isinstance(module, drgn.RelocatableModule) or module.debug_file_path:
                continue
            addresses = module.section_addresses
            for name, address in list(addresses.items()):
                if name.startswith("_init") and "." + name[1:] not in addresses:
                    addresses["." + name[1:]] = address
    except (drgn.FaultError, LookupError, ValueError, NotImplementedError, MemoryError,
            OverflowError):
        pass  # drgn then finds the modules itself, as before (a torn list: see _load)


_MODULE_LIST_RETRY_DELAYS = debuginfo.MODULE_LIST_RETRY_DELAYS


def _load(prog: drgn.Program, files: List[str], *, default: bool, main: bool) -> None:
    # A MissingDebugInfoError only says that something is still missing:
    # what is missing is read from the modules afterwards (lpdebug.debuginfo.coverage).
    # drgn walks the kernel's module list to place module debug info. A module
    # being loaded (MODULE_STATE_UNFORMED) or freed under the walk makes
    # drgn 0.3.0 fail, even with MemoryError. On a kernel that runs while it
    # is read that passes: walk it again, a moment later.
    import time

    torn = live.TORN_READ_ERRORS if live.is_live_target(prog) else ()
    delays = _MODULE_LIST_RETRY_DELAYS if live.is_moving(prog) else ()
    failure: Optional[BaseException] = None
    for delay in (0.0, *delays):
        time.sleep(delay)
        try:
            prog.load_debug_info(files, default=default, main=main)
            return
        except drgn.MissingDebugInfoError:
            return
        except torn as e:
            failure = e
            continue
        except Exception as e:  # noqa: BLE001 (libelf/libdw failures are plain Exceptions)
            detail = " ".join(str(e).split())
            if main:
                what = files[0] if len(files) == 1 else "the debug info"
                raise DebugInfoError(
                    f"{what}: could not load debug info ({detail}): the file is "
                    "truncated, damaged or not the target's; give an intact, matching copy"
                ) from e
            # The search found a file it could not load: the modules left without
            # debug info are named from kallsyms and counted in the coverage.
            target_warnings(prog).append(f"the debug info search stopped: {detail}")
            return
    assert failure is not None
    if delays:
        # A kernel that runs kept a module half loaded through every try: what
        # drgn placed stays, the rest is named from kallsyms, and the report says so.
        live.torn_module_list(prog, failure, "module debug info")
        return
    raise ModuleListUnreadable(
        f"could not load debug info: drgn could not walk the kernel's module list "
        f"({type(failure).__name__}{': ' + str(failure) if str(failure).strip() else ''}; "
        "a module being loaded or unloaded?)") from failure


def _add_hash_mmu_segments(prog: drgn.Program, warnings: List[str]) -> None:
    if kernel.program_state(prog).get(_SERVE_PAGE_TABLES) and kernel.mmu(prog) == "radix":
        try:
            hash_mmu.add_page_table_segments(prog)
        except Exception as e:  # a broken page table must not stop the rest of the report
            warnings.append(f"radix page tables could not be read: {e}")
        kernel.invalidate(prog)
    if kernel.mmu(prog) != "hash":
        return
    try:
        hash_mmu.add_hash_mmu_segments(prog)
    except Exception as e:  # a broken page table must not stop the rest of the report
        warnings.append(f"hash-MMU page tables could not be read: {e}")
    kernel.invalidate(prog)


# --- targets ----------------------------------------------------------------


def _require_kernel(prog: drgn.Program, what: str) -> None:
    if not (prog.flags & drgn.ProgramFlags.IS_LINUX_KERNEL):
        raise TargetError(f"{what} is not a Linux kernel core dump (it has no VMCOREINFO note): "
                          "give the kernel's vmcore (/proc/vmcore as kdump saves it), whole")


def open_vmcore(
    path: str, debug_info: Sequence[str] = (), *, default_debug_info: bool = True,
    debug_directories: Sequence[str] = (),
) -> drgn.Program:
    """
    A Program on a kernel core dump: ELF (``/proc/vmcore``, ``makedumpfile
    -E``) or makedumpfile's kdump-compressed format, filtered or not.

    lpdebug serves the pages of a kdump-compressed file itself (see
    :mod:`lpdebug.dumpfile`: libkdumpfile cannot translate 4K-page ppc64
    kernels), and logs every read of a page the dump's filter excluded.
    """
    try:
        kind = dumpfile.sniff_format(path)
    except OSError as e:
        raise TargetError(f"{path}: cannot read: {e.strerror or e}") from None
    prog = drgn_compat.new_program()
    try:
        with _drgn_page_table_walk(kind == "kdump"):
            prog.set_core_dump(path)
    except OSError as e:
        raise TargetError(f"{path}: cannot open as a core dump: {e}") from None
    except Exception as e:  # noqa: BLE001 (libelf's and libkdumpfile's failures are plain Exceptions)
        raise TargetError(_core_problem(path, e)) from None
    _require_kernel(prog, path)
    if kind == "kdump" and not drgn_compat.walks_kdump_page_tables():
        kernel.program_state(prog)[_SERVE_PAGE_TABLES] = True
    try:
        dump = dumpfile.attach(prog, path)
    except (OSError, dumpfile.DumpFormatError) as e:
        if kind == "kdump":  # drgn's own reading of it fails on 4K-page ppc64 kernels
            raise TargetError(f"{e}") from None
        _warn(prog, f"{e}: lpdebug cannot tell the pages the dump's filter excluded")
    else:
        if dump.format == "flattened":
            _warn(prog, f"{path}: makedumpfile's flattened format: lpdebug leaves reading it to drgn"
                  " and cannot tell the pages its filter excluded (`makedumpfile -R` converts it)")
    load_debug_info(prog, debug_info, default=default_debug_info, directories=debug_directories)
    return prog


# In kernel.program_state: lpdebug walks the radix page tables for module and
# vmalloc addresses, which this drgn leaves to libkdumpfile (drgn_compat).
_SERVE_PAGE_TABLES = "serve_page_tables"


@contextlib.contextmanager
def _drgn_page_table_walk(wanted: bool) -> Iterator[None]:
    # drgn reads a kdump-compressed file's virtual addresses through
    # libkdumpfile's translation, which on ppc64 fails for every address of a
    # 4K-page kernel and for vmalloc/module addresses of any current kernel
    # (docs/libkdumpfile-ppc64.md). DRGN_PREFER_PGTABLE_READER (drgn 0.2.0),
    # read when the core dump is set, makes drgn walk the page tables itself,
    # reading them physically, which lpdebug.dumpfile serves. An older drgn
    # ignores it: open_vmcore then has lpdebug walk them (_SERVE_PAGE_TABLES).
    if not wanted:
        yield
        return
    old = os.environ.get("DRGN_PREFER_PGTABLE_READER")
    os.environ["DRGN_PREFER_PGTABLE_READER"] = "1"
    try:
        yield
    finally:
        if old is None:
            del os.environ["DRGN_PREFER_PGTABLE_READER"]
        else:
            os.environ["DRGN_PREFER_PGTABLE_READER"] = old


def _core_problem(path: str, e: BaseException) -> str:
    """One line: what is wrong with the core file ``path`` that drgn refused, and what to do."""
    detail = " ".join(str(e).split()) or type(e).__name__
    if "VMCOREINFO" in detail or isinstance(e, OverflowError):
        advice = ("its VMCOREINFO note is damaged, and the kernel cannot be read without it; "
                  "copy the vmcore again from its source")
    elif "libelf" in detail:
        advice = ("the file is truncated or damaged; copy the vmcore again from its source "
                  "('readelf -h -l' shows its headers)")
    elif "not an ELF core" in detail:
        advice = "give the kernel's vmcore (an ELF core as kdump saves it, or makedumpfile's format)"
    else:
        advice = "the file is damaged or not a vmcore; copy it again from its source"
    return f"{path}: cannot open as a core dump: {detail}: {advice}"


def open_running_kernel(
    debug_info: Sequence[str] = (), *, default_debug_info: bool = True,
    debug_directories: Sequence[str] = (),
) -> drgn.Program:
    """A Program on the kernel this process runs on (needs root)."""
    prog = drgn_compat.new_program()
    try:
        prog.set_kernel()
    except (OSError, ValueError) as e:
        raise TargetError(f"cannot open the running kernel: {e}") from e
    load_debug_info(prog, debug_info, default=default_debug_info, directories=debug_directories)
    return prog


def _platform_of(vmlinux: str) -> drgn.Platform:
    try:
        elf = _elf(vmlinux)
    except _elf_parse_errors() as e:
        raise _damaged_elf(vmlinux, "file", e) from e
    try:
        if elf.header["e_machine"] != "EM_PPC64":
            raise TargetError(
                f"{vmlinux} is for {elf.header['e_machine']}: QEMU targets are supported for ppc64 only"
            )
        flags = drgn.PlatformFlags.IS_64_BIT
        if elf.little_endian:
            flags |= drgn.PlatformFlags.IS_LITTLE_ENDIAN
        return drgn.Platform(drgn.Architecture.PPC64, flags)
    finally:
        elf.stream.close()


def _symbol_addresses(vmlinux: str, names: Sequence[str]) -> dict:
    try:
        elf = _elf(vmlinux)
    except _elf_parse_errors() as e:
        raise _damaged_elf(vmlinux, "file", e) from e
    try:
        return _symbol_addresses_in(elf, vmlinux, names)
    except _elf_parse_errors() as e:
        raise _damaged_elf(vmlinux, "file", e) from e
    finally:
        elf.stream.close()


def _symbol_addresses_in(elf, vmlinux: str, names: Sequence[str]) -> dict:  # type: ignore[no-untyped-def]
    # The first symbol of each name, in table order. The table is scanned with
    # struct, not pyelftools' symbol parser, which takes about a second for
    # a vmlinux's tens of thousands of symbols: most of a live triage's time.
    symtab = elf.get_section_by_name(".symtab")
    if symtab is None:
        raise DebugInfoError(f"{vmlinux} has no symbol table")
    strings = elf.get_section(symtab["sh_link"]).data()
    wanted: Dict[int, str] = {}  # string table offset -> name (a name may share another's tail)
    for name in names:
        key = name.encode() + b"\0"
        at = strings.find(key)
        while at >= 0:
            wanted.setdefault(at, name)
            at = strings.find(key, at + 1)
    order = "<" if elf.little_endian else ">"
    # Elf64_Sym: name, info, other, shndx, value, size; Elf32_Sym: name, value, size, info, other, shndx
    entry = struct.Struct(order + ("IBBHQQ" if elf.elfclass == 64 else "IIIBBH"))
    value_index = 4 if elf.elfclass == 64 else 1
    data = symtab.data()
    found: Dict[str, int] = {}
    for fields in entry.iter_unpack(data[:len(data) - len(data) % entry.size]):
        named = wanted.get(fields[0])
        if named is not None and named not in found:
            found[named] = fields[value_index]
    return found


def _parse_vmcoreinfo_note(buf: bytes, little_endian: bool) -> str:
    fmt = "<III" if little_endian else ">III"
    namesz, descsz, _ = struct.unpack_from(fmt, buf)
    name_end = 12 + namesz
    name = buf[12:name_end].rstrip(b"\0")
    if name != b"VMCOREINFO":
        raise TargetError(f"the guest's vmcoreinfo_note holds no VMCOREINFO note (found {name!r})")
    desc_start = 12 + ((namesz + 3) & ~3)
    desc = buf[desc_start : desc_start + descsz]
    if len(desc) < descsz:
        raise TargetError("the guest's VMCOREINFO note is truncated")
    return desc.split(b"\0", 1)[0].decode(errors="replace")


def _read_guest_vmcoreinfo(prog: drgn.Program, vmlinux: str, little_endian: bool) -> Tuple[str, Optional[int]]:
    """The guest's VMCOREINFO text and its RAM end (from ``max_pfn``) when readable."""
    base = kernel.LINEAR_MAP_BASE
    syms = _symbol_addresses(vmlinux, ("vmcoreinfo_note", "max_pfn"))
    if "vmcoreinfo_note" not in syms:
        raise TargetError(
            f"{vmlinux} has no vmcoreinfo_note symbol: the kernel needs CONFIG_VMCORE_INFO"
            " (CONFIG_CRASH_CORE before 6.9) to be opened over QMP"
        )
    word = "<Q" if little_endian else ">Q"

    def read_pointer(vaddr: int) -> int:
        try:
            return struct.unpack(word, prog.read(vaddr - base, 8, True))[0]
        except drgn.FaultError as e:
            raise TargetError(f"cannot read guest physical memory at {vaddr - base:#x}: {e}") from e

    note = read_pointer(syms["vmcoreinfo_note"])
    if note < base:
        raise TargetError(
            "the guest's vmcoreinfo_note is not set (the kernel has not finished booting,"
            " or the vmlinux is not the guest's kernel)"
        )
    try:
        # The note's text is at most VMCOREINFO_BYTES = PAGE_SIZE
        # (include/linux/vmcore_info.h), its name "VMCOREINFO".
        header = prog.read(note - base, 12, True)
        namesz, descsz, _ = struct.unpack("<III" if little_endian else ">III", header)
        if namesz > 64 or descsz > kernel.PPC64_MAX_PAGE_SIZE:
            raise TargetError("the guest's vmcoreinfo_note does not point at an ELF note")
        buf = prog.read(note - base, 12 + ((namesz + 3) & ~3) + descsz, True)
    except drgn.FaultError as e:
        raise TargetError(f"cannot read the guest's VMCOREINFO note: {e}") from e
    text = _parse_vmcoreinfo_note(buf, little_endian)

    ram_end = None
    if "max_pfn" in syms:
        try:
            max_pfn = read_pointer(syms["max_pfn"])
            page = int(kernel.parse_vmcoreinfo(text).get("PAGESIZE", "0"))
            if max_pfn and page:
                ram_end = max_pfn * page
        except (TargetError, ValueError):
            pass
    return text, ram_end


def open_qemu(
    qmp_socket: str, vmlinux: str, debug_info: Sequence[str] = (), *,
    running: Optional[bool] = None,
    debug_directories: Sequence[str] = (),
) -> drgn.Program:
    """
    A Program on a live QEMU ppc64 guest, from its QMP socket and its vmlinux
    only (no fw_cfg, no vmcoreinfo file needed). ``debug_info`` adds module
    debug info (files or directories).

    ``running`` says whether the guest's vCPUs run while it is read (None:
    ask QEMU with ``query-status`` first). A running guest is a kernel that
    moves under the reader (:mod:`lpdebug.live`). For a consistent read use
    :func:`qemu_session`, which pauses the guest around the Program's life.
    The Program holds QEMU's only QMP connection until :func:`close_qemu`
    (or until it is garbage-collected).
    """
    _require_drgn_feature("qemu")
    platform = _platform_of(vmlinux)
    little_endian = bool(platform.flags & drgn.PlatformFlags.IS_LITTLE_ENDIAN)
    if running is None:
        running = qmp.guest_running(qmp_socket)
    prog: Optional[drgn.Program] = drgn_compat.new_program(platform)
    live.mark_target(prog, moving=running)
    failure: Optional[BaseException] = None
    try:
        if not running:
            _read_vcpu_registers(prog, qmp_socket)
        _attach_qemu(prog, qmp_socket, vmlinux, debug_info, little_endian, debug_directories)
    except (TargetError, DebugInfoError) as e:
        failure = e
    except BaseException:
        # Ctrl-C, SIGTERM, a bug: QEMU serves one QMP client at a time, and
        # whoever resumes a paused guest needs it now.
        close_qemu(prog)
        raise
    if failure is not None:
        # Close the connection now, and keep no reference to the Program in
        # the traceback, so the caller can retry (with another vmlinux, say).
        close_qemu(prog)
        failure.__traceback__ = None
        failure.__cause__ = failure.__context__ = None
        prog = None
        raise failure
    return prog  # type: ignore[return-value]


def _read_vcpu_registers(prog: drgn.Program, qmp_socket: str) -> None:
    # The guest is paused: its vCPUs' registers unwind the tasks they run
    # (drgn has no registers of a live target). Read before drgn takes QEMU's
    # one QMP connection; nothing changes them until the guest runs again.
    try:
        vcpus = vcpu.parse_info_registers(qmp.vcpu_registers_text(qmp_socket))
    except TargetError as e:
        _warn(prog, f"the vCPUs' registers could not be read ({e}): the tasks running on them "
              "are not unwound")
        return
    if not vcpus:
        _warn(prog, "QEMU's info registers gave no vCPU registers lpdebug can read: the tasks "
              "running on them are not unwound")
        return
    vcpu.set_vcpu_registers(prog, vcpus, "qmp")


_QMP_SOCKET_KEY = "qmp_socket"  # in kernel.program_state: the connection drgn reads through


def close_qemu(prog: drgn.Program) -> None:
    """
    End the QMP connection of a Program from :func:`open_qemu`, even while
    other references to the Program live on (a traceback, a REPL variable):
    QEMU then serves its next client. The Program cannot read the guest
    afterwards.
    """
    sock = kernel.program_state(prog).pop(_QMP_SOCKET_KEY, None)
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


@contextlib.contextmanager
def qemu_session(
    qmp_socket: str, vmlinux: str, debug_info: Sequence[str] = (), *, pause: bool = True,
    debug_directories: Sequence[str] = (),
) -> Iterator[drgn.Program]:
    """
    A Program on a QEMU guest for the duration of the block. With ``pause``
    the guest is stopped (QMP ``stop``) before it is opened and resumed
    (``cont``) after its connection is closed, however the block ends, so
    everything read comes from one moment of the guest; a guest found paused
    is left paused. Without ``pause`` the guest runs while it is read.
    """
    _require_drgn_feature("qemu")
    _platform_of(vmlinux)  # a wrong vmlinux fails here, before the guest is touched
    with contextlib.ExitStack() as stack:
        running = False
        if pause:
            pause_handle = stack.enter_context(qmp.paused(qmp_socket))
            prog = None
            for delay in _MODULE_LIST_RETRY_DELAYS:
                try:
                    prog = open_qemu(qmp_socket, vmlinux, debug_info, running=False,
                                     debug_directories=debug_directories)
                    break
                except ModuleListUnreadable:
                    # Paused in the middle of an insmod or rmmod: let the guest
                    # finish it and pause again (nothing was read yet).
                    if not pause_handle.stopped_here:
                        raise
                    pause_handle.run_for(delay)
            if prog is None:
                prog = open_qemu(qmp_socket, vmlinux, debug_info, running=False,
                                     debug_directories=debug_directories)
        else:
            running = qmp.guest_running(qmp_socket)
            prog = open_qemu(qmp_socket, vmlinux, debug_info, running=running,
                             debug_directories=debug_directories)
        try:
            yield prog
        finally:
            close_qemu(prog)


def _attach_qemu(
    prog: drgn.Program, qmp_socket: str, vmlinux: str, debug_info: Sequence[str], little_endian: bool,
    debug_directories: Sequence[str] = (),
) -> None:
    # drgn gets a connection made here (a duplicate of its descriptor), so
    # close_qemu can end it whatever holds the Program.
    sock = qmp.connect_socket(qmp_socket)
    kernel.program_state(prog)[_QMP_SOCKET_KEY] = sock
    try:
        prog.set_qemu_qmp(os.dup(sock.fileno()))
    except (OSError, ValueError) as e:
        raise TargetError(f"cannot connect to QMP at {qmp_socket}: {e}") from None
    text, ram_end = _read_guest_vmcoreinfo(prog, vmlinux, little_endian)
    _set_guest_vmcoreinfo(prog, text)
    # drgn walks the page tables for every virtual address; over QMP that
    # fails for 6.1 (no NUMBER(RADIX_MMU)) and on hash-MMU guests. The linear
    # map needs no page tables.
    hash_mmu.add_linear_map_segment(prog, ram_end)
    load_debug_info(prog, [vmlinux, *debug_info], default=False, directories=debug_directories)


def _require_drgn_feature(feature: str) -> None:
    problem = drgn_compat.feature_problem(feature)
    if problem is not None:
        raise TargetError(problem)


def _set_guest_vmcoreinfo(prog: drgn.Program, text: str) -> None:
    # The vmlinux is checked against its BUILD-ID when its debug info is loaded.
    try:
        prog.set_linux_kernel_custom(text, True)
    except ValueError as e:
        raise TargetError(f"drgn rejected the guest's VMCOREINFO: {e}") from None


def open_memory_readers(
    vmlinux: str,
    add_segments: Callable[[drgn.Program], None],
    debug_info: Sequence[str] = (),
) -> drgn.Program:
    """
    A Program on a live kernel whose memory only a debugger can read (gdb's
    remote target, say): ``add_segments(prog)`` attaches the reader(s) with
    ``prog.add_memory_segment``, physical and virtual. The guest's VMCOREINFO
    is found through the vmlinux symbol table, as for a QEMU target.
    """
    _require_drgn_feature("memory_readers")
    platform = _platform_of(vmlinux)
    little_endian = bool(platform.flags & drgn.PlatformFlags.IS_LITTLE_ENDIAN)
    # drgn takes VMCOREINFO only before any memory is attached, and finding
    # VMCOREINFO needs memory: a first program only reads it.
    finder = drgn_compat.new_program(platform)
    add_segments(finder)
    text, _ = _read_guest_vmcoreinfo(finder, vmlinux, little_endian)
    prog = drgn_compat.new_program(platform)
    # gdb (all-stop) holds the target stopped while its commands run.
    live.mark_target(prog, moving=False)
    _set_guest_vmcoreinfo(prog, text)
    add_segments(prog)
    load_debug_info(prog, [vmlinux, *debug_info], default=False)
    return prog
