# SPDX-License-Identifier: GPL-2.0-or-later
"""
True backtraces of ppc64 kernel tasks.

What comes in: a ``struct task_struct`` Object. What goes out: a
:class:`~lpdebug.model.TaskTrace` whose frames carry the real return
addresses, each annotated with where it came from, plus the task's shadow
stacks (ret_stack, livepatch stack) and, for a task that was on a CPU when
the dump was taken, that CPU's saved registers.

Entry points: :func:`true_backtrace`; :func:`resolve_return_addresses` (the
resolution alone, over plain values); :func:`frame_at` (one annotated
frame); :func:`cpu_stop` (the facts rule (c) of :mod:`lpdebug.checks` judges
a stopped CPU by). A CPU's saved registers come from
:mod:`lpdebug.crash_notes`, which also says where their unwind starts;
instruction encodings from :mod:`lpdebug.ppc64`.

How a frame's return address is made true, walking outward from frame 0:

1. drgn's unwinding gives each physical frame its ``pc`` and ``sp`` (r1).
   On ppc64 a function saves its return address in its *caller's* frame, at
   ``caller_sp + 16``, so frame k's ``pc`` was read at ``sp_k + 16``, and
   ``sp_k`` is the ``retp`` the graph tracer recorded when it hooked that
   return (r1 at entry to the callee, i.e. the caller's SP;
   ``ftrace_graph_func()`` passes ``fregs->regs.gpr[1]``, and the kernel's
   own ``arch_stack_walk_reliable()`` passes that frame's ``stack``).
2. ``pc == return_to_handler`` (by address: drgn's line table may name it
   ``mcount+0x10``): the ret_stack entry with ``retp == sp_k`` gives the real
   address (source ``fgraph``), walking the shadow stack from the newest
   entry down as the kernel does (:func:`lpdebug.fgraph.fgraph_ret_addr`).
3. ``pc`` inside ``livepatch_handler``: the replacement function C, entered
   from livepatch_handler, saved livepatch_handler's address into A's frame,
   hiding A. The k-th such frame from the top takes the LR of the k-th
   livepatch-stack entry from the top (source ``livepatch``). That LR is
   ``return_to_handler`` when the graph tracer hooked the patched function;
   it is resolved like (2) with ``retp = sp_A``: the patched function was
   entered with A's r1.

Each frame is then annotated: ``toc_restore`` when the instruction at its
true return address is the TOC restore (``ld r2,24(r1)`` ELFv2,
``ld r2,40(r1)`` ELFv1), and then ``toc_slot``, the value of the TOC save
slot at ``sp_k + 24`` (``+ 40``) of the *same* frame: the call that returns
there went through a stub (or was indirect) and saved the caller's r2 at
``r1 + 24`` with r1 = the caller's SP, which is ``sp_k``. An interrupted
frame (a CPU's saved nip) gets ``toc_restored_before_pc`` and its slot when
its function has a TOC restore between its start and nip: r2 may then have
come from that slot, which :mod:`lpdebug.checks` proves by equality. A
stopped CPU also gets ``returned_frame``: the function it returned from
last, whose frame is still intact just below frame 0 (see
:func:`_returned_frame`); it is no frame of the backtrace, which only holds
frames still on the stack.

No frame is ever added or dropped: drgn's frames (inline frames folded into
their physical frame) are the frames; only return addresses are replaced.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import drgn

from .crash_notes import LR_SAVE_OFFSET, CrashStart, cpu_registers, unwind_start
from .fgraph import FgraphCursor, fgraph_ret_addr, read_ret_stack, records_retp, \
    return_to_handler_address
from .kernel import LINEAR_MAP_BASE, cached_fact, elf_abi, has_member, toc_save_offset
from .livepatch_stack import livepatch_stack
from .diagnostics import corrupt, from_exception, missing_debug_info
from .model import (CpuStop, Diagnostic, DiagnosticKind, FgraphEntry, Frame, LivepatchStackEntry,
                    TaskTrace)
from .ppc64 import (MSR_PR, PT_REGS_LINK, PT_REGS_NIP, STUB_ENTRY_SIZE, STUB_MAGIC, STUB_MAGIC_OFFSET,
                    TOC_RESTORE, branch_target, is_toc_prologue, stdu_frame_size)
from .symbols import Symbolizer
from .toc import VMLINUX, module_sections
from .vcpu import pt_regs_object as vcpu_pt_regs, registers_of_task

# drgn refuses addresses it cannot translate (hash-MMU module memory without
# lpdebug.hash_mmu) with NotImplementedError: as unreadable as a fault.
_UNREADABLE = (drgn.FaultError, NotImplementedError)

# The stage of lpdebug.report.triage that builds the true backtraces.
STAGE = "tasks"
# TaskTrace.cpu_unwind of a task running on a paused guest's vCPU: its unwind
# starts at the vCPU's nip and r1 (lpdebug.vcpu).
VCPU_UNWIND = "vcpu"

__all__ = (
    "ResolvedReturn",
    "cpu_stop",
    "frame_at",
    "resolve_return_addresses",
    "true_backtrace",
)

# Code that runs between two images' TOCs by design (see lpdebug.checks, rule (c)).
TRAMPOLINE_SYMBOLS = (
    "ftrace_caller", "ftrace_regs_caller", "ftrace_call", "ftrace_regs_call", "ftrace_stub",
    "ftrace_no_trace", "ftrace_graph_caller", "return_to_handler", ".return_to_handler",
    "livepatch_handler", "ftrace_tramp_text", "ftrace_tramp_init", "_mcount", "mcount",
)
# Bounded: a function longer than this is not worth reading for one frame
# (the largest kernel functions are a few KiB; 64 KiB is 16384 instructions).
MAX_FUNCTION_SCAN = 0x10000
# The prologue's stdu r1,-N(r1) comes within its first instructions: after the
# global-entry pair, mflr r0, the ftrace call site (mflr/std/bl or two nops)
# and the non-volatile register saves that precede it, 16 words reach it.
PROLOGUE_SCAN = 64


def _exception_code_range(prog: drgn.Program) -> Optional[Tuple[int, int]]:
    # Everything below __end_soft_masked is the interrupt vectors and the
    # interrupt entry/exit code: 9d1988ca87dd "powerpc/64: treat low kernel text as irqs
    # soft-masked" (5.14). Older kernels (5.10.223: no __end_soft_masked) bound
    # the vectors only, __start_interrupts..__end_interrupts (exceptions-64s.S);
    # their interrupt return code in entry_64.S is not exempted.
    for start_name, end_name in (("_stext", "__end_soft_masked"),
                                 ("__start_interrupts", "__end_interrupts")):
        try:
            return prog.symbol(start_name).address, prog.symbol(end_name).address
        except LookupError:
            continue
    return None


def _stub_entry_size(prog: drgn.Program) -> int:
    try:
        return drgn.sizeof(prog.type("struct ppc64_stub_entry"))
    except LookupError:
        return STUB_ENTRY_SIZE[1 if elf_abi(prog) == 1 else 2]


def _task_state(task: drgn.Object) -> str:
    from drgn.helpers.linux.sched import task_state_to_char

    try:
        return task_state_to_char(task)
    except Exception:  # noqa: BLE001 (drgn raises a bare Exception on a damaged task_state_array)
        # An unreadable state costs the state, not the task (lpdebug.tasks reports it).
        return "?"


def _task_cpu(task: drgn.Object) -> Optional[int]:
    """The CPU ``task`` is current on, or None."""
    from drgn.helpers.linux.sched import cpu_curr, task_cpu

    try:
        cpu = task_cpu(task)
        if cpu_curr(task.prog_, cpu).value_() == task.value_():
            return cpu
    except (LookupError, *_UNREADABLE, ValueError):
        pass
    return None


def _is_crashed_task(task: drgn.Object) -> bool:
    try:
        thread = task.prog_.crashed_thread()
        return thread.object.value_() == task.value_()
    except (LookupError, ValueError, *_UNREADABLE, AttributeError):
        return False


def _start_registers(prog: drgn.Program, regs: Dict[str, int],
                     start: CrashStart) -> drgn.Object:
    """The ``struct pt_regs`` to unwind a CPU's saved registers from: the
    note's own, with ``nip`` replaced by ``start.pc`` where they differ."""
    saved = drgn.Object(prog, "struct pt_regs", address=regs["pt_regs"])
    if start.pc == regs["nip"]:
        return saved
    data = bytearray(saved.to_bytes_())
    little = bool(prog.platform.flags & drgn.PlatformFlags.IS_LITTLE_ENDIAN)
    data[PT_REGS_NIP * 8:PT_REGS_NIP * 8 + 8] = start.pc.to_bytes(8, "little" if little else "big")
    return drgn.Object.from_bytes_(prog, saved.type_, data)


