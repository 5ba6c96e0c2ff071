# SPDX-License-Identifier: GPL-2.0-or-later
"""
Which kernel is this: the one place where lpdebug decides kernel-version and
configuration differences.

Every decision looks at the kernel's own types and symbols (does a struct
have a member, how big is a type, does an object exist), never at the
release string, so backports and distribution kernels are judged by what they
contain.

It is also the one home of everything lpdebug keeps on a Program:

- :func:`cached` facts (answers derived from the target: type facts, the
  :class:`~lpdebug.symbols.Symbolizer`, the backtrace context ...) live in
  one dictionary, and :func:`invalidate` drops them all in one call. Call it
  whenever the target may have changed under them: after loading more debug
  info, and between two commands on a live target (gdb does), where modules
  come and go;
- :func:`program_state` records what lpdebug did to the Program (memory
  segments added, warnings met while opening it); invalidation keeps it,
  because the segments stay added.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Hashable, Iterator, List, Optional, Set, TypeVar, Union

import drgn

from .model import Diagnostic, KernelInfo

# The stage of lpdebug.report.triage that kernel_info runs in.
STAGE = "kernel"

__all__ = (
    "KernelInfo",
    "cached",
    "cached_fact",
    "invalidate",
    "program_state",
    "parse_vmcoreinfo",
    "kernel_info",
    "is_ppc64",
    "is_little_endian",
    "vmcoreinfo",
    "release",
    "page_size",
    "mmu",
    "elf_abi",
    "toc_save_offset",
    "build_id",
    "main_module",
    "has_livepatch",
    "fgraph_layout",
    "has_type",
    "has_member",
    "has_object",
    "type_size",
    "member_type",
    "enum_values",
    "thread_info_in_task",
    "walk_list",
    "WALK_LIMIT",
    "LINEAR_MAP_BASE",
    "LINEAR_MAP_MIN_SIZE",
    "MMU_FTR_TYPE_RADIX",
    "PPC64_MAX_PAGE_SIZE",
)

# Start of the ppc64 Book3S-64 linear map: virtual = LINEAR_MAP_BASE + physical
# (PAGE_OFFSET, arch/powerpc/include/asm/page.h; the same on radix and hash).
LINEAR_MAP_BASE = 0xC000000000000000
# Size of the smallest linear-map region of any Book3S-64 layout: hash with 4K
# pages, where vmalloc starts at H_KERN_VIRT_START = 0xc0003d0000000000
# (arch/powerpc/include/asm/book3s/64/hash-4k.h, 6.12). It covers the kernel
# image and any RAM a kernel of that layout maps, so it serves as the linear
# map's size whenever the real end is not known.
LINEAR_MAP_MIN_SIZE = 0x3D0000000000
# arch/powerpc/include/asm/mmu.h; the flag drgn itself uses to pick radix walks.
MMU_FTR_TYPE_RADIX = 0x40
# The largest page a ppc64 kernel can have: 64K (PPC_64K_PAGES; the 256K pages
# of PPC_256K_PAGES are for 32-bit 44x only, arch/powerpc/Kconfig).
PPC64_MAX_PAGE_SIZE = 1 << 16

_T = TypeVar("_T")

# The two prog.cache keys lpdebug uses, see the module docstring.
_FACTS_KEY = "lpdebug.facts"
_STATE_KEY = "lpdebug.state"


def _facts(prog: drgn.Program) -> Dict[Hashable, Any]:
    return prog.cache.setdefault(_FACTS_KEY, {})


def cached_fact(prog: drgn.Program, key: Hashable, build: Callable[[], _T]) -> _T:
    """
    The fact ``key`` of ``prog``: ``build()``'s result, computed once until
    :func:`invalidate`. ``key`` names the fact (module-qualified, e.g.
    ``("lpdebug.ftrace", "ops_bits")``).
    """
    facts = _facts(prog)
    try:
        return facts[key]
    except KeyError:
        value = facts[key] = build()
        return value


def cached(fn: Callable[..., _T]) -> Callable[..., _T]:
    """Keep ``fn(prog, *args)`` as a fact of ``prog`` (see :func:`cached_fact`)."""
    name = (fn.__module__, fn.__qualname__)

    @functools.wraps(fn)
    def wrapper(prog: drgn.Program, *args: Hashable) -> _T:
        return cached_fact(prog, name + args, lambda: fn(prog, *args))

    return wrapper


def invalidate(prog: drgn.Program) -> None:
    """Forget every cached fact of ``prog`` (the program state stays)."""
    prog.cache.pop(_FACTS_KEY, None)


def program_state(prog: drgn.Program) -> Dict[str, Any]:
    """What lpdebug did to ``prog`` (segments added, warnings); survives :func:`invalidate`."""
    return prog.cache.setdefault(_STATE_KEY, {})


# --- type facts -------------------------------------------------------------


def _type(prog: drgn.Program, type_: Union[str, drgn.Type]) -> Optional[drgn.Type]:
    if isinstance(type_, drgn.Type):
        return type_
    try:
        return prog.type(type_)
    except LookupError:
        return None


def _strip(tp: drgn.Type) -> drgn.Type:
    while tp.kind == drgn.TypeKind.TYPEDEF:
        tp = tp.type
    return tp


@cached
def has_type(prog: drgn.Program, name: str) -> bool:
    """The debug info defines type ``name`` (e.g. ``"struct klp_patch"``)."""
    tp = _type(prog, name)
    return tp is not None and tp.is_complete()


@cached
def has_member(prog: drgn.Program, type_name: str, member: str) -> bool:
    """``type_name`` has a member ``member`` (nested anonymous members count)."""
    tp = _type(prog, type_name)
    if tp is None:
        return False
    tp = _strip(tp)
    if tp.kind not in (drgn.TypeKind.STRUCT, drgn.TypeKind.UNION, drgn.TypeKind.CLASS):
        return False
    return tp.has_member(member)


@cached
def member_type(prog: drgn.Program, type_name: str, member: str) -> Optional[drgn.Type]:
    """Type of ``type_name.member``, None when either is absent."""
    if not has_member(prog, type_name, member):
        return None
    return _strip(_type(prog, type_name)).member(member).type  # type: ignore[union-attr]


@cached
def has_object(prog: drgn.Program, name: str) -> bool:
    """The kernel has a variable, function or constant called ``name``."""
    try:
        prog[name]
        return True
    except (LookupError, drgn.FaultError):
        return False


@cached
def type_size(prog: drgn.Program, name: str) -> Optional[int]:
    tp = _type(prog, name)
    if tp is None or not tp.is_complete():
        return None
    return drgn.sizeof(tp)


# One enumerator per family, used to find the (usually anonymous) enum type.
_ENUM_PROBES = {
    "FTRACE_OPS_FL_": "FTRACE_OPS_FL_ENABLED",
    "FTRACE_FL_": "FTRACE_FL_ENABLED",
}


@cached
def enum_values(prog: drgn.Program, prefix: str, probe: Optional[str] = None) -> Dict[str, int]:
    """
    The enumerators whose names start with ``prefix`` (e.g.
    ``"FTRACE_OPS_FL_"``) in the enum that defines ``probe`` (one of them;
    known for the families lpdebug uses). Empty when the debug info lacks
    the enum (the kernel defined macros, or the compiler dropped the type).
    """
    values: Dict[str, int] = {}
    probe = probe or _ENUM_PROBES.get(prefix)
    if probe is None:
        return values
    try:
        obj = prog[probe]
    except (LookupError, drgn.FaultError):
        return values
    tp = _strip(obj.type_)
    if tp.kind != drgn.TypeKind.ENUM or tp.enumerators is None:
        return values
    for en in tp.enumerators:
        if en.name.startswith(prefix):
            values[en.name] = en.value
    return values


# --- target facts -----------------------------------------------------------


def is_ppc64(prog: drgn.Program) -> bool:
    platform = prog.platform
    return platform is not None and platform.arch == drgn.Architecture.PPC64


def is_little_endian(prog: drgn.Program) -> bool:
    platform = prog.platform
    return platform is not None and bool(platform.flags & drgn.PlatformFlags.IS_LITTLE_ENDIAN)


def _arch_name(prog: drgn.Program) -> str:
    platform = prog.platform
    if platform is None:
        return "unknown"
    if is_ppc64(prog):
        return "ppc64le" if is_little_endian(prog) else "ppc64"
    return platform.arch.name.lower()


def parse_vmcoreinfo(text: Union[str, bytes]) -> Dict[str, str]:
    """VMCOREINFO text (``KEY=value`` lines, NUL-terminated) as ``{KEY: value}``."""
    if isinstance(text, bytes):
        text = text.split(b"\0", 1)[0].decode(errors="replace")
    result: Dict[str, str] = {}
    for line in text.split("\0", 1)[0].splitlines():
        key, sep, value = line.partition("=")
        if sep:
            result[key] = value
    return result


@cached
def vmcoreinfo(prog: drgn.Program) -> Dict[str, str]:
    """The target's VMCOREINFO as ``{KEY: value}``; empty when unavailable."""
    try:
        raw = prog["VMCOREINFO"]
        text = prog.read(raw.address_, drgn.sizeof(raw.type_)) if raw.address_ else raw.to_bytes_()
    except (LookupError, drgn.FaultError, NotImplementedError, ValueError, TypeError):
        return {}
    return parse_vmcoreinfo(bytes(text))


