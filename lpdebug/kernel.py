"""
Which kernel is this: the one place where lpdebug decides kernel-version and
configuration differences.

Every decision looks at the kernel's own types and symbols (does a struct
have a member, how big is a type, does an object exist), never at the
release string, so backports and distribution kernels are judged by what they
contain. Answers are cached in ``prog.cache``.
"""

from __future__ import annotations

import functools
from typing import Callable, Dict, Iterator, List, Optional, TypeVar, Union

import drgn

from .model import KernelInfo

__all__ = (
    "KernelInfo",
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
    "MMU_FTR_TYPE_RADIX",
)

# Start of the ppc64 Book3S linear map: virtual = LINEAR_MAP_BASE + physical.
LINEAR_MAP_BASE = 0xC000000000000000
# arch/powerpc/include/asm/mmu.h; the flag drgn itself uses to pick radix walks.
MMU_FTR_TYPE_RADIX = 0x40

_T = TypeVar("_T")


def _cached(fn: Callable[..., _T]) -> Callable[..., _T]:
    """Cache ``fn(prog, *args)`` in ``prog.cache``."""

    @functools.wraps(fn)
    def wrapper(prog: drgn.Program, *args):  # type: ignore[no-untyped-def]
        key = ("lpdebug.kernel", fn.__name__) + args
        try:
            return prog.cache[key]
        except KeyError:
            value = fn(prog, *args)
            prog.cache[key] = value
            return value

    return wrapper


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


@_cached
def has_type(prog: drgn.Program, name: str) -> bool:
    """The debug info defines type ``name`` (e.g. ``"struct klp_patch"``)."""
    tp = _type(prog, name)
    return tp is not None and tp.is_complete()


@_cached
def has_member(prog: drgn.Program, type_name: str, member: str) -> bool:
    """``type_name`` has a member ``member`` (nested anonymous members count)."""
    tp = _type(prog, type_name)
    if tp is None:
        return False
    tp = _strip(tp)
    if tp.kind not in (drgn.TypeKind.STRUCT, drgn.TypeKind.UNION, drgn.TypeKind.CLASS):
        return False
    return tp.has_member(member)


@_cached
def member_type(prog: drgn.Program, type_name: str, member: str) -> Optional[drgn.Type]:
    """Type of ``type_name.member``, None when either is absent."""
    if not has_member(prog, type_name, member):
        return None
    return _strip(_type(prog, type_name)).member(member).type  # type: ignore[union-attr]


@_cached
def has_object(prog: drgn.Program, name: str) -> bool:
    """The kernel has a variable, function or constant called ``name``."""
    try:
        prog[name]
        return True
    except (LookupError, drgn.FaultError):
        return False


@_cached
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


@_cached
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
    if platform.arch == drgn.Architecture.PPC64:
        return "ppc64le" if is_little_endian(prog) else "ppc64"
    return platform.arch.name.lower()