def _physical_frames(task: drgn.Object, errors: List[Diagnostic],
                     start_regs: Optional[drgn.Object] = None) -> List[Tuple[int, int, bool]]:
    """
    (pc, sp, interrupted) of each physical frame of drgn's unwinding. With
    ``start_regs`` (a CPU's saved registers as ``struct pt_regs``), unwinding
    starts at their ``nip`` and ``r1``.
    """
    prog = task.prog_
    try:
        if start_regs is not None:
            trace = prog.stack_trace(start_regs)
        else:
            trace = prog.stack_trace(task)
    except (ValueError, LookupError, *_UNREADABLE) as e:
        # drgn cannot unwind a task running on a CPU of a live kernel: say which task.
        errors.append(from_exception(STAGE, "the stack trace", e, address=task.value_()))
        return []
    frames: List[Tuple[int, int, bool]] = []
    for frame in trace:
        if frame.is_inline:
            continue
        try:
            pc = frame.pc
        except LookupError:
            errors.append(corrupt(STAGE, None, f"frame {len(frames)}: no pc; the trace stops here"))
            break
        try:
            sp = frame.sp
        except LookupError:
            try:
                sp = frame.register("r1")
            except (LookupError, ValueError):
                errors.append(corrupt(STAGE, None,
                                      f"frame {len(frames)}: no stack pointer; the trace stops here"))
                break
        frames.append((pc, sp, bool(frame.interrupted)))
    return frames


