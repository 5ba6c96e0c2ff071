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
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple


# --- how a field is encoded -------------------------------------------------
#
# The JSON encoder (lpdebug.schema) serializes every field of every dataclass
# here, in the field's own terms; what it cannot know from the type is declared
# on the field itself, as ``field(metadata=json_meta(...))``:
#
# - ``sort``: a list whose order means nothing is sorted by these attributes of
#   its items (``()`` sorts plain values). None sorts before any value. Lists
#   without ``sort`` keep their order, which is the kernel's.
# - ``sorted_with``: a list that follows the order ``sort`` gave the named
#   sibling list (names beside their IPs).
# - ``name``: the JSON key, where it differs from the attribute.
# - ``values``: a dict encoded as the list of its values.
# - ``choices``: the values a string may take.
# - ``document``: a dict that is a whole JSON document of another schema, held as
#   it is (its schema id; lpdebug batch's line holds a lpdebug.triage/2 document).


def json_meta(*, sort: Optional[Sequence[str]] = None, sorted_with: Optional[str] = None,
              name: Optional[str] = None, values: bool = False,
              choices: Optional[Sequence[str]] = None, document: Optional[str] = None) -> Dict[str, Any]:
    """A field's JSON encoding (see above), as ``field(metadata=json_meta(...))``."""
    meta: Dict[str, Any] = {}
    if sort is not None:
        meta["sort"] = tuple(sort)
    if sorted_with is not None:
        meta["sorted_with"] = sorted_with
    if name is not None:
        meta["name"] = name
    if values:
        meta["values"] = True
    if choices is not None:
        meta["choices"] = tuple(choices)
    if document is not None:
        meta["document"] = document
    return meta


def sort_key(attrs: Sequence[str]) -> Callable[[Any], Tuple[Any, ...]]:
    """The key that orders items by ``attrs``, None before any value (``()``: the item itself)."""

    def one(value: Any) -> Tuple[bool, Any]:
        return (value is not None, 0 if value is None else value)

    if not attrs:
        return one
    return lambda item: tuple(one(getattr(item, a)) for a in attrs)


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
    UNSUPPORTED = "unsupported"  # the target is not what a check is for (not ppc64, not Linux)


@dataclass
class Diagnostic:
    """One thing the report could not check. Any diagnostic makes the result incomplete."""

    # the triage stage it arose in: "kernel", "livepatch", "ftrace", "tasks", "tocs",
    # "checks", "transition"
    stage: str
    kind: DiagnosticKind  # what kind of problem
    address: Optional[int]  # the kernel address that could not be read or made sense of
    message: str  # one line for a person


# --- coverage: what the report could see ------------------------------------


@dataclass
class ModuleDebugInfo:
    """One loaded module: its build ID and where its debug info and names came from."""

    name: str  # as the kernel names it (struct module.name)
    build_id: Optional[str]  # of the loaded module (its notes in memory), lowercase hex
    debug_file: Optional[str]  # file name of its debug info; None when it has none
    found_by: Optional[str]  # "given" (-s), "search" (drgn's search: directories, debuginfod)
    # where its function names come from: "debug_info", "kallsyms" (its own, in memory), None
    names_from: Optional[str]
    kallsyms_error: Optional[str] = None  # why its in-memory kallsyms could not be read
    # what in the report involves it: "findings", "frames", "livepatch" (sorted)
    used_by: List[str] = field(default_factory=list)


@dataclass
class RefusedDebugFile:
    """A module file handed over that was not used."""

    file: str  # file name (the decompressed one for .ko.xz/.gz/.zst)
    module: str  # the module it is for (its .modinfo name)
    file_build_id: Optional[str]  # the file's GNU build ID, lowercase hex
    loaded_build_id: Optional[str]  # of the loaded module; None when it is not loaded
    reason: str  # "build_id_mismatch", "not_loaded" or "damaged" (not readable as ELF or by drgn)
    detail: Optional[str] = None  # for "damaged": what drgn found wrong in the file