@_cached
def vmcoreinfo(prog: drgn.Program) -> Dict[str, str]:
    """The target's VMCOREINFO as ``{KEY: value}``; empty when unavailable."""
    try:
        raw = prog["VMCOREINFO"]
        text = prog.read(raw.address_, drgn.sizeof(raw.type_)) if raw.address_ else raw.string_()
    except (LookupError, drgn.FaultError, ValueError, TypeError):
        return {}
    result: Dict[str, str] = {}
    for line in bytes(text).split(b"\0", 1)[0].decode(errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            result[key] = value
    return result


@_cached
def release(prog: drgn.Program) -> str:
    try:
        return prog["UTS_RELEASE"].string_().decode()
    except (LookupError, drgn.FaultError, ValueError):
        return vmcoreinfo(prog).get("OSRELEASE", "unknown")


@_cached
def page_size(prog: drgn.Program) -> int:
    try:
        return prog["PAGE_SIZE"].value_()
    except (LookupError, drgn.FaultError):
        value = vmcoreinfo(prog).get("PAGESIZE")
        return int(value) if value else 0


@_cached
def mmu(prog: drgn.Program) -> Optional[str]:
    """``"radix"`` or ``"hash"`` on ppc64 Book3S, None elsewhere or when unknown."""
    if not is_ppc64(prog):
        return None
    # The kernel says so itself from 6.8 on; older kernels leave it to the
    # same cpu feature bit drgn's page-table walker tests.
    value = vmcoreinfo(prog).get("NUMBER(RADIX_MMU)")
    if value is not None:
        return "radix" if int(value) else "hash"
    try:
        features = prog["cur_cpu_spec"].mmu_features.value_()
    except (LookupError, drgn.FaultError, AttributeError):
        return None
    return "radix" if features & MMU_FTR_TYPE_RADIX else "hash"


@_cached
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


@_cached
def build_id(prog: drgn.Program) -> Optional[str]:
    value = vmcoreinfo(prog).get("BUILD-ID")
    if value:
        return value.lower()
    try:
        bid = prog.main_module().build_id
    except LookupError:
        return None
    return bid.hex() if bid else None


@_cached
def has_livepatch(prog: drgn.Program) -> bool:
    """The kernel was built with CONFIG_LIVEPATCH."""
    return has_object(prog, "klp_patches") or has_type(prog, "struct klp_patch")


@_cached
def fgraph_layout(prog: drgn.Program) -> Optional[str]:
    """
    Layout of ``task_struct.ret_stack``: ``"array"`` (a ``struct
    ftrace_ret_stack *`` array, up to 6.10), ``"offset"`` (an ``unsigned long
    *`` word stack, 6.11 and later) or None without the graph tracer.
    """
    tp = member_type(prog, "struct task_struct", "ret_stack")
    if tp is None or tp.kind != drgn.TypeKind.POINTER:
        return None
    target = _strip(tp.type)
    if target.kind == drgn.TypeKind.STRUCT:
        return "array"
    return "offset"


@_cached
def thread_info_in_task(prog: drgn.Program) -> bool:
    """CONFIG_THREAD_INFO_IN_TASK: thread_info is the first member of task_struct."""
    return has_member(prog, "struct task_struct", "thread_info")


def kernel_info(prog: drgn.Program) -> KernelInfo:
    """What kernel the program holds; problems go to ``errors``, never raise."""
    errors = []
    if not (prog.flags & drgn.ProgramFlags.IS_LINUX_KERNEL):
        errors.append("the target is not a Linux kernel")
    if not is_ppc64(prog):
        errors.append(
            f"the target is {_arch_name(prog)}, not ppc64: the ppc64 analyses"
            " (livepatch stack, TOCs) do not apply"
        )
    try:
        prog.type("struct task_struct")
    except LookupError:
        errors.append("no kernel debug info loaded (struct task_struct is unknown)")
    info = KernelInfo(
        release=release(prog),
        arch=_arch_name(prog),
        page_size=page_size(prog),
        mmu=mmu(prog),
        elf_abi=elf_abi(prog),
        build_id=build_id(prog),
        livepatch=has_livepatch(prog),
        fgraph_layout=fgraph_layout(prog),
        errors=errors,
    )
    if is_ppc64(prog) and info.mmu is None:
        errors.append("could not tell the MMU type (no NUMBER(RADIX_MMU), cur_cpu_spec unreadable)")
    return info


# --- bounded walks ----------------------------------------------------------

# Far above any real list here (tasks, ftrace ops, klp objects); a walk that
# goes further is corrupt or cyclic.
WALK_LIMIT = 1_000_000


def walk_list(
    head: drgn.Object,
    type_name: str,
    member: str,
    errors: List[str],
    what: str,
    limit: int = WALK_LIMIT,
) -> Iterator[drgn.Object]:
    """
    Entries of the ``list_head`` at ``head`` (an object or pointer), as
    ``type_name *`` objects linked through ``member``, like
    ``list_for_each_entry``. A cycle that does not pass through the head, an
    unreadable node or more than ``limit`` entries ends the walk with a
    message in ``errors`` naming ``what``.
    """
    if head.type_.kind != drgn.TypeKind.POINTER:
        head = head.address_of_()
    head_addr = head.value_()
    seen = set()
    try:
        node = head.next.read_()
        while node.value_() != head_addr:
            addr = node.value_()
            if addr in seen:
                errors.append(f"{what}: cycle at {addr:#x}, list walk stopped")
                return
            if len(seen) >= limit:
                errors.append(f"{what}: more than {limit} entries, list walk stopped")
                return
            seen.add(addr)
            if not addr:
                errors.append(f"{what}: NULL link after {len(seen) - 1} entries, list walk stopped")
                return
            # Read the link first so an unreadable node is never yielded.
            next_node = node.next.read_()
            yield drgn.container_of(node, type_name, member)
            node = next_node
    except drgn.FaultError as e:
        errors.append(f"{what}: unreadable list node ({e}), list walk stopped")