def symbol_address(prog: drgn.Program, name: str) -> Optional[int]:
    """
    Address of the kernel symbol ``name``: from the symbol table, else the
    debug info, else VMCOREINFO's ``SYMBOL(name)``; None when none knows it.
    """
    try:
        return prog.symbol(name).address
    except (LookupError, ValueError):
        pass
    try:
        return prog.object(name).address_
    except (LookupError, ValueError, TypeError):
        pass
    value = vmcoreinfo(prog).get("SYMBOL(%s)" % name)
    return int(value, 16) if value else None


@cached
def release(prog: drgn.Program) -> str:
    try:
        return prog["UTS_RELEASE"].string_().decode()
    except (LookupError, drgn.FaultError, ValueError):
        return vmcoreinfo(prog).get("OSRELEASE", "unknown")


@cached
def page_size(prog: drgn.Program) -> int:
    try:
        return prog["PAGE_SIZE"].value_()
    except (LookupError, drgn.FaultError):
        value = vmcoreinfo(prog).get("PAGESIZE")
        return int(value) if value else 0


def mmu(prog: drgn.Program) -> Optional[str]:
    """
    ``"radix"`` or ``"hash"`` on ppc64 Book3S-64; None elsewhere (Book3E has
    neither) or while unknown. The kernel says so itself in VMCOREINFO's
    ``NUMBER(RADIX_MMU)`` since 36e826b568e4 ("powerpc/vmcore: Add MMU
    information to vmcoreinfo", 6.7, also in 6.6 stable), which added
    ``SYMBOL(cur_cpu_spec)`` and ``OFFSET(cpu_spec.mmu_features)`` too; older
    kernels leave it to the cpu feature bit drgn's page-table walker tests
    too, ``cur_cpu_spec->mmu_features & MMU_FTR_TYPE_RADIX``.

    An unknown answer is not kept: ``cur_cpu_spec`` may become readable once
    :mod:`lpdebug.hash_mmu` has added the linear map.
    """
    if not is_ppc64(prog):
        return None
    key = ("lpdebug.kernel", "mmu")
    facts = _facts(prog)
    if key in facts:
        return facts[key]
    result: Optional[str] = None
    value = vmcoreinfo(prog).get("NUMBER(RADIX_MMU)")
    if value is not None:
        try:
            result = "radix" if int(value) else "hash"
        except ValueError:  # a damaged note: ask the cpu features instead
            pass
    if result is None:
        if symbol_address(prog, "interrupt_base_book3e") is not None:
            return None  # Book3E: neither
        features = _mmu_features(prog)
        if features is not None:
            result = "radix" if features & MMU_FTR_TYPE_RADIX else "hash"
    if result is not None:
        facts[key] = result
    return result