@dataclass
class Coverage:
    """How much of the kernel the report could see: debug info, filtered and unread parts."""

    vmlinux_build_id: Optional[str]  # the target kernel's (VMCOREINFO or drgn's main module)
    vmlinux_debug_file: Optional[str]  # file name of vmlinux's debug info
    vmlinux_found_by: Optional[str]  # "given" (-s) or "search" (drgn's search)
    modules: List[ModuleDebugInfo] = field(default_factory=list)  # every loaded module, by name
    modules_without_debug_info: List[str] = field(default_factory=list)  # sorted names
    refused: List[RefusedDebugFile] = field(default_factory=list)  # module files not used
    # (distinct pages of FILTERED diagnostics, None when none were met)
    filtered_pages: Optional[int] = None  # pages the report wanted that the dump's filter excluded
    # the parts that could not be read or made sense of
    unreadable: Dict[str, int] = field(default_factory=dict)  # stage -> other diagnostics
    errors: List[str] = field(default_factory=list)  # why the module list itself was not seen


# --- kernel -----------------------------------------------------------------


@dataclass
class KernelInfo:
    release: str  # UTS release
    arch: str  # "ppc64le", "ppc64" (big endian) or drgn's name for anything else
    page_size: int  # bytes
    # "radix", "hash"; None: unknown / not ppc64
    mmu: Optional[str] = field(metadata=json_meta(choices=("radix", "hash")))
    elf_abi: Optional[int] = None  # 1 or 2 on ppc64, None elsewhere
    build_id: Optional[str] = None  # the kernel's GNU build ID, hex
    livepatch: bool = False  # the kernel was built with CONFIG_LIVEPATCH
    # task->ret_stack: "array" (kernels up to 6.10), "offset" (6.11 and later); None without it
    fgraph_layout: Optional[str] = field(default=None,
                                         metadata=json_meta(choices=("array", "offset")))
    diagnostics: List[Diagnostic] = field(default_factory=list)  # what could not be told


# --- livepatch --------------------------------------------------------------


@dataclass
class KlpFunc:
    address: int  # of the struct klp_func
    name: str  # old_name: the patched (old) function's name
    sympos: int  # old_sympos: which of several same-named symbols, 0 = the only one
    old_addr: int  # the old function
    new_addr: int  # new_func: the replacement
    new_symbol: Optional[str]  # the replacement's name
    new_module: Optional[str]  # module that holds new_func (the livepatch module)
    old_module: Optional[str]  # module that holds old_func; None for vmlinux
    old_size: int  # bytes of the old function (0 when unknown)
    new_size: int  # bytes of the replacement (0 when unknown)
    patched: bool  # the ftrace hook is in place
    transition: bool  # the function is in transition
    nop: bool  # a dynamic nop of an atomic-replace patch


@dataclass
class KlpObject:
    address: int  # of the struct klp_object
    name: Optional[str]  # the patched module; None means vmlinux
    loaded: bool  # vmlinux, or the module is loaded (obj->mod != NULL)
    patched: bool  # its functions are patched
    dynamic: bool  # a dynamic (nop) object of an atomic-replace patch
    funcs: List[KlpFunc] = field(default_factory=list)  # in the object's order


@dataclass
class KlpState:
    id: int  # klp_state.id
    version: int  # klp_state.version
    data: int  # klp_state.data (a pointer)


@dataclass
class KlpPatch:
    address: int  # of the struct klp_patch
    name: str  # the livepatch module's name, as in /sys/kernel/livepatch
    module: Optional[str]  # the module holding it
    enabled: bool  # the patch is enabled
    transition: bool  # this patch is klp_transition_patch
    replace: bool  # an atomic-replace patch
    forced: bool  # a forced transition left it unremovable
    objects: List[KlpObject] = field(default_factory=list)  # in the patch's order
    states: List[KlpState] = field(default_factory=list)  # its klp_state entries


@dataclass
class KlpOps:
    address: int  # of the struct klp_ops
    old_addr: int  # old function the ops is registered for
    old_symbol: Optional[str]  # its name
    func_stack: List[int] = field(default_factory=list)  # klp_func addresses, top first
    active: Optional[int] = None  # klp_func address in effect (top of func_stack)


@dataclass
class BlockingTask:
    pid: int  # the task
    comm: str  # its name
    patch_state: int  # its patch_state
    function: Optional[str]  # the patched function found on its stack
    frame: Optional[int]  # index of that frame in the task's true backtrace