class _Context:
    """Per-program facts a trace needs, looked up once."""

    def __init__(self, prog: drgn.Program, symbolizer: Optional[Symbolizer]) -> None:
        self.prog = prog
        self.symbolizer = symbolizer or Symbolizer(prog)
        self.return_to_handler = return_to_handler_address(prog)
        self.has_retp = records_retp(prog)
        self.abi = elf_abi(prog)
        self.toc_restore = TOC_RESTORE.get(self.abi) if self.abi else None
        self.toc_offset = toc_save_offset(prog)
        try:
            self.livepatch_handler: Optional[int] = prog.symbol("livepatch_handler").address
        except LookupError:
            self.livepatch_handler = None

        self._trampolines = {}
        for name in TRAMPOLINE_SYMBOLS:
            try:
                self._trampolines[prog.symbol(name).address] = name
            except LookupError:
                continue
        self._exception_code = _exception_code_range(prog)
        self._stub_size = _stub_entry_size(prog)
        self._stubs: Optional[Dict[str, int]] = None

    def image_of(self, pc: int) -> Optional[str]:
        """Module name, VMLINUX, or None for an address in neither."""
        module = self.symbolizer.module_of(pc)
        if module is not None:
            return module
        return VMLINUX if self.symbolizer.in_vmlinux(pc) else None

    def _stubs_start(self, module: str) -> Optional[int]:
        if self._stubs is None:
            from drgn.helpers.linux.module import for_each_module

            self._stubs = {}
            try:
                for mod in for_each_module(self.prog):
                    for section, address in module_sections(mod):
                        if section == ".stubs":
                            self._stubs[mod.name.string_().decode(errors="replace")] = address
            except (LookupError, *_UNREADABLE, ValueError):
                pass
        return self._stubs.get(module)

    def _in_stub(self, pc: int, module: str) -> bool:
        start = self._stubs_start(module)
        if start is None or pc < start:
            return False
        entry = start + (pc - start) // self._stub_size * self._stub_size
        try:
            return self.prog.read_u32(entry + STUB_MAGIC_OFFSET) == STUB_MAGIC
        except _UNREADABLE:
            return False

    def cpu_stop(self, pc: int, msr: int) -> CpuStop:
        """What rule (c) needs to know about the code at ``pc`` a CPU stopped at."""
        info = self.symbolizer.lookup(pc)
        module = self.symbolizer.module_of(pc)
        code = self._exception_code
        stop = CpuStop(
            nip=pc, user_mode=bool(msr & MSR_PR),
            exception_code=bool(code and code[0] <= pc < code[1]),
            trampoline=self._trampolines.get(info.address) if info is not None else None,
            module_stub=module is not None and self._in_stub(pc, module),
            function=info.name if info is not None else None,
            function_offset=info.offset if info is not None else None,
            elf_abi=self.abi,
        )
        try:
            stop.at_toc_restore = (self.toc_restore is not None
                                   and self.prog.read_u32(pc) == self.toc_restore)
            if info is not None:
                stop.toc_prologue = is_toc_prologue(self.prog.read_u32(info.address),
                                                    self.prog.read_u32(info.address + 4))
        except _UNREADABLE:
            pass
        return stop

    def in_livepatch_handler(self, pc: int) -> bool:
        if self.livepatch_handler is None:
            return False
        info = self.symbolizer.lookup(pc)
        return info is not None and info.address == self.livepatch_handler


