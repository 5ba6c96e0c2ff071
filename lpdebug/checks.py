# SPDX-License-Identifier: GPL-2.0-or-later
"""
TOC and shadow-stack findings: pure functions over model objects.

What comes in: :class:`~lpdebug.model.TaskTrace` objects from
:func:`lpdebug.backtrace.true_backtrace`, a :class:`~lpdebug.toc.TocMap`
from :func:`lpdebug.toc.module_tocs` and a
:class:`~lpdebug.model.LivepatchState`. What goes out: lists of
:class:`~lpdebug.model.Finding`. Nothing here reads the target.

Entry points:

- :func:`check_frames` -- rule (a), per task.
- :func:`check_livepatch_stack` -- rule (b) and the livepatch-stack part of
  rule (d), per task.
- :func:`check_crashed_cpus` -- rule (c), over all traces.
- :func:`cpu_exemption` -- rule (c)'s exemptions: why a stopped CPU may hold
  another image's r2.
- :func:`check_livepatch_stack_structure` -- the livepatch-stack part of
  rule (d) alone (no TOCs needed).
- :func:`check_shadow_stacks` -- the rest of rule (d), per task.
- :func:`check_tocs` -- module TOCs against their functions' prologues.
- :func:`check_transition` -- a livepatch transition that tasks hold back.
- :func:`check_task` -- every per-task rule for one task.
- :func:`all_findings` -- everything, for :func:`lpdebug.report.triage`.

Rules (from ``ld r2,24(r1)``, read ``ld r2,40(r1)`` on ELFv1):

(a) ``frame_toc_mismatch``: a frame whose true return address is the TOC
    restore ``ld r2,24(r1)`` was left by a call that saved the caller's r2 in
    the frame's TOC save slot (a cross-module stub or an indirect call). The
    slot must hold the TOC of the image (module or vmlinux) owning the return
    address: that is the r2 the restore is about to load. The same holds for
    a CPU's interrupted frame that already executed such a restore (its
    function has one before nip) and for the callee the CPU returned from
    last (``TaskTrace.returned_frame``, frame index -1, still intact below
    frame 0), when the CPU's r2 equals the slot: the CPU runs on the TOC that
    frame carried, so the frame is flagged too.

(b) ``livepatch_stack_toc_mismatch``: ``livepatch_handler`` saves the r2 in
    effect at the patched (old) function's ftrace site. The old function's
    global entry (cross-module call) or its caller in the same image (local
    call) had set r2 to the TOC of the old function's image, so each entry's
    saved r2 must be that TOC. The old function is found through the
    ``klp_func`` whose new function is running in the frame that returns into
    ``livepatch_handler`` (the frame just inside the one the entry restored).
    Cross-check, ``livepatch_stack_lr_mismatch``: when the real LR is not a
    TOC restore the call was local, so the real LR must lie in the old
    function's image too. When no ``klp_func`` identifies the replacement,
    ``livepatch_stack_unidentified`` (info) says so and the weaker check runs:
    a local call's entry must hold the TOC of the real LR's image; a
    cross-module call's entry must hold some image's TOC.

(c) ``crashed_cpu_toc_mismatch``: a CPU's r2 saved in the dump must be the
    TOC of the image owning its nip, except where code runs between two TOCs
    by design (:func:`cpu_exemption`, judged from the facts
    :func:`lpdebug.backtrace.cpu_stop` read from the target and carried in
    ``TaskTrace.cpu_stop``):

    - user mode (MSR_PR): r2 is the user program's.
    - exception entry/exit code (below ``__end_soft_masked``; the interrupt
      vectors on older kernels): entry runs with the interrupted context's r2
      until it loads the kernel TOC from the paca, exit restores the
      interrupted r2 before ``rfid``.
    - module stubs (``.stubs`` entries, recognised by their STUB_MAGIC,
      including the module ftrace trampolines ``mod->arch.tramp`` and
      ``tramp_regs``, which are built the same way): a stub only saves r2
      and branches, still with the caller's TOC.
    - ``ftrace_caller``, ``ftrace_regs_caller`` (and their inner labels),
      ``ftrace_stub``, ``_mcount``, ``return_to_handler``,
      ``livepatch_handler`` and the far ``ftrace_tramp_*`` trampolines: they
      run between a traced function and its caller with either side's r2
      until they load the kernel TOC, and return_to_handler and
      livepatch_handler restore the caller's r2 before returning.
    - the first two instructions of a function with a global-entry prologue:
      r2 still holds the caller's TOC until ``addis``/``addi`` compute it.
    - a pc sitting on a TOC restore: the callee has returned and r2 is still
      the callee's until this instruction executes.
    - a function without a global-entry prologue (ELFv2): it never sets r2,
      so it runs with its caller's.

(d) ``livepatch_stack_bad_magic``, ``livepatch_stack_out_of_bounds``,
    ``ret_stack_inconsistent`` and ``unreadable_memory``: the shadow stacks
    and the memory the rules above needed.

``toc_prologue_mismatch``: a module's TOC from its sections differs from the
one its functions' ``addis r2,r12``/``addi r2,r2`` prologues compute.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional

from .model import (BlockingTask, CpuStop, Diagnostic, DiagnosticKind, Finding, KlpFunc,
                    KlpTransition, LivepatchState, TaskTrace, TocMap)
from .toc import VMLINUX

__all__ = (
    "all_findings",
    "check_crashed_cpus",
    "check_frames",
    "check_livepatch_stack",
    "check_livepatch_stack_structure",
    "check_shadow_stacks",
    "check_task",
    "check_tocs",
    "check_transition",
    "cpu_exemption",
)


def _hex(value: Optional[int]) -> str:
    return "?" if value is None else f"{value:#x}"


def _label(image: Optional[str]) -> str:
    return image if image else "no image"


def check_frames(trace: TaskTrace, tocs: TocMap) -> List[Finding]:
    """Rule (a) over one task's true backtrace."""
    findings = []
    returned = [trace.returned_frame] if trace.returned_frame is not None else []
    for frame in trace.frames + returned:
        if frame.toc_slot is None or frame.image is None:
            continue
        cpu_r2 = trace.cpu_registers["r2"] if trace.cpu_registers is not None else None
        if frame.index < 0:
            if cpu_r2 != frame.toc_slot:
                continue
            how = ("(the callee frame 0 returned from last, still intact below it) returned "
                   "through the TOC restore at {where} [{image}] and left the CPU on its slot,")
        elif frame.toc_restore:
            how = "returns to {where} [{image}], a TOC restore,"
        elif frame.toc_restored_before_pc and cpu_r2 == frame.toc_slot:
            # The CPU's r2 equals the slot its function restores r2 from:
            # the CPU is running on the TOC this frame carried.
            how = "stopped at {where} [{image}] with r2 restored from its slot,"
        else:
            continue
        expected = tocs.toc_of(frame.image)
        if expected is None or frame.toc_slot == expected:
            continue
        where = f"{frame.symbol}+{frame.offset:#x}" if frame.symbol else _hex(frame.pc)
        findings.append(Finding(
            kind="frame_toc_mismatch", severity="error", pid=trace.pid, frame=frame.index,
            address=frame.pc, expected_toc=expected, expected_module=frame.image,
            actual_toc=frame.toc_slot, actual_module=tocs.toc_owner(frame.toc_slot),
            slot=frame.toc_slot_address,
            message=(f"frame {frame.index} " + how.format(where=where, image=frame.image)
                     + f" but its TOC save slot {_hex(frame.toc_slot_address)} holds "
                     f"{frame.toc_slot:#x} ({_label(tocs.toc_owner(frame.toc_slot))}), not "
                     f"{frame.image}'s TOC {expected:#x}"),
        ))
    return findings