@dataclass
class KlpTransition:
    patch: Optional[str]  # name of klp_transition_patch, None when idle
    # None when idle
    target_state: Optional[str] = field(metadata=json_meta(choices=("patched", "unpatched")))
    # the tasks not yet in the target state
    blocking: List[BlockingTask] = field(default_factory=list,
                                         metadata=json_meta(sort=("pid", "comm")))
    # How long it has been going, where the kernel shows it (kernel/livepatch/transition.c);
    # None when idle or unreadable.
    attempts: Optional[int] = None  # klp_signals_cnt: failed tries so far, about one a second
    signals_sent: Optional[int] = None  # rounds of klp_send_signals(): one every 15 failed tries
    retry_pending: Optional[bool] = None  # klp_transition_work is queued for the next try
    # its timer's expiry minus jiffies: when that try runs (negative: overdue)
    next_try_jiffies: Optional[int] = None


@dataclass
class LivepatchState:
    # klp_patches in the kernel's order (the stacking order)
    patches: List[KlpPatch] = field(default_factory=list)
    # one klp_ops per patched function
    ops: List[KlpOps] = field(default_factory=list,
                              metadata=json_meta(sort=("old_addr", "address")))
    # the transition in progress
    transition: KlpTransition = field(default_factory=lambda: KlpTransition(None, None))
    shadow_count: Optional[int] = None  # entries in klp_shadow_hash; None when the kernel has none
    # why the kernel has no livepatch state at all (CONFIG_LIVEPATCH off); None when it has one
    unavailable: Optional[str] = None
    diagnostics: List[Diagnostic] = field(default_factory=list)  # what could not be read


# --- ftrace -----------------------------------------------------------------


@dataclass
class FtraceOps:
    address: int  # of the struct ftrace_ops
    func: int  # its handler
    func_symbol: Optional[str]  # the handler's name
    owner: Optional[str]  # module owning ops->func, None for vmlinux
    flags: List[str]  # decoded FTRACE_OPS_FL_* names, without the prefix
    flags_raw: int  # ops->flags
    # IPs of the filter hash; empty means every function
    filter: List[int] = field(default_factory=list, metadata=json_meta(sort=()))
    # IPs of the notrace hash
    notrace: List[int] = field(default_factory=list, metadata=json_meta(sort=()))
    # names of the filter IPs, beside their IP
    filter_symbols: List[Optional[str]] = field(default_factory=list,
                                                metadata=json_meta(sorted_with="filter"))
    # names of the notrace IPs, beside their IP
    notrace_symbols: List[Optional[str]] = field(default_factory=list,
                                                 metadata=json_meta(sorted_with="notrace"))
    trampoline: int = 0  # ops->trampoline, 0 when none
    trampoline_size: int = 0  # bytes


@dataclass
class FtraceRecord:
    ip: int  # the call site
    symbol: Optional[str]  # the function holding it
    module: Optional[str]  # None for vmlinux
    flags: List[str]  # decoded FTRACE_FL_* names, without the prefix
    flags_raw: int  # dyn_ftrace.flags
    refcount: int  # ftrace_ops attached (the low bits of flags)
    # ftrace_ops attached to it
    ops: List[int] = field(default_factory=list, metadata=json_meta(sort=()))
    # when ip lies past the end (ELF size) of the nearest symbol: that symbol, which kallsyms
    # and tracefs name it after (code of an overridden weak function; symbol is then None)
    past_end_of: Optional[str] = None


@dataclass
class FtraceState:
    # ftrace_ops_list in the kernel's order (the order it calls them in)
    ops: List[FtraceOps] = field(default_factory=list)
    # dyn_ftrace records, sorted by ip: by default only those that matter (attached to an
    # ftrace_ops with a filter, IPMODIFY/DIRECT, inside a livepatched function, or at a
    # finding's address: the text report's selection); every one with all_records
    records: List[FtraceRecord] = field(default_factory=list, metadata=json_meta(sort=("ip",)))
    total_records: int = 0  # records in the kernel, shown or not
    unavailable: Optional[str] = None  # why the kernel has no ftrace at all; None when it has
    diagnostics: List[Diagnostic] = field(default_factory=list)  # what could not be read
    # which records `records` holds: all the walker returned, or the notable ones
    selection: str = field(default="all", metadata=json_meta(choices=("all", "notable")))


# --- shadow stacks ----------------------------------------------------------