def _context(prog: drgn.Program, symbolizer: Optional[Symbolizer]) -> _Context:
    # A fact of the program: kernel.invalidate() drops it with the Symbolizer
    # it holds, so a context never outlives its Symbolizer.
    ctx = cached_fact(prog, ("lpdebug.backtrace", "context"), lambda: _Context(prog, symbolizer))
    if symbolizer is not None and ctx.symbolizer is not symbolizer:
        ctx = _Context(prog, symbolizer)
    return ctx


def _frame(ctx: _Context, index: int, pc: int, sp: int, raw_pc: int, source: str,
           interrupted: bool, errors: List[Diagnostic], cpu_stopped_here: bool = False) -> Frame:
    info = ctx.symbolizer.lookup(pc)
    frame = Frame(
        index=index, pc=pc, sp=sp,
        symbol=info.name if info else None,
        offset=info.offset if info else None,
        module=info.module if info else ctx.symbolizer.module_of(pc),
        source=source, raw_pc=raw_pc, interrupted=interrupted,
        image=ctx.image_of(pc),
    )
    if ctx.toc_restore is None:
        return frame
    try:
        frame.toc_restore = ctx.prog.read_u32(pc) == ctx.toc_restore
        if cpu_stopped_here and info is not None and not frame.toc_restore:
            frame.toc_restored_before_pc = _restores_toc_before(ctx, info.address, pc)
    except _UNREADABLE:
        errors.append(Diagnostic(STAGE, DiagnosticKind.UNREADABLE, pc,
                                 f"frame {index}: instruction at {pc:#x} unreadable"))
        return frame
    if frame.toc_restore or frame.toc_restored_before_pc:
        frame.toc_slot_address = sp + ctx.toc_offset
        try:
            frame.toc_slot = ctx.prog.read_u64(sp + ctx.toc_offset)
        except _UNREADABLE:
            errors.append(Diagnostic(
                STAGE, DiagnosticKind.UNREADABLE, sp + ctx.toc_offset,
                f"frame {index}: TOC save slot at {sp + ctx.toc_offset:#x} unreadable"))
    return frame


@dataclass
class ResolvedReturn:
    pc: int
    source: str  # "unwound", "fgraph" or "livepatch"
    fgraph_entry: Optional[int] = None  # address of the ret_stack entry that resolved raw pc
    livepatch_entry: Optional[int] = None  # index of the livepatch-stack entry used