def _replacement_funcs(state: Optional[LivepatchState], pc: int,
                       function_start: Optional[int]) -> List[KlpFunc]:
    if state is None:
        return []
    found = []
    for patch in state.patches:
        for obj in patch.objects:
            for func in obj.funcs:
                if func.nop or not func.new_addr:
                    continue
                inside = func.new_size and func.new_addr <= pc < func.new_addr + func.new_size
                if inside or func.new_addr == function_start:
                    found.append(func)
    return found


def check_livepatch_stack_structure(trace: TaskTrace,
                                    tocs: Optional[TocMap] = None) -> List[Finding]:
    """Rule (d) for the livepatch stack: bounds, magic, unreadable entries."""
    lp = trace.livepatch_stack
    if lp is None:
        return []
    tocs = tocs or TocMap()
    findings = []
    pid = trace.pid
    if lp.bounds_error is not None:
        findings.append(Finding(
            kind="livepatch_stack_out_of_bounds", severity="error", pid=pid, frame=None,
            address=lp.sp, expected_toc=None, expected_module=None, actual_toc=None,
            actual_module=None, message=lp.bounds_error.message))
    findings.extend(_unreadable(pid, d) for d in lp.diagnostics
                    if d.kind == DiagnosticKind.UNREADABLE)
    for i, entry in enumerate(lp.entries):
        if not entry.magic_ok:
            findings.append(Finding(
                kind="livepatch_stack_bad_magic", severity="error", pid=pid, frame=None,
                address=entry.address + 16, expected_toc=None, expected_module=None,
                actual_toc=entry.toc, actual_module=tocs.toc_owner(entry.toc),
                message=(f"livepatch stack entry {i} at {entry.address:#x} has magic "
                         f"{entry.magic:#x}, not STACK_END_MAGIC 0x57ac6e9d: "
                         "livepatch_handler will BUG on return")))
    return findings