@dataclass
class FgraphEntry:
    index: int  # 0 = oldest
    ret: int  # real return address
    func: int  # the traced function
    retp: int  # address of the stack slot that holds return_to_handler
    address: int  # of the entry in task->ret_stack


@dataclass
class LivepatchStackEntry:
    address: int  # of the entry (its saved-r2 word)
    toc: int  # the saved r2
    lr: int  # as saved; may be return_to_handler
    real_lr: int  # lr resolved through fgraph
    magic: int  # the word found where STACK_END_MAGIC belongs
    magic_ok: bool  # magic is STACK_END_MAGIC


@dataclass
class LivepatchStack:
    base: int  # the empty stack's start
    sp: int  # livepatch_sp
    entries: List[LivepatchStackEntry] = field(default_factory=list)  # oldest first
    diagnostics: List[Diagnostic] = field(default_factory=list)  # what could not be read
    stack_start: Optional[int] = None  # the task's stack area [stack_start, stack_end)
    stack_end: Optional[int] = None  # the end of the task's stack area
    task_sp: Optional[int] = None  # the task's kernel SP the livepatch stack must stay below
    # why livepatch_sp is out of bounds (the entries are then not read); None when in bounds
    bounds_error: Optional[Diagnostic] = None


# --- backtraces -------------------------------------------------------------


@dataclass
class Frame:
    index: int  # 0 = innermost; -1 for TaskTrace.returned_frame
    pc: int  # the true return address (or the interrupted pc for frame 0)
    sp: int  # the frame's stack pointer
    symbol: Optional[str]  # the function holding pc
    offset: Optional[int]  # pc's offset in it
    module: Optional[str]  # None for vmlinux
    # where pc came from: "unwound", "fgraph", "livepatch"; "returned" in TaskTrace.returned_frame
    source: str = field(metadata=json_meta(choices=("unwound", "fgraph", "livepatch", "returned")))
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
    pid: int  # the task's PID
    comm: str  # its name
    state: str  # the task state letter(s) as ps shows them
    # -1 idle (KLP_UNDEFINED / KLP_TRANSITION_IDLE), 0 unpatched, 1 patched; None without livepatch
    patch_state: Optional[int]
    address: int  # of the task_struct
    frames: List[Frame] = field(default_factory=list)  # the true backtrace, innermost first
    livepatch_stack: Optional[LivepatchStack] = None  # None when the kernel has none
    ret_stack: List[FgraphEntry] = field(default_factory=list)  # task->ret_stack, oldest first
    on_cpu: Optional[int] = None  # the crashed/running CPU whose registers start the trace
    diagnostics: List[Diagnostic] = field(default_factory=list)  # what the trace could not read
    # why task->ret_stack could not be walked (unreadable, or corrupt)
    ret_stack_diagnostics: List[Diagnostic] = field(default_factory=list)
    # What its CPU saved in the dump (crash_notes): `nip`, `r1`, `r2`, `link`, `msr`, `trap`,
    # `pid`, and `pt_regs`, the address of those registers laid out as struct pt_regs; or its
    # vCPU's registers at a paused guest's pause (no `pt_regs`)
    cpu_registers: Optional[Dict[str, int]] = None
    crashed: bool = False  # its CPU is the one that crashed (panicked)
    cpu_image: Optional[str] = None  # module name or "vmlinux" holding the CPU's nip
    cpu_stop: Optional[CpuStop] = None  # facts about the code at the CPU's nip, for rule (c)
    # Where the unwind of the CPU's saved registers started (lpdebug.crash_notes.CrashStart.how):
    # "exception", "saved" or "saved-r1-for-link"; "vcpu": a paused guest's vCPU (lpdebug.vcpu)
    cpu_unwind: Optional[str] = None
    # The function the CPU returned from last (its frame lies just below frame 0's SP, back
    # chain intact): index -1, pc = the return address into it that its own frame holds.
    returned_frame: Optional[Frame] = None
    sources: List[str] = field(default_factory=list)  # TaskSource values of the sources that found it
    # A live kernel changed the task while it was read, every time it was read: what was read is
    # shown but mixes moments, so no check runs on it (a Diagnostic of that kind names the task).
    changed_while_reading: bool = False


# --- how the tasks were found -------------------------------------------------