def resolve_return_addresses(physical: Sequence[Tuple[int, int, bool]],
                             ret_stack: List[FgraphEntry],
                             livepatch_entries: List[LivepatchStackEntry],
                             return_to_handler: Optional[int],
                             in_livepatch_handler: Callable[[int], bool],
                             has_retp: bool, errors: List[Diagnostic]) -> List[ResolvedReturn]:
    """
    The true return address of each physical frame ``(pc, sp, interrupted)``,
    outermost last, by steps (2) and (3) of the module docstring. Fills each
    used livepatch entry's ``real_lr``. Pure: no target access.
    """
    cursor = FgraphCursor()
    lp_next = len(livepatch_entries) - 1
    result = []
    for index, (raw_pc, sp, interrupted) in enumerate(physical):
        resolved = ResolvedReturn(raw_pc, "unwound")
        if not interrupted and raw_pc == return_to_handler:
            pc, entry = fgraph_ret_addr(ret_stack, raw_pc, sp, return_to_handler, cursor,
                                        has_retp)
            if entry is None:
                errors.append(corrupt(STAGE, sp, f"frame {index}: return_to_handler with no "
                                      f"ret_stack entry for retp {sp:#x}"))
            else:
                resolved = ResolvedReturn(pc, "fgraph", fgraph_entry=entry.address)
        if not interrupted and in_livepatch_handler(resolved.pc):
            if lp_next < 0:
                errors.append(corrupt(STAGE, sp, f"frame {index}: returns into livepatch_handler "
                                      "but the livepatch stack has no entry left"))
            else:
                lp = livepatch_entries[lp_next]
                lp.real_lr, _ = fgraph_ret_addr(ret_stack, lp.lr, sp, return_to_handler,
                                                cursor, has_retp)
                if lp.real_lr == return_to_handler:
                    errors.append(corrupt(
                        STAGE, lp.address,
                        f"frame {index}: livepatch stack entry {lp_next} saved "
                        f"return_to_handler with no ret_stack entry for retp {sp:#x}"))
                resolved = ResolvedReturn(lp.real_lr, "livepatch",
                                          fgraph_entry=resolved.fgraph_entry,
                                          livepatch_entry=lp_next)
                lp_next -= 1
        result.append(resolved)
    if lp_next >= 0 and physical:
        errors.append(corrupt(STAGE, livepatch_entries[lp_next].address,
                              f"livepatch stack entries 0..{lp_next} match no frame returning "
                              "into livepatch_handler"))
    return result


def frame_at(prog: drgn.Program, index: int, pc: int, sp: int, *,
             raw_pc: Optional[int] = None, source: str = "unwound", interrupted: bool = False,
             errors: Optional[List[Diagnostic]] = None,
             symbolizer: Optional[Symbolizer] = None) -> Frame:
    """
    One annotated :class:`~lpdebug.model.Frame` for a true return address
    ``pc`` in the frame at ``sp``: symbol, image, ``toc_restore`` and, where
    it is one, the TOC save slot (``sp + 24`` ELFv2, ``sp + 40`` ELFv1).
    Problems go to ``errors``.
    """
    return _frame(_context(prog, symbolizer), index, pc, sp, pc if raw_pc is None else raw_pc,
                  source, interrupted, [] if errors is None else errors)


def cpu_stop(prog: drgn.Program, pc: int, msr: int, *,
             symbolizer: Optional[Symbolizer] = None) -> CpuStop:
    """
    The facts about the code at ``pc`` (a CPU stopped there with ``msr``)
    from which :func:`lpdebug.checks.cpu_exemption` decides whether the CPU
    may hold an r2 that is not the TOC of the image owning ``pc``.
    """
    return _context(prog, symbolizer).cpu_stop(pc, msr)


def _frame_size(ctx: _Context, start: int, end: int) -> Optional[int]:
    # The prologue's stdu r1,-N(r1), within its first instructions.
    for at in range(start, min(end, start + PROLOGUE_SCAN), 4):
        insn = ctx.prog.read_u32(at)
        size = stdu_frame_size(insn)
        if size is not None:
            return size
    return None


def _returned_frame(ctx: _Context, regs: Dict[str, int],
                    errors: List[Diagnostic]) -> Optional[Frame]:
    """
    The frame of the function a stopped CPU returned from last, when it is
    still intact below frame 0 and returned through a TOC restore: the TOC
    it restored there is the r2 it left the CPU with (a local call's caller
    does not restore r2). Found exactly: the ``bl`` just before the CPU's LR
    names the callee, the callee's ``stdu r1,-N(r1)`` its frame size, and
    the frame's back chain must still point at frame 0's SP.
    """
    link, r1 = regs["link"], regs["r1"]
    try:
        target = branch_target(ctx.prog.read_u32(link - 4), link - 4)
        callee = ctx.symbolizer.lookup(target) if target is not None else None
        if callee is None:
            return None
        size = _frame_size(ctx, callee.address, callee.address + callee.size)
        if size is None or ctx.prog.read_u64(r1 - size) != r1:
            return None
        ret = ctx.prog.read_u64(r1 - size + 16)
    except _UNREADABLE:
        return None
    if not callee.address <= ret < callee.address + callee.size:
        return None
    frame = _frame(ctx, -1, ret, r1 - size, ret, "returned", False, errors)
    return frame if frame.toc_restore else None


