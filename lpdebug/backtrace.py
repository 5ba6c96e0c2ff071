"""
True backtraces of ppc64 kernel tasks.

What comes in: a ``struct task_struct`` Object. What goes out: a
:class:`~lpdebug.model.TaskTrace` whose frames carry the real return
addresses, each annotated with where it came from, plus the task's shadow
stacks (ret_stack, livepatch stack) and, for a task that was on a CPU when
the dump was taken, that CPU's saved registers.

Entry points: :func:`true_backtrace`; :func:`resolve_return_addresses` (the
resolution alone, over plain values); :func:`cpu_registers`,
:func:`crashed_cpus`, :func:`cpu_tasks` (every stopped CPU's task, idle
tasks included).

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

from .fgraph import FgraphCursor, fgraph_ret_addr, read_ret_stack, records_retp, \
    return_to_handler_address
from .kernel import elf_abi, has_member, is_ppc64, toc_save_offset
from .livepatch_stack import livepatch_stack
from .model import FgraphEntry, Frame, LivepatchStackEntry, TaskTrace
from .symbols import Symbolizer
from .toc import ADDI_R2_R2, ADDIS_R2_R12, HI_MASK, VMLINUX, module_sections

# drgn refuses addresses it cannot translate (hash-MMU module memory without
# lpdebug.hash_mmu) with NotImplementedError: as unreadable as a fault.
_UNREADABLE = (drgn.FaultError, NotImplementedError)

__all__ = (
    "TOC_RESTORE",
    "ResolvedReturn",
    "cpu_registers",
    "crashed_cpus",
    "cpu_exemption",
    "cpu_tasks",
    "frame_at",
    "resolve_return_addresses",
    "true_backtrace",
)

# ld r2,24(r1) / ld r2,40(r1), keyed by ELF ABI version.
TOC_RESTORE = {2: 0xE8410018, 1: 0xE8410028}

# Code that runs between two images' TOCs by design (see lpdebug.checks).
EXEMPT_SYMBOLS = (
    "ftrace_caller", "ftrace_regs_caller", "ftrace_call", "ftrace_regs_call", "ftrace_stub",
    "ftrace_no_trace", "ftrace_graph_caller", "return_to_handler", ".return_to_handler",
    "livepatch_handler", "ftrace_tramp_text", "ftrace_tramp_init", "_mcount", "mcount",
)
STUB_MAGIC = 0x73747562
STUB_MAGIC_OFFSET = 28
MSR_PR = 1 << 14
STDU_R1_R1 = 0xF8210001  # stdu r1,d(r1), displacement in bits 2-15

NT_PRSTATUS = 1
# Offsets used only when the debug info lacks struct elf_prstatus.
PRSTATUS_PID_OFFSET = 32
PRSTATUS_REG_OFFSET = 112
GPR_NIP, GPR_MSR, GPR_LINK = 32, 33, 36


def _exception_code_range(prog: drgn.Program) -> Optional[Tuple[int, int]]:
    # Everything below __end_soft_masked is the interrupt vectors and the
    # interrupt entry/exit code (5.14+); older kernels bound the vectors only.
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
        return 56 if elf_abi(prog) == 1 else 40


def _task_state(task: drgn.Object) -> str:
    from drgn.helpers.linux.sched import task_state_to_char

    try:
        return task_state_to_char(task)
    except (LookupError, *_UNREADABLE, ValueError):
        return "?"


def _prstatus_offsets(prog: drgn.Program) -> Tuple[int, int]:
    """Offsets of the pid and the registers in ``struct elf_prstatus``
    (recent kernels keep the pid in ``common``)."""
    try:
        tp = prog.type("struct elf_prstatus")
    except LookupError:
        return PRSTATUS_PID_OFFSET, PRSTATUS_REG_OFFSET
    offsets = []
    for designators, fallback in ((("common.pr_pid", "pr_pid"), PRSTATUS_PID_OFFSET),
                                  (("pr_reg",), PRSTATUS_REG_OFFSET)):
        for designator in designators:
            try:
                offsets.append(drgn.offsetof(tp, designator))
                break
            except (LookupError, ValueError):
                continue
        else:
            offsets.append(fallback)
    return offsets[0], offsets[1]


def cpu_registers(prog: drgn.Program, cpu: int) -> Optional[Dict[str, int]]:
    """
    The registers CPU ``cpu`` saved in its ``crash_notes`` NT_PRSTATUS when
    the kernel crashed (the same note kdump copies into the vmcore):
    ``{"pid", "nip", "r1", "r2", "link", "msr", "pt_regs"}`` (``pt_regs``:
    where the registers are, laid out as ``struct pt_regs``). None when the
    kernel did not crash on the way to this dump (the note is still empty),
    has no crash_notes, or is not ppc64.

    Read here rather than through drgn's thread because drgn starts a
    ppc64 kernel NT_PRSTATUS trace at ``link``, not at ``nip``: the function
    the CPU was executing would be missing.
    """
    from drgn.helpers.linux.percpu import per_cpu_ptr

    if not is_ppc64(prog):
        return None
    try:
        note = per_cpu_ptr(prog["crash_notes"], cpu).value_()
        header = prog.read(note, 12)
    except (LookupError, *_UNREADABLE, ValueError):
        return None
    little = bool(prog.platform.flags & drgn.PlatformFlags.IS_LITTLE_ENDIAN)
    end = "<" if little else ">"
    namesz, descsz, ntype = struct.unpack(end + "3I", header)
    if ntype != NT_PRSTATUS or namesz == 0 or descsz == 0:
        return None
    desc = note + 12 + ((namesz + 3) & ~3)
    pid_offset, reg_offset = _prstatus_offsets(prog)
    try:
        pid = struct.unpack(end + "i", prog.read(desc + pid_offset, 4))[0]
        regs = struct.unpack(end + "48Q", prog.read(desc + reg_offset, 48 * 8))
    except _UNREADABLE:
        return None
    return {"pid": pid, "nip": regs[GPR_NIP], "r1": regs[1], "r2": regs[2],
            "link": regs[GPR_LINK], "msr": regs[GPR_MSR], "pt_regs": desc + reg_offset}


def crashed_cpus(prog: drgn.Program) -> Dict[int, Dict[str, int]]:
    """Every CPU with saved crash registers: ``{cpu: cpu_registers(prog, cpu)}``."""
    from drgn.helpers.linux.cpumask import for_each_possible_cpu

    result = {}
    try:
        cpus = list(for_each_possible_cpu(prog))
    except (LookupError, *_UNREADABLE):
        return result
    for cpu in cpus:
        regs = cpu_registers(prog, cpu)
        if regs is not None:
            result[cpu] = regs
    return result


def cpu_tasks(prog: drgn.Program) -> List[drgn.Object]:
    """
    The task current on each CPU that saved crash registers, including idle
    tasks, which the task list does not hold: callers that trace every task
    add these so that every stopped CPU gets rule (c).
    """
    from drgn.helpers.linux.sched import cpu_curr

    tasks = []
    for cpu in crashed_cpus(prog):
        try:
            tasks.append(cpu_curr(prog, cpu))
        except (LookupError, *_UNREADABLE, ValueError):
            continue
    return tasks


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


def _physical_frames(task: drgn.Object, errors: List[str],
                     regs_address: Optional[int] = None) -> List[Tuple[int, int, bool]]:
    """
    (pc, sp, interrupted) of each physical frame of drgn's unwinding. With
    ``regs_address`` (a CPU's saved registers, laid out as the start of
    ``struct pt_regs``), unwinding starts at the saved ``nip``.
    """
    prog = task.prog_
    try:
        if regs_address is not None:
            trace = prog.stack_trace(drgn.Object(prog, "struct pt_regs", address=regs_address))
        else:
            trace = prog.stack_trace(task)
    except (ValueError, LookupError, *_UNREADABLE) as e:
        errors.append(f"no stack trace: {e}")
        return []
    frames = []
    for frame in trace:
        if frame.is_inline:
            continue
        try:
            pc = frame.pc
        except LookupError:
            errors.append(f"frame {len(frames)}: no pc; the trace stops here")
            break
        try:
            sp = frame.sp
        except LookupError:
            try:
                sp = frame.register("r1")
            except (LookupError, ValueError):
                errors.append(f"frame {len(frames)}: no stack pointer; the trace stops here")
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
        abi = elf_abi(prog)
        self.toc_restore = TOC_RESTORE.get(abi) if abi else None
        self.toc_offset = toc_save_offset(prog)
        try:
            self.livepatch_handler: Optional[int] = prog.symbol("livepatch_handler").address
        except LookupError:
            self.livepatch_handler = None

        self._exempt_symbols = {}
        for name in EXEMPT_SYMBOLS:
            try:
                self._exempt_symbols[prog.symbol(name).address] = name
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

    def exemption(self, pc: int, msr: int) -> Optional[str]:
        """
        Why code at ``pc`` may legitimately run with an r2 that is not its own
        image's TOC, or None when r2 must be that TOC. See :mod:`lpdebug.checks`
        for the list and the reasons.
        """
        if msr & MSR_PR:
            return "user mode"
        if self._exception_code and self._exception_code[0] <= pc < self._exception_code[1]:
            return "exception entry/exit code"
        info = self.symbolizer.lookup(pc)
        if info is not None and info.address in self._exempt_symbols:
            return f"ftrace/livepatch trampoline {self._exempt_symbols[info.address]}"
        module = self.symbolizer.module_of(pc)
        if module is not None and self._in_stub(pc, module):
            return "module stub (.stubs): runs with the caller's r2"
        try:
            if self.toc_restore is not None and self.prog.read_u32(pc) == self.toc_restore:
                return "at a TOC restore: r2 is still the returning callee's"
            if info is not None:
                first = self.prog.read_u32(info.address)
                second = self.prog.read_u32(info.address + 4)
                has_prologue = (first & HI_MASK == ADDIS_R2_R12 and second & HI_MASK == ADDI_R2_R2)
                if has_prologue and info.offset < 8:
                    return "global-entry prologue: r2 not yet set from r12"
                if not has_prologue and self.toc_restore == TOC_RESTORE[2]:
                    return f"{info.name} has no TOC prologue: it keeps its caller's r2"
        except _UNREADABLE:
            return None
        return None

    def in_livepatch_handler(self, pc: int) -> bool:
        if self.livepatch_handler is None:
            return False
        info = self.symbolizer.lookup(pc)
        return info is not None and info.address == self.livepatch_handler


def _context(prog: drgn.Program, symbolizer: Optional[Symbolizer]) -> _Context:
    key = "lpdebug.backtrace.context"
    ctx = prog.cache.get(key)
    if ctx is None or (symbolizer is not None and ctx.symbolizer is not symbolizer):
        ctx = _Context(prog, symbolizer)
        prog.cache[key] = ctx
    return ctx


def _frame(ctx: _Context, index: int, pc: int, sp: int, raw_pc: int, source: str,
           interrupted: bool, errors: List[str], cpu_stopped_here: bool = False) -> Frame:
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
        errors.append(f"frame {index}: instruction at {pc:#x} unreadable")
        return frame
    if frame.toc_restore or frame.toc_restored_before_pc:
        frame.toc_slot_address = sp + ctx.toc_offset
        try:
            frame.toc_slot = ctx.prog.read_u64(sp + ctx.toc_offset)
        except _UNREADABLE:
            errors.append(f"frame {index}: TOC save slot at {sp + ctx.toc_offset:#x} unreadable")
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
                             has_retp: bool, errors: List[str]) -> List[ResolvedReturn]:
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
                errors.append(f"frame {index}: return_to_handler with no ret_stack entry "
                              f"for retp {sp:#x}")
            else:
                resolved = ResolvedReturn(pc, "fgraph", fgraph_entry=entry.address)
        if not interrupted and in_livepatch_handler(resolved.pc):
            if lp_next < 0:
                errors.append(f"frame {index}: returns into livepatch_handler but the "
                              "livepatch stack has no entry left")
            else:
                lp = livepatch_entries[lp_next]
                lp.real_lr, _ = fgraph_ret_addr(ret_stack, lp.lr, sp, return_to_handler,
                                                cursor, has_retp)
                if lp.real_lr == return_to_handler:
                    errors.append(f"frame {index}: livepatch stack entry {lp_next} saved "
                                  f"return_to_handler with no ret_stack entry for retp {sp:#x}")
                resolved = ResolvedReturn(lp.real_lr, "livepatch",
                                          fgraph_entry=resolved.fgraph_entry,
                                          livepatch_entry=lp_next)
                lp_next -= 1
        result.append(resolved)
    if lp_next >= 0 and physical:
        errors.append(f"livepatch stack entries 0..{lp_next} match no frame returning into "
                      "livepatch_handler")
    return result


def frame_at(prog: drgn.Program, index: int, pc: int, sp: int, *,
             raw_pc: Optional[int] = None, source: str = "unwound", interrupted: bool = False,
             errors: Optional[List[str]] = None,
             symbolizer: Optional[Symbolizer] = None) -> Frame:
    """
    One annotated :class:`~lpdebug.model.Frame` for a true return address
    ``pc`` in the frame at ``sp``: symbol, image, ``toc_restore`` and, where
    it is one, the TOC save slot (``sp + 24`` ELFv2, ``sp + 40`` ELFv1).
    Problems go to ``errors``.
    """
    return _frame(_context(prog, symbolizer), index, pc, sp, pc if raw_pc is None else raw_pc,
                  source, interrupted, [] if errors is None else errors)


def cpu_exemption(prog: drgn.Program, pc: int, msr: int, *,
                  symbolizer: Optional[Symbolizer] = None) -> Optional[str]:
    """
    Why a CPU stopped at ``pc`` (with ``msr``) may legitimately hold an r2
    that is not the TOC of the image owning ``pc``, or None when it must hold
    that TOC (the exemptions of rule (c), see :mod:`lpdebug.checks`).
    """
    return _context(prog, symbolizer).exemption(pc, msr)


def _branch_target(insn: int, at: int) -> Optional[int]:
    if insn & 0xFC000003 != 0x48000001:  # bl, relative
        return None
    offset = insn & 0x03FFFFFC
    if offset & 0x02000000:
        offset -= 0x04000000
    return at + offset


def _frame_size(ctx: _Context, start: int, end: int) -> Optional[int]:
    # The prologue's stdu r1,-N(r1), within its first instructions.
    for at in range(start, min(end, start + 64), 4):
        insn = ctx.prog.read_u32(at)
        if insn & 0xFFFF0003 == STDU_R1_R1:
            displacement = insn & 0xFFFC
            if displacement & 0x8000:
                displacement -= 0x10000
            return -displacement if displacement < 0 else None
    return None


def _returned_frame(ctx: _Context, regs: Dict[str, int], errors: List[str]) -> Optional[Frame]:
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
        target = _branch_target(ctx.prog.read_u32(link - 4), link - 4)
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


def _restores_toc_before(ctx: _Context, start: int, pc: int) -> bool:
    # Bounded: a function longer than this is not worth reading for one frame.
    if not start <= pc < start + 0x10000:
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
    trace.ret_stack, trace.ret_stack_errors = read_ret_stack(task)

    trace.on_cpu = _task_cpu(task)
    if trace.on_cpu is not None and not (prog.flags & drgn.ProgramFlags.IS_LIVE):
        trace.cpu_registers = cpu_registers(prog, trace.on_cpu)
        trace.crashed = trace.cpu_registers is not None and _is_crashed_task(task)

    regs_address = trace.cpu_registers["pt_regs"] if trace.cpu_registers else None
    physical = _physical_frames(task, trace.errors, regs_address)
    if trace.cpu_registers is not None:
        nip = trace.cpu_registers["nip"]
        trace.cpu_image = ctx.image_of(nip)
        trace.cpu_exempt = ctx.exemption(nip, trace.cpu_registers["msr"])
    running_sp = physical[0][1] if physical and trace.on_cpu is not None else None
    if trace.cpu_registers is not None:
        running_sp = trace.cpu_registers["r1"]
    trace.livepatch_stack = livepatch_stack(task, sp=running_sp)
    lp_entries = trace.livepatch_stack.entries if trace.livepatch_stack else []

    for index, resolved in enumerate(resolve_return_addresses(
            physical, trace.ret_stack, lp_entries, ctx.return_to_handler,
            ctx.in_livepatch_handler, ctx.has_retp, trace.errors)):
        raw_pc, sp, interrupted = physical[index]
        frame = _frame(ctx, index, resolved.pc, sp, raw_pc, resolved.source, interrupted,
                       trace.errors, cpu_stopped_here=index == 0 and regs_address is not None)
        frame.fgraph_entry = resolved.fgraph_entry
        frame.livepatch_entry = resolved.livepatch_entry
        trace.frames.append(frame)
    if trace.cpu_registers is not None:
        trace.returned_frame = _returned_frame(ctx, trace.cpu_registers, trace.errors)
    if lp_entries and ctx.livepatch_handler is None:
        trace.errors.append("livepatch_handler is not in the symbol table: the callers it "
                            "hides cannot be restored")
    return trace