def _mmu_features(prog: drgn.Program) -> Optional[int]:
    """``cur_cpu_spec->mmu_features``, through the debug info or VMCOREINFO."""
    try:
        return prog["cur_cpu_spec"].mmu_features.value_()
    except Exception:  # no debug info, or unreadable (NotImplementedError on hash)
        pass
    info = vmcoreinfo(prog)
    sym = info.get("SYMBOL(cur_cpu_spec)")
    off = info.get("OFFSET(cpu_spec.mmu_features)")
    if sym is None or off is None:
        return None
    try:
        spec = prog.read_u64(int(sym, 16))
        return prog.read_u32(spec + int(off))  # unsigned int mmu_features
    except Exception:
        return None


@cached
def elf_abi(prog: drgn.Program) -> Optional[int]:
    """ppc64 ELF ABI version: 2 (little endian, ELFv2), 1 (big endian, ELFv1)."""
    if not is_ppc64(prog):
        return None
    flags = _vmlinux_elf_flags(prog)
    if flags is not None and flags & 3:
        return flags & 3  # EF_PPC64_ABI
    return 2 if is_little_endian(prog) else 1


def _vmlinux_elf_flags(prog: drgn.Program) -> Optional[int]:
    try:
        path = prog.main_module().debug_file_path
    except LookupError:
        return None
    if not path:
        return None
    try:
        from elftools.elf.elffile import ELFFile

        with open(path, "rb") as f:
            return ELFFile(f).header["e_flags"]
    except Exception:  # unreadable or not ELF: fall back to endianness
        return None