# An interrupt's frame on a ppc64 kernel stack: the exception entry code marks it with
# STACK_FRAME_REGS_MARKER and keeps the interrupted registers, a struct pt_regs, in it
# (arch/powerpc/include/asm/ptrace.h; show_stack() in arch/powerpc/kernel/process.c finds
# it so). (marker offset, pt_regs offset, marker values) from the frame's SP: 6.2 and
# later (ELFv2: STACK_INT_FRAME_MARKER = STACK_FRAME_MIN_SIZE 32, STACK_INT_FRAME_REGS
# 48, "REGS"); before (STACK_FRAME_MARKER word 12, pt_regs at STACK_FRAME_OVERHEAD 112;
# "REGS" in 6.1, "regshere" in 5.10).
_INTERRUPT_FRAMES = ((32, 48, (0x53474552, 0x52454753)),
                     (96, 112, (0x53474552, 0x52454753, 0x7265677368657265)))
# Frames a vCPU's unwinding follows at most (drgn's own limit is 1024).
MAX_VCPU_FRAMES = 512


def _interrupt_regs(prog: drgn.Program, sp: int) -> Optional[int]:
    """The address of the struct pt_regs an interrupt's frame at ``sp`` holds, or None."""
    for marker_offset, regs_offset, markers in _INTERRUPT_FRAMES:
        try:
            if prog.read_u64(sp + marker_offset) in markers:
                return sp + regs_offset
        except _UNREADABLE:
            return None
    return None


