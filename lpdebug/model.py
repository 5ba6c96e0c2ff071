# SPDX-License-Identifier: GPL-2.0-or-later
"""
The kernel model: plain dataclasses that the walkers fill from a drgn Program
and that checks and renderers read. Nothing here touches the target.

Data flows one way: target -> walkers (livepatch, ftrace, fgraph,
livepatch_stack, toc, backtrace) -> this model -> checks (findings) ->
rendering (text tables, JSON). Addresses are ints; symbols are names
(``None`` where no symbol is known).

Every walker records what it could not read as a :class:`Diagnostic` (typed:
which stage, what kind of problem, where) instead of raising, so a report
always has the rest, and says what it could not check.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Dict, List, Optional


# --- what could not be checked ---------------------------------------------


class DiagnosticKind(str, enum.Enum):
    """What kind of problem kept a part of the kernel from being checked."""

    UNREADABLE = "unreadable"  # the memory could not be read (not in the dump, a fault)
    FILTERED = "filtered"  # the dump's filter (makedumpfile -d) excluded the page
    CORRUPT = "corrupt"  # read, but impossible: bad magic, out of bounds, broken list
    CYCLE = "cycle"  # a list or chain loops back on itself
    CHANGED_WHILE_READING = "changed_while_reading"  # a live kernel changed it under the reader
    MISSING_DEBUG_INFO = "missing_debug_info"  # a check needs debug info that was not found
    LOST = "lost"  # fewer objects found than the kernel's own counters say exist
    STAGE_FAILED = "stage_failed"  # a stage raised: a bug, or input it does not understand


@dataclass
class Diagnostic:
    """One thing the report could not check. Any diagnostic makes the result incomplete."""

    stage: str  # "kernel", "livepatch", "ftrace", "tasks", "tocs", "checks", "transition", ...
    kind: DiagnosticKind
    address: Optional[int]  # the kernel address that could not be read or made sense of
    message: str  # one line for a person


# --- kernel -----------------------------------------------------------------


@dataclass
class KernelInfo:
    release: str
    arch: str  # "ppc64le", "ppc64" (big endian) or drgn's name for anything else
    page_size: int
    mmu: Optional[str]  # "radix", "hash" or None when unknown / not ppc64
    elf_abi: Optional[int] = None  # 1 or 2 on ppc64, None elsewhere
    build_id: Optional[str] = None
    livepatch: bool = False  # the kernel was built with CONFIG_LIVEPATCH
    fgraph_layout: Optional[str] = None  # "array" (<= 6.10), "offset" (>= 6.11), None
    errors: List[str] = field(default_factory=list)


# --- livepatch --------------------------------------------------------------


@dataclass
class KlpFunc:
    address: int  # of the struct klp_func
    name: str  # old_name
    sympos: int
    old_addr: int
    new_addr: int
    new_symbol: Optional[str]
    new_module: Optional[str]  # module that holds new_func (the livepatch module)
    old_module: Optional[str]  # module that holds old_func; None for vmlinux
    old_size: int
    new_size: int
    patched: bool
    transition: bool
    nop: bool


@dataclass
class KlpObject:
    address: int
    name: Optional[str]  # None means vmlinux
    loaded: bool  # vmlinux, or the module is loaded (obj->mod != NULL)
    patched: bool
    dynamic: bool
    funcs: List[KlpFunc] = field(default_factory=list)


@dataclass
class KlpState:
    id: int
    version: int
    data: int


@dataclass
class KlpPatch:
    address: int
    name: str  # the livepatch module's name, as in /sys/kernel/livepatch
    module: Optional[str]
    enabled: bool
    transition: bool  # this patch is klp_transition_patch
    replace: bool
    forced: bool
    objects: List[KlpObject] = field(default_factory=list)
    states: List[KlpState] = field(default_factory=list)


@dataclass
class KlpOps:
    address: int
    old_addr: int  # old function the ops is registered for
    old_symbol: Optional[str]
    func_stack: List[int] = field(default_factory=list)  # klp_func addresses, top first
    active: Optional[int] = None  # klp_func address in effect (top of func_stack)


@dataclass
class BlockingTask:
    pid: int
    comm: str
    patch_state: int
    function: Optional[str]  # the patched function found on its stack
    frame: Optional[int]  # index of that frame in the task's true backtrace


@dataclass
class KlpTransition:
    patch: Optional[str]  # name of klp_transition_patch, None when idle
    target_state: Optional[str]  # "patched", "unpatched" or None when idle
    blocking: List[BlockingTask] = field(default_factory=list)


@dataclass
class LivepatchState:
    patches: List[KlpPatch] = field(default_factory=list)
    ops: List[KlpOps] = field(default_factory=list)
    transition: KlpTransition = field(default_factory=lambda: KlpTransition(None, None))
    shadow_count: Optional[int] = None  # None when the kernel has no klp_shadow_hash
    errors: List[str] = field(default_factory=list)


# --- ftrace -----------------------------------------------------------------


@dataclass
class FtraceOps:
    address: int
    func: int
    func_symbol: Optional[str]
    owner: Optional[str]  # module owning ops->func, None for vmlinux
    flags: List[str]  # decoded FTRACE_OPS_FL_* names, without the prefix
    flags_raw: int
    filter: List[int] = field(default_factory=list)  # IPs of the filter hash
    notrace: List[int] = field(default_factory=list)
    filter_symbols: List[Optional[str]] = field(default_factory=list)
    notrace_symbols: List[Optional[str]] = field(default_factory=list)
    trampoline: int = 0
    trampoline_size: int = 0


@dataclass
class FtraceRecord:
    ip: int
    symbol: Optional[str]
    module: Optional[str]
    flags: List[str]  # decoded FTRACE_FL_* names, without the prefix
    flags_raw: int
    refcount: int
    ops: List[int] = field(default_factory=list)  # ftrace_ops attached to this record


@dataclass
class FtraceState:
    ops: List[FtraceOps] = field(default_factory=list)
    records: List[FtraceRecord] = field(default_factory=list)
    total_records: int = 0
    errors: List[str] = field(default_factory=list)


# --- shadow stacks ----------------------------------------------------------


@dataclass
class FgraphEntry:
    index: int  # 0 = oldest
    ret: int  # real return address
    func: int
    retp: int  # address of the stack slot that holds return_to_handler
    address: int  # of the entry in task->ret_stack


@dataclass
class LivepatchStackEntry:
    address: int  # of the entry (its saved-r2 word)
    toc: int
    lr: int  # as saved; may be return_to_handler
    real_lr: int  # lr resolved through fgraph
    magic: int
    magic_ok: bool


@dataclass
class LivepatchStack:
    base: int
    sp: int
    entries: List[LivepatchStackEntry] = field(default_factory=list)  # oldest first
    errors: List[str] = field(default_factory=list)
    stack_start: Optional[int] = None  # the task's stack area [stack_start, stack_end)
    stack_end: Optional[int] = None
    task_sp: Optional[int] = None  # the task's kernel SP the livepatch stack must stay below
    bounds_error: Optional[str] = None  # why livepatch_sp is out of bounds (entries then unread)


# --- backtraces -------------------------------------------------------------


@dataclass
class Frame:
    index: int
    pc: int  # the true return address (or the interrupted pc for frame 0)
    sp: int
    symbol: Optional[str]
    offset: Optional[int]
    module: Optional[str]  # None for vmlinux
    source: str  # "unwound", "fgraph", "livepatch"; "returned" in TaskTrace.returned_frame
    raw_pc: int  # what the unwinder saw (return_to_handler, livepatch_handler+N, ...)
    toc_restore: bool = False  # the instruction at pc is the TOC restore
    toc_slot: Optional[int] = None  # value of the frame's TOC save slot, where read
    interrupted: bool = False  # pc is where the CPU stopped, not a return address
    fgraph_entry: Optional[int] = None  # address of the ret_stack entry that gave pc
    livepatch_entry: Optional[int] = None  # index in livepatch_stack.entries that gave pc
    image: Optional[str] = None  # module name or "vmlinux" holding pc; None when neither
    toc_slot_address: Optional[int] = None  # sp + 24 (ELFv2) / sp + 40 (ELFv1): toc_slot's address
    # interrupted frame only: its function restores r2 from the slot somewhere before pc
    toc_restored_before_pc: bool = False


@dataclass
class CpuStop:
    """What rule (c) needs to know about the code a CPU stopped at (lpdebug.checks decides)."""

    nip: int  # where the CPU stopped
    user_mode: bool  # MSR[PR] was set: r2 is the user program's
    exception_code: bool  # nip is in the interrupt vectors or entry/exit code
    trampoline: Optional[str]  # the ftrace/livepatch trampoline symbol nip is in, if any
    module_stub: bool  # nip is in a module's .stubs entry (STUB_MAGIC found)
    function: Optional[str]  # the symbol nip is in
    function_offset: Optional[int]  # nip - that symbol's address
    elf_abi: Optional[int]  # 1 or 2
    at_toc_restore: Optional[bool] = None  # the instruction at nip is the TOC restore; None unread
    # the function starts with the addis r2,r12 / addi r2,r2 global-entry prologue; None unread
    toc_prologue: Optional[bool] = None


@dataclass
class TaskTrace:
    pid: int
    comm: str
    state: str
    patch_state: Optional[int]
    address: int  # of the task_struct
    frames: List[Frame] = field(default_factory=list)
    livepatch_stack: Optional[LivepatchStack] = None
    ret_stack: List[FgraphEntry] = field(default_factory=list)
    on_cpu: Optional[int] = None  # the crashed/running CPU whose registers start the trace
    errors: List[str] = field(default_factory=list)
    ret_stack_errors: List[str] = field(default_factory=list)  # why ret_stack cannot be walked
    # What its CPU saved in the dump (crash_notes): nip, r1, r2, link, msr, pid, and pt_regs,
    # the address of those registers laid out as struct pt_regs
    cpu_registers: Optional[Dict[str, int]] = None
    crashed: bool = False  # its CPU is the one that crashed (panicked)
    cpu_image: Optional[str] = None  # module name or "vmlinux" holding the CPU's nip
    cpu_stop: Optional[CpuStop] = None  # facts about the code at the CPU's nip, for rule (c)
    # Where the unwind of the CPU's saved registers started (lpdebug.crash_notes.CrashStart.how):
    # "exception", "saved" or "saved-r1-for-link"
    cpu_unwind: Optional[str] = None
    # The function the CPU returned from last (its frame lies just below frame 0's SP, back
    # chain intact): index -1, pc = the return address into it that its own frame holds.
    returned_frame: Optional[Frame] = None
    # A live kernel changed the task while it was read, every time it was read: what was read is
    # shown but mixes moments, so no check runs on it (a Diagnostic of that kind names the task).
    changed_while_reading: bool = False


# --- findings ---------------------------------------------------------------


@dataclass
class Finding:
    kind: str
    severity: str  # "error", "warning" or "info"
    pid: Optional[int]
    frame: Optional[int]
    address: Optional[int]
    expected_toc: Optional[int]
    expected_module: Optional[str]
    actual_toc: Optional[int]
    actual_module: Optional[str]
    message: str
    slot: Optional[int] = None  # address of the word holding actual_toc (stack or livepatch entry)


# --- the whole report -------------------------------------------------------


@dataclass
class TriageResult:
    kernel: KernelInfo
    livepatch: LivepatchState
    ftrace: FtraceState
    tasks: List[TaskTrace] = field(default_factory=list)
    findings: List[Finding] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)
    diagnostics: List[Diagnostic] = field(default_factory=list)
    # lpdebug.toc.TocMap of vmlinux and every module (kept untyped here: the
    # model does not import the walkers); None when not computed.
    tocs: Optional[object] = None