class TaskSource(str, enum.Enum):
    """An independent place the kernel keeps its tasks; lpdebug.tasks takes their union."""

    PID_IDR = "pid_idr"  # init_pid_ns.idr: every task with a pid (not the idle tasks)
    TASK_LIST = "task_list"  # init_task.tasks and each process's signal->thread_head
    RUNQUEUE = "runqueue"  # each CPU's rq->curr and rq->idle
    CRASH_NOTES = "crash_notes"  # each CPU that saved crash registers: its paca->__current


@dataclass
class MissedTask:
    """A task that a source which should hold it did not give."""

    pid: int  # its PID; -1 when unreadable
    comm: str  # its name; "?" when unreadable
    address: int  # of the task_struct
    found_by: List[str]  # TaskSource values
    missed_by: List[str]  # TaskSource values that should have found it and did not
    exiting: bool  # exit_state set: already unhashed from the IDR and the task list, not lost


@dataclass
class TaskCensus:
    """What each task source gave, and the kernel's own count of its tasks."""

    found: Dict[str, int] = field(default_factory=dict)  # TaskSource value -> tasks it gave
    failed: List[str] = field(default_factory=list)  # TaskSource values whose walk broke off
    tasks: int = 0  # tasks in the union
    counted: int = 0  # tasks in the union the kernel counts in nr_threads (pid != 0, not unhashed)
    nr_threads: Optional[int] = None  # the kernel's nr_threads; None when unreadable
    total_forks: Optional[int] = None  # the kernel's total_forks (forks since boot); None when unreadable
    # tasks some source that should hold them did not give
    missed: List[MissedTask] = field(default_factory=list, metadata=json_meta(sort=("pid", "address")))


# --- TOCs -------------------------------------------------------------------

# The name lpdebug gives the kernel image wherever a module name is expected.
VMLINUX = "vmlinux"


class PrologueMismatch(NamedTuple):
    function: str  # the function whose prologue disagrees
    address: int  # its global entry point
    toc: int  # the TOC its prologue computes


@dataclass
class ModuleToc:
    module: str  # module name, or "vmlinux"
    toc: Optional[int]  # its TOC (r2 value)
    # where toc came from: "arch.toc", ".toc", ".stubs", "paca", ".TOC.", "__toc_start"
    source: Optional[str]
    reason: Optional[str] = None  # why toc is None
    section_address: Optional[int] = None  # of the section the TOC derives from
    prologue_toc: Optional[int] = None  # from the first function with a TOC prologue
    prologue_function: Optional[str] = None  # that function
    prologue_address: Optional[int] = None  # its global entry point
    prologues_checked: int = 0  # functions whose prologue was decoded
    # each prologue that computes another TOC than toc
    prologue_mismatches: List[PrologueMismatch] = field(default_factory=list,
                                                        metadata=json_meta(sort=("address",)))
    prologue_note: Optional[str] = None  # why no prologue was checked


@dataclass
class TocMap:
    """Every image's TOC, both ways. Plain data: no target access."""

    # one per image (vmlinux and every module), keyed and sorted by module name
    tocs: Dict[str, ModuleToc] = field(
        default_factory=dict, metadata=json_meta(name="images", values=True, sort=("module",)))
    diagnostics: List[Diagnostic] = field(default_factory=list)  # what could not be read

    def toc_of(self, module: Optional[str]) -> Optional[int]:
        """TOC of ``module`` (None or VMLINUX for the kernel); None when unknown."""
        entry = self.tocs.get(module or VMLINUX)
        return entry.toc if entry else None

    def owners(self, value: int) -> List[str]:
        """Images whose TOC is ``value`` (at most one on a sane kernel)."""
        return sorted(name for name, entry in self.tocs.items() if entry.toc == value)

    def toc_owner(self, value: Optional[int]) -> Optional[str]:
        """The image whose TOC is ``value`` (names joined by ``,`` if several), or None."""
        if value is None:
            return None
        names = self.owners(value)
        return ",".join(names) if names else None

    def __iter__(self) -> Iterator[ModuleToc]:
        return iter(self.tocs.values())


# --- findings ---------------------------------------------------------------


FINDING_KINDS = (
    "frame_toc_mismatch",
    "livepatch_stack_toc_mismatch",
    "livepatch_stack_lr_mismatch",
    "livepatch_stack_unidentified",
    "crashed_cpu_toc_mismatch",
    "livepatch_stack_bad_magic",
    "livepatch_stack_out_of_bounds",
    "ret_stack_inconsistent",
    "unreadable_memory",
    "toc_prologue_mismatch",
    "transition_blocked",
)