def _regs_at(prog: drgn.Program, nip: int, r1: int, link: int) -> drgn.Object:
    """A struct pt_regs value holding only ``nip``, ``r1`` and ``link`` (to restart an unwind)."""
    type_ = prog.type("struct pt_regs")
    words = [0] * (drgn.sizeof(type_) // 8)
    words[1], words[PT_REGS_NIP], words[PT_REGS_LINK] = r1, nip, link
    little = bool(prog.platform.flags & drgn.PlatformFlags.IS_LITTLE_ENDIAN)
    return drgn.Object.from_bytes_(
        prog, type_, b"".join(w.to_bytes(8, "little" if little else "big") for w in words))


def _vcpu_frames(ctx: _Context, regs: Dict[str, int], start_regs: drgn.Object,
                 errors: List[Diagnostic], task_address: int) -> List[Tuple[int, int, bool]]:
    """
    (pc, sp, interrupted) of each physical frame of a task running on a
    paused vCPU, from its registers. A vCPU stops anywhere, so three things
    drgn's unwinding misses are taken care of, in every stretch of frames
    that starts from registers (the vCPU's, then each interrupt's):

    - the caller of a frame 0 that owns no frame yet (:func:`_with_leaf_caller`);
    - an interrupt's frame (marked, see :data:`_INTERRUPT_FRAMES`): the
      unwinding goes on from the registers it saved, the interrupted
      function first (drgn would read a stale LR save word instead);
    - a frame that drgn repeats (same pc and SP: a function stopped at its
      ftrace call site, whose DWARF says its return address is still in LR,
      under ftrace_caller's frames): the unwinding goes on by the back
      chain, as ftrace_caller laid it out (arch/powerpc/kernel/trace/
      ftrace_entry.S: B's minimal frame, then A's frame with the original
      return address in its LR save word).
    """
    prog = ctx.prog
    frames: List[Tuple[int, int, bool]] = []
    start: Optional[drgn.Object] = start_regs
    from_registers: Optional[Dict[str, int]] = regs
    seen_regs = set()
    while start is not None and len(frames) < MAX_VCPU_FRAMES:
        try:
            trace = prog.stack_trace(start)
        except (ValueError, LookupError, *_UNREADABLE) as e:
            errors.append(from_exception(STAGE, "the stack trace", e, address=task_address))
            break
        start, restart_registers = None, None
        stretch: List[Tuple[int, int, bool]] = []
        for frame in trace:
            if frame.is_inline:
                continue
            try:
                pc = frame.pc
                sp = frame.sp
            except LookupError:
                break
            if stretch and stretch[-1][:2] == (pc, sp):
                try:
                    caller_sp = prog.read_u64(sp)
                    ret = prog.read_u64(caller_sp + LR_SAVE_OFFSET)
                except _UNREADABLE:
                    break
                if caller_sp > sp:
                    start = _regs_at(prog, ret, caller_sp, ret)
                break
            stretch.append((pc, sp, bool(frame.interrupted)))
            regs_address = _interrupt_regs(prog, sp)
            if regs_address is not None and regs_address not in seen_regs:
                seen_regs.add(regs_address)
                saved = drgn.Object(prog, "struct pt_regs", address=regs_address)
                try:
                    restart_registers = {"nip": saved.nip.value_(), "r1": saved.gpr[1].value_(),
                                         "link": saved.link.value_()}
                    from_user = bool(saved.msr.value_() & MSR_PR)
                except _UNREADABLE:
                    break
                if not from_user:  # an interrupt from user mode ends the kernel's frames
                    start = saved
                break
        if from_registers is not None and stretch:
            stretch = _with_leaf_caller(ctx, from_registers, stretch)
        frames.extend(stretch)
        from_registers = restart_registers
    return frames[:MAX_VCPU_FRAMES]


def _at_interrupt_vector(ctx: _Context, regs: Dict[str, int]) -> bool:
    """
    A vCPU stopped at the first instruction of an interrupt vector
    (``exc_real_*``/``exc_virt_*``, the labels EXC_REAL_BEGIN and
    EXC_VIRT_BEGIN give them in arch/powerpc/kernel/exceptions-64s.S): every
    register still holds the interrupted code's, SRR0 and SRR1 its nip and
    MSR (when the registers' source has them: QEMU's monitor does).
    """
    info = ctx.symbolizer.lookup(regs["nip"])
    return (info is not None and info.offset == 0
            and info.name.startswith(("exc_real_", "exc_virt_")))


def _with_leaf_caller(ctx: _Context, regs: Dict[str, int],
                      physical: List[Tuple[int, int, bool]]) -> List[Tuple[int, int, bool]]:
    """
    ``physical`` with the caller of a CPU's frame 0 put back when drgn's
    back-chain unwinding skipped it. A function that has not saved its LR
    (a leaf such as plpar_hcall_norets_notrace(), or one stopped before its
    prologue's std r0,16(r1)) owns no frame yet, and drgn's fallback unwinder
    (libdrgn/arch_ppc64.c, fallback_unwind_ppc64: "this may skip the caller
    of a leaf function") takes frame 1 from r1's back chain, the caller's
    caller. The caller is the CPU's LR exactly when the instruction before
    LR is a ``bl`` to frame 0's function (its global or local entry) and
    frame 1 is not already there; its frame is r1's (the callee has none).
    """
    nip, r1, link = regs["nip"], regs["r1"], regs["link"]
    if len(physical) > 1 and physical[1][0] == link:
        return physical
    function = ctx.symbolizer.lookup(nip)
    if function is None or link < 4:
        return physical
    try:
        target = branch_target(ctx.prog.read_u32(link - 4), link - 4)
    except _UNREADABLE:
        return physical
    # ELFv2's local entry follows the two-instruction global-entry TOC setup.
    if target not in (function.address, function.address + 8):
        return physical
    return [physical[0], (link, r1, False), *physical[1:]]


def _restores_toc_before(ctx: _Context, start: int, pc: int) -> bool:
    if not start <= pc < start + MAX_FUNCTION_SCAN:
        return False
    code = ctx.prog.read(start, pc - start)
    fmt = "<" if ctx.prog.platform.flags & drgn.PlatformFlags.IS_LITTLE_ENDIAN else ">"
    restore = struct.pack(fmt + "I", ctx.toc_restore)
    return any(code[i:i + 4] == restore for i in range(0, len(code) - 3, 4))


def true_backtrace(task: drgn.Object, *, symbolizer: Optional[Symbolizer] = None) -> TaskTrace:
    """
    A task's true backtrace (see the module docstring).

    :param task: ``struct task_struct *``
    :param symbolizer: a shared :class:`~lpdebug.symbols.Symbolizer`
        (one is built, and cached on the program, otherwise).
    """
    prog = task.prog_
    ctx = _context(prog, symbolizer)
    trace = TaskTrace(
        pid=task.pid.value_(),
        comm=task.comm.string_().decode(errors="replace"),
        state=_task_state(task),
        patch_state=task.patch_state.value_()
        if has_member(prog, "struct task_struct", "patch_state") else None,
        address=task.value_(),
    )
    trace.ret_stack, trace.ret_stack_diagnostics = read_ret_stack(task)

    trace.on_cpu = _task_cpu(task)
    on_vcpu = registers_of_task(task)
    if on_vcpu is not None:
        # A paused guest: the task runs on a vCPU whose registers were read at the pause.
        trace.on_cpu, trace.cpu_registers = on_vcpu
        trace.cpu_unwind = VCPU_UNWIND
    elif trace.on_cpu is not None and not (prog.flags & drgn.ProgramFlags.IS_LIVE):
        trace.cpu_registers = cpu_registers(prog, trace.on_cpu)
        trace.crashed = trace.cpu_registers is not None and _is_crashed_task(task)

    start_regs = None
    stopped_at_nip = False
    in_user_mode = False
    if on_vcpu is not None:
        stopped_at_nip = True
        # A vCPU stopped in user mode, or between an interrupt's entry from user mode (or
        # its return there) and the switch of r1 to (from) the kernel stack: no kernel frame.
        in_user_mode = (bool(on_vcpu[1]["msr"] & MSR_PR)
                        or on_vcpu[1]["r1"] < LINEAR_MAP_BASE)
        start_regs = vcpu_pt_regs(prog, task)
    elif trace.cpu_registers is not None:
        start = unwind_start(trace.cpu_registers, prog.read_u64)
        trace.cpu_unwind = start.how
        stopped_at_nip = start.pc == trace.cpu_registers["nip"]
        try:
            start_regs = _start_registers(prog, trace.cpu_registers, start)
        except LookupError as e:
            trace.diagnostics.append(from_exception(
                STAGE, f"CPU {trace.on_cpu}: its saved registers as struct pt_regs", e))
    # A task in user mode has no kernel frames: its kernel stack is empty.
    if in_user_mode:
        physical: List[Tuple[int, int, bool]] = []
    elif on_vcpu is not None and start_regs is not None:
        physical = _vcpu_frames(ctx, on_vcpu[1], start_regs, trace.diagnostics, task.value_())
        interrupted = (vcpu_pt_regs(prog, task, interrupted=True)
                       if physical and _at_interrupt_vector(ctx, on_vcpu[1]) else None)
        if interrupted is not None:
            # The vCPU has just taken an interrupt: the interrupted function (SRR0) and its
            # callers, from the same registers, follow the vector (none from user mode).
            regs = dict(on_vcpu[1], nip=interrupted.nip.value_())
            from_user = bool(interrupted.msr.value_() & MSR_PR)
            physical = physical[:1] + ([] if from_user else _vcpu_frames(
                ctx, regs, interrupted, trace.diagnostics, task.value_()))
    else:
        physical = _physical_frames(task, trace.diagnostics, start_regs)
    if trace.cpu_registers is not None:
        nip = trace.cpu_registers["nip"]
        trace.cpu_image = ctx.image_of(nip)
        trace.cpu_stop = ctx.cpu_stop(nip, trace.cpu_registers["msr"])
    running_sp = physical[0][1] if physical and trace.on_cpu is not None else None
    if trace.cpu_registers is not None and not in_user_mode:
        running_sp = trace.cpu_registers["r1"]
    trace.livepatch_stack = livepatch_stack(task, sp=running_sp)
    lp_entries = trace.livepatch_stack.entries if trace.livepatch_stack else []

    for index, resolved in enumerate(resolve_return_addresses(
            physical, trace.ret_stack, lp_entries, ctx.return_to_handler,
            ctx.in_livepatch_handler, ctx.has_retp, trace.diagnostics)):
        raw_pc, sp, interrupted = physical[index]
        frame = _frame(ctx, index, resolved.pc, sp, raw_pc, resolved.source, interrupted,
                       trace.diagnostics, cpu_stopped_here=index == 0 and stopped_at_nip)
        frame.fgraph_entry = resolved.fgraph_entry
        frame.livepatch_entry = resolved.livepatch_entry
        trace.frames.append(frame)
    if trace.cpu_registers is not None and not in_user_mode:
        trace.returned_frame = _returned_frame(ctx, trace.cpu_registers, trace.diagnostics)
    if lp_entries and ctx.livepatch_handler is None:
        trace.diagnostics.append(missing_debug_info(
            STAGE, "livepatch_handler is not in the symbol table: the callers it hides cannot be "
            "restored"))
    return trace