def check_livepatch_stack(trace: TaskTrace, tocs: TocMap,
                          state: Optional[LivepatchState]) -> List[Finding]:
    """Rule (b), and the livepatch-stack part of rule (d), for one task."""
    lp = trace.livepatch_stack
    if lp is None:
        return []
    findings = check_livepatch_stack_structure(trace, tocs)
    pid = trace.pid
    used = set()
    for frame in trace.frames:
        if frame.livepatch_entry is None:
            continue
        k = frame.livepatch_entry
        used.add(k)
        entry = lp.entries[k]
        actual_owner = tocs.toc_owner(entry.toc)
        replacement = trace.frames[frame.index - 1] if frame.index > 0 else None
        funcs = []
        if replacement is not None:
            start = replacement.pc - replacement.offset if replacement.offset is not None else None
            funcs = _replacement_funcs(state, replacement.pc, start)
        old_images = {f.old_module or VMLINUX for f in funcs}
        local_call = not frame.toc_restore
        lr_resolved = entry.real_lr == frame.pc
        common: Dict[str, Any] = dict(pid=pid, frame=frame.index, actual_toc=entry.toc,
                                      actual_module=actual_owner, slot=entry.address)

        if len(old_images) == 1:
            old_image = old_images.pop()
            old = funcs[0]
            expected = tocs.toc_of(old_image)
            if expected is not None and entry.toc != expected:
                findings.append(Finding(
                    kind="livepatch_stack_toc_mismatch", severity="error",
                    address=old.old_addr, expected_toc=expected, expected_module=old_image,
                    message=(f"livepatch stack entry {k} (frame {frame.index}) saved r2 "
                             f"{entry.toc:#x} ({_label(actual_owner)}) at {old.name}'s ftrace "
                             f"site, but {old.name} is in {old_image}, whose TOC is "
                             f"{expected:#x}"), **common))
            if local_call and lr_resolved and frame.image != old_image:
                findings.append(Finding(
                    kind="livepatch_stack_lr_mismatch", severity="error",
                    address=entry.real_lr, expected_toc=expected, expected_module=old_image,
                    message=(f"livepatch stack entry {k}: the real LR {entry.real_lr:#x} is "
                             f"not a TOC restore, so {old.name} was called locally, yet the "
                             f"LR lies in {_label(frame.image)}, not in {old_image}"),
                    **common))
            continue

        why = ("no klp_func has the function in frame "
               f"{frame.index - 1} as its replacement" if not funcs else
               "the replacement belongs to klp_funcs of different images: "
               + ", ".join(sorted(old_images)))
        findings.append(Finding(
            kind="livepatch_stack_unidentified", severity="info", address=entry.real_lr,
            expected_toc=None, expected_module=None,
            message=f"livepatch stack entry {k}: {why}; only the weaker check applies",
            **common))
        findings.extend(_weaker_check(trace, tocs, k, entry, frame, local_call, lr_resolved,
                                      common))

    for k, entry in enumerate(lp.entries):
        if k in used:
            continue
        if tocs.toc_owner(entry.toc) is None:
            findings.append(Finding(
                kind="livepatch_stack_toc_mismatch", severity="error", pid=pid, frame=None,
                address=entry.real_lr, expected_toc=None, expected_module=None,
                actual_toc=entry.toc, actual_module=None, slot=entry.address,
                message=(f"livepatch stack entry {k} matches no frame, and its saved r2 "
                         f"{entry.toc:#x} is no image's TOC")))
    return findings