def toc_save_offset(prog: drgn.Program) -> int:
    """Offset of the TOC save slot in a ppc64 stack frame (24 ELFv2, 40 ELFv1)."""
    return 40 if elf_abi(prog) == 1 else 24


@cached
def build_id(prog: drgn.Program) -> Optional[str]:
    """The target kernel's GNU build ID, lowercase hex: VMCOREINFO's ``BUILD-ID``, else drgn's."""
    value = vmcoreinfo(prog).get("BUILD-ID")
    if value:
        return value.lower()
    main = main_module(prog)
    return main.build_id.hex() if main is not None and main.build_id else None


def main_module(prog: drgn.Program) -> Optional[drgn.Module]:
    """drgn's module for vmlinux, created from the target if drgn has not yet."""
    try:
        return prog.main_module()
    except LookupError:
        pass
    try:
        for module, _ in prog.loaded_modules():
            return module  # drgn creates the main module first
    except (ValueError, LookupError, drgn.FaultError, NotImplementedError):
        pass
    return None


@cached
def has_livepatch(prog: drgn.Program) -> bool:
    """The kernel was built with CONFIG_LIVEPATCH."""
    return has_object(prog, "klp_patches") or has_type(prog, "struct klp_patch")


@cached
def fgraph_layout(prog: drgn.Program) -> Optional[str]:
    """
    Layout of ``task_struct.ret_stack``: ``"array"`` (a ``struct
    ftrace_ret_stack *`` array, up to 6.10), ``"offset"`` (an ``unsigned long
    *`` word stack, 6.11 and later, from 42675b723b48 ("function_graph:
    Convert ret_stack to a series of longs")) or None without the graph
    tracer.
    """
    tp = member_type(prog, "struct task_struct", "ret_stack")
    if tp is None or tp.kind != drgn.TypeKind.POINTER:
        return None
    target = _strip(tp.type)
    if target.kind == drgn.TypeKind.STRUCT:
        return "array"
    return "offset"


@cached
def thread_info_in_task(prog: drgn.Program) -> bool:
    """CONFIG_THREAD_INFO_IN_TASK: thread_info is the first member of task_struct."""
    return has_member(prog, "struct task_struct", "thread_info")