@dataclass
class Finding:
    # what the checks flagged (docs/architecture.md)
    kind: str = field(metadata=json_meta(choices=FINDING_KINDS))
    severity: str = field(metadata=json_meta(choices=("error", "warning", "info")))  # how bad it is
    pid: Optional[int]  # the task, when the finding belongs to one
    # index into that task's frames; -1 is its returned_frame
    frame: Optional[int]
    address: Optional[int]  # what it is about: a return address, an entry, a pc
    expected_toc: Optional[int]  # the TOC that should be there
    expected_module: Optional[str]  # whose TOC that is
    actual_toc: Optional[int]  # the TOC found
    actual_module: Optional[str]  # the image that TOC belongs to, if any
    message: str  # one line for people
    slot: Optional[int] = None  # address of the word holding actual_toc (stack or livepatch entry)
    # transition_blocked only: the transition and each task holding it back
    transition: Optional[KlpTransition] = None


# --- the verdict --------------------------------------------------------------


@dataclass
class KernelLog:
    """The tail of the kernel's log buffer (printk ring buffer), as dmesg prints it."""

    tail: List[str] = field(default_factory=list)  # the last lines, oldest first
    total_lines: int = 0  # lines in the whole buffer
    error: Optional[str] = None  # why the log could not be read (then tail is empty)


@dataclass
class CrashedTask:
    pid: int  # of the task that was running on the crashed CPU
    comm: str  # its command name
    cpu: Optional[int]  # the CPU it crashed on
    address: int  # of its task_struct
    top_frames: List[str] = field(default_factory=list)  # its true backtrace's innermost frames


@dataclass
class FindingCount:
    kind: str  # a finding kind (see Finding.kind)
    severity: str  # "error", "warning" or "info"
    count: int  # findings of that kind and severity


@dataclass
class Summary:
    """The verdict that opens a report: what happened, in at most 15 lines of text."""

    crashed: bool  # a CPU stopped in a crash (panic/oops) rather than in a live capture
    crash_message: Optional[str]  # the oops/panic line from the kernel log
    crash_lines: List[str] = field(default_factory=list)  # the lines after it in the log
    panic_message: Optional[str] = None  # "Kernel panic - not syncing: ...", when logged
    crashed_task: Optional[CrashedTask] = None  # the task on the crashed CPU; None when not crashed
    livepatches: int = 0  # klp_patch objects the kernel holds
    livepatches_enabled: int = 0  # of those, the enabled ones
    transition: Optional[str] = None  # name of the patch in transition, None when idle
    transition_target: Optional[str] = None  # "patched" or "unpatched"
    transition_blocking: int = 0  # tasks not yet in the target state
    findings: List[FindingCount] = field(default_factory=list)  # by kind and severity
    coverage: Optional[str] = None  # the debug-info coverage line, when computed


# Task-less findings (crashed CPUs, module prologues) first, then by task and
# frame: the order a reader walks the report in.
FINDINGS_ORDER = ("pid", "frame", "kind", "address", "message")


# --- the whole report -------------------------------------------------------


@dataclass
class TriageResult:
    kernel: KernelInfo  # which kernel this is
    livepatch: LivepatchState  # patches, klp_ops, the transition
    ftrace: FtraceState  # ftrace_ops and dyn_ftrace records
    # every task
    tasks: List[TaskTrace] = field(default_factory=list,
                                   metadata=json_meta(sort=("pid", "address")))
    # everything the checks flagged
    findings: List[Finding] = field(default_factory=list, metadata=json_meta(sort=FINDINGS_ORDER))
    # everything the report could not check, wherever it arose (the parts' own lists
    # repeat theirs); any makes the result incomplete
    diagnostics: List[Diagnostic] = field(default_factory=list)
    tocs: Optional[TocMap] = None  # the TOC of vmlinux and every module; None when not computed
    summary: Optional[Summary] = None  # the verdict that opens the report
    kernel_log: Optional[KernelLog] = None  # the last lines of the kernel log buffer
    census: Optional[TaskCensus] = None  # how the tasks were found; None when not enumerated
    coverage: Optional[Coverage] = None  # debug info, filtered and unread parts; None when unknown