def _weaker_check(trace: TaskTrace, tocs: TocMap, k: int, entry, frame, local_call: bool,
                  lr_resolved: bool, common: dict) -> List[Finding]:
    if local_call and lr_resolved and frame.image is not None:
        expected = tocs.toc_of(frame.image)
        if expected is not None and entry.toc != expected:
            return [Finding(
                kind="livepatch_stack_toc_mismatch", severity="error", address=entry.real_lr,
                expected_toc=expected, expected_module=frame.image,
                message=(f"livepatch stack entry {k}: local call from {frame.image}, but the "
                         f"saved r2 {entry.toc:#x} ({_label(common['actual_module'])}) is not "
                         f"{frame.image}'s TOC {expected:#x}"), **common)]
        return []
    if common["actual_module"] is None:
        return [Finding(
            kind="livepatch_stack_toc_mismatch", severity="error", address=entry.real_lr,
            expected_toc=None, expected_module=None,
            message=(f"livepatch stack entry {k}: the saved r2 {entry.toc:#x} is no "
                     "image's TOC"), **common)]
    return []


def cpu_exemption(stop: CpuStop) -> Optional[str]:
    """
    Why a CPU stopped at ``stop.nip`` may legitimately hold an r2 that is not
    the TOC of the image owning nip, or None when it must hold that TOC: the
    exemptions of rule (c), in the order of the module docstring. An
    instruction that could not be read exempts nothing.
    """
    if stop.user_mode:
        return "user mode"
    if stop.exception_code:
        return "exception entry/exit code"
    if stop.trampoline is not None:
        return f"ftrace/livepatch trampoline {stop.trampoline}"
    if stop.module_stub:
        return "module stub (.stubs): runs with the caller's r2"
    if stop.at_toc_restore is None:
        return None
    if stop.at_toc_restore:
        return "at a TOC restore: r2 is still the returning callee's"
    if stop.function is None or stop.toc_prologue is None:
        return None
    if stop.toc_prologue and stop.function_offset is not None and stop.function_offset < 8:
        return "global-entry prologue: r2 not yet set from r12"
    if not stop.toc_prologue and stop.elf_abi == 2:
        return f"{stop.function} has no TOC prologue: it keeps its caller's r2"
    return None


def check_crashed_cpus(traces: Iterable[TaskTrace], tocs: TocMap) -> List[Finding]:
    """Rule (c): every CPU's saved r2 against the TOC of the image owning its nip."""
    findings = []
    for trace in traces:
        regs = trace.cpu_registers
        if regs is None or trace.cpu_image is None:
            continue
        if trace.cpu_stop is not None and cpu_exemption(trace.cpu_stop) is not None:
            continue
        expected = tocs.toc_of(trace.cpu_image)
        if expected is None or regs["r2"] == expected:
            continue
        which = "crashed CPU" if trace.crashed else "CPU"
        findings.append(Finding(
            kind="crashed_cpu_toc_mismatch", severity="error", pid=trace.pid, frame=0,
            address=regs["nip"], expected_toc=expected, expected_module=trace.cpu_image,
            actual_toc=regs["r2"], actual_module=tocs.toc_owner(regs["r2"]),
            message=(f"{which} {trace.on_cpu} ({trace.comm}, pid {trace.pid}) stopped at "
                     f"{regs['nip']:#x} in {trace.cpu_image} with r2 {regs['r2']:#x} "
                     f"({_label(tocs.toc_owner(regs['r2']))}), not {trace.cpu_image}'s TOC "
                     f"{expected:#x}"),
        ))
    return findings


def _unreadable(pid: Optional[int], diagnostic: Diagnostic) -> Finding:
    return Finding(kind="unreadable_memory", severity="warning", pid=pid, frame=None,
                   address=diagnostic.address, expected_toc=None, expected_module=None,
                   actual_toc=None, actual_module=None, message=diagnostic.message)


def check_shadow_stacks(trace: TaskTrace) -> List[Finding]:
    """Rule (d) for the ret_stack and the memory the trace could not read."""
    findings = []
    for diagnostic in trace.ret_stack_diagnostics:
        if diagnostic.kind == DiagnosticKind.UNREADABLE:
            findings.append(_unreadable(trace.pid, diagnostic))
        elif diagnostic.kind == DiagnosticKind.CORRUPT:
            findings.append(Finding(
                kind="ret_stack_inconsistent", severity="error", pid=trace.pid, frame=None,
                address=diagnostic.address, expected_toc=None, expected_module=None,
                actual_toc=None, actual_module=None, message=diagnostic.message))
    findings.extend(_unreadable(trace.pid, d) for d in trace.diagnostics
                    if d.kind == DiagnosticKind.UNREADABLE)
    return findings