def kernel_info(prog: drgn.Program) -> KernelInfo:
    """What kernel the program holds; problems go to ``diagnostics``, never raise."""
    from .diagnostics import missing_debug_info, unsupported

    diagnostics = []
    if not (prog.flags & drgn.ProgramFlags.IS_LINUX_KERNEL):
        diagnostics.append(unsupported(STAGE, "the target is not a Linux kernel"))
    if not is_ppc64(prog):
        diagnostics.append(unsupported(
            STAGE,
            f"the target is {_arch_name(prog)}, not ppc64: the ppc64 analyses"
            " (livepatch stack, TOCs) do not apply"
        ))
    try:
        prog.type("struct task_struct")
    except LookupError:
        diagnostics.append(missing_debug_info(
            STAGE, "no kernel debug info loaded (struct task_struct is unknown)"))
    info = KernelInfo(
        release=release(prog),
        arch=_arch_name(prog),
        page_size=page_size(prog),
        mmu=mmu(prog),
        elf_abi=elf_abi(prog),
        build_id=build_id(prog),
        livepatch=has_livepatch(prog),
        fgraph_layout=fgraph_layout(prog),
        diagnostics=diagnostics,
    )
    if is_ppc64(prog) and info.mmu is None:
        diagnostics.append(missing_debug_info(
            STAGE, "could not tell the MMU type (no NUMBER(RADIX_MMU), cur_cpu_spec unreadable)"))
    return info


# --- the kernel log -----------------------------------------------------------


def kernel_log(prog: drgn.Program) -> List[str]:
    """
    The kernel's log buffer (the printk ring buffer, or the older ``log_buf``
    records) as ``dmesg`` prints it: one ``[seconds] text`` string per line,
    oldest first. Raises LookupError without the printk debug info and
    drgn.FaultError when the buffer is not in the dump.
    """
    from drgn.helpers.linux.printk import get_dmesg

    text = get_dmesg(prog).decode(errors="replace")
    return text.splitlines()


# --- bounded walks ----------------------------------------------------------

# Far above any real list here (tasks, ftrace ops, klp objects); a walk that
# goes further is corrupt or cyclic.
WALK_LIMIT = 1_000_000


def walk_list(
    head: drgn.Object,
    type_name: str,
    member: str,
    diagnostics: List[Diagnostic],
    what: str,
    limit: int = WALK_LIMIT,
    *,
    stage: str,
) -> Iterator[drgn.Object]:
    """
    Entries of the ``list_head`` at ``head`` (an object or pointer), as
    ``type_name *`` objects linked through ``member``, like
    ``list_for_each_entry``. A cycle that does not pass through the head, an
    unreadable node or more than ``limit`` entries ends the walk with a
    :class:`~lpdebug.model.Diagnostic` of ``stage`` in ``diagnostics`` naming ``what``.
    """
    from .diagnostics import corrupt, cycle, from_exception

    if head.type_.kind != drgn.TypeKind.POINTER:
        head = head.address_of_()
    head_addr = head.value_()
    seen: Set[int] = set()
    node_addr = head_addr
    try:
        node = head.next.read_()
        while node.value_() != head_addr:
            addr = node.value_()
            if addr in seen:
                diagnostics.append(cycle(stage, addr, f"{what}: cycle at {addr:#x}, list walk stopped"))
                return
            if len(seen) >= limit:
                diagnostics.append(corrupt(stage, addr,
                                           f"{what}: more than {limit} entries, list walk stopped"))
                return
            seen.add(addr)
            if not addr:
                diagnostics.append(corrupt(
                    stage, node_addr,
                    f"{what}: NULL link after {len(seen) - 1} entries, list walk stopped"))
                return
            # Read the link first so an unreadable node is never yielded.
            node_addr = addr
            next_node = node.next.read_()
            yield drgn.container_of(node, type_name, member)
            node = next_node
    except (drgn.FaultError, NotImplementedError, LookupError) as e:
        # LookupError: drgn cannot translate the address (the MMU type unknown: no
        # NUMBER(RADIX_MMU), no cur_cpu_spec in the debug info).
        diagnostics.append(from_exception(stage, f"{what}: a list node (the walk stopped there) is", e))