def check_tocs(tocs: TocMap) -> List[Finding]:
    """Module TOCs that disagree with their functions' global-entry prologues."""
    findings = []
    for entry in tocs:
        for function, gep, value in entry.prologue_mismatches:
            findings.append(Finding(
                kind="toc_prologue_mismatch", severity="error", pid=None, frame=None,
                address=gep, expected_toc=entry.toc, expected_module=entry.module,
                actual_toc=value, actual_module=tocs.toc_owner(value),
                message=(f"{entry.module}'s TOC from its {entry.source} is {_hex(entry.toc)}, "
                         f"but the prologue of {function} at {gep:#x} computes {value:#x}")))
    return findings


def _duration_text(t: KlpTransition) -> str:
    if t.attempts is None:
        return ""
    # klp_try_complete_transition() retries after round_jiffies_relative(HZ): about a
    # second each, so the count is about the seconds since the transition started.
    text = f" for about {t.attempts} s ({t.attempts} failed tries, about one a second"
    if t.signals_sent:
        text += f", signals sent {t.signals_sent} time{'s' if t.signals_sent != 1 else ''}"
    if t.next_try_jiffies is not None:
        text += f", next try in {t.next_try_jiffies} jiffies"
    return text + ")"


def _blocker_text(b: BlockingTask) -> str:
    where = (f"{b.function} (frame #{b.frame})" if b.function is not None
             else "no patched function found on its stack")
    return f"PID {b.pid} ({b.comm}) in {where}"


def check_transition(state: LivepatchState) -> List[Finding]:
    """
    ``transition_blocked``: a livepatch transition in progress with tasks not
    yet in its target state (``LivepatchState.transition.blocking``, filled
    by :func:`lpdebug.livepatch.blocking_tasks`). One finding per transition,
    carrying the transition and every task holding it back.
    """
    t = state.transition
    if t.patch is None or not t.blocking:
        return []
    blocking = sorted(t.blocking, key=lambda b: (b.pid, b.comm))
    shown = ", ".join(_blocker_text(b) for b in blocking[:3])
    more = f" and {len(blocking) - 3} more" if len(blocking) > 3 else ""
    patch_address = next((p.address for p in state.patches if p.name == t.patch), None)
    first = blocking[0]
    return [Finding(
        kind="transition_blocked", severity="warning",
        pid=first.pid if len(blocking) == 1 else None,
        frame=first.frame if len(blocking) == 1 else None,
        address=patch_address, expected_toc=None, expected_module=None, actual_toc=None,
        actual_module=None, transition=t,
        message=(f"livepatch {t.patch} has been in transition to {t.target_state or '?'}"
                 f"{_duration_text(t)}: {len(blocking)} task{'s' if len(blocking) != 1 else ''}"
                 f" not switched: {shown}{more}"),
    )]


def check_task(trace: TaskTrace, tocs: TocMap,
               state: Optional[LivepatchState] = None) -> List[Finding]:
    """Rules (a), (b), (c) and (d) for one task."""
    return (check_frames(trace, tocs) + check_livepatch_stack(trace, tocs, state)
            + check_crashed_cpus([trace], tocs) + check_shadow_stacks(trace))


def all_findings(prog: object, traces: Iterable[TaskTrace], tocs: Optional[TocMap],
                 state: Optional[LivepatchState]) -> List[Finding]:
    """
    Every finding over every task, plus the module TOC cross-check. ``prog``
    is accepted for the triage call signature and not used: the checks only
    read the model. Without a TocMap only the shadow-stack checks run. A
    trace a live kernel changed while it was read (``changed_while_reading``)
    mixes moments no kernel state ever had: it is not checked.
    """
    findings: List[Finding] = []
    for trace in traces:
        if trace.changed_while_reading:
            continue
        if tocs is None:
            findings.extend(check_livepatch_stack_structure(trace) + check_shadow_stacks(trace))
            continue
        findings.extend(check_task(trace, tocs, state))
    if tocs is not None:
        findings.extend(check_tocs(tocs))
    if state is not None:
        findings.extend(check_transition(state))
    return findings
