# SPDX-License-Identifier: GPL-2.0-or-later
"""
Livepatch state: patches, their objects and functions, the klp_ops stacks,
the transition, klp_state entries and shadow variables.

Kernels 5.2 and later link objects and functions in lists
(``patch->obj_list``, ``obj->func_list``) that also hold the nop entries
``replace`` patches create; older kernels only have the arrays
``patch->objs`` and ``obj->funcs`` the patch module declared. Which one is
read is decided by :func:`list_layout` from the type of ``struct
klp_patch``.

The walkers return :mod:`lpdebug.model` objects; anything unreadable ends up
in ``LivepatchState.diagnostics``, never as an exception.
"""

from __future__ import annotations

from typing import Dict, Iterable, Iterator, List, Optional, Set

import drgn
from . import kernel
from .diagnostics import corrupt, cycle, from_exception, missing_debug_info
from .model import (
    BlockingTask,
    Diagnostic,
    KlpFunc,
    KlpObject,
    KlpOps,
    KlpPatch,
    KlpState,
    KlpTransition,
    LivepatchState,
    TaskTrace,
)
from .symbols import Symbolizer

__all__ = (
    "list_layout",
    "for_each_klp_patch",
    "for_each_klp_object",
    "for_each_klp_func",
    "for_each_klp_ops",
    "klp_func_stack",
    "klp_state_entries",
    "shadow_variable_count",
    "target_state",
    "transition_progress",
    "tasks_not_in_target_state",
    "blocking_tasks",
    "livepatch_state",
    "missing_patches",
    "KLP_UNDEFINED",
    "KLP_UNPATCHED",
    "KLP_PATCHED",
)

# Values of klp_target_state and task->patch_state (macros, so not in DWARF;
# the same in every kernel that has them: KLP_UNDEFINED was renamed
# KLP_TRANSITION_IDLE in 6.10 without changing its value).
KLP_UNDEFINED = -1
KLP_UNPATCHED = 0
KLP_PATCHED = 1
_STATE_NAMES = {KLP_UNPATCHED: "unpatched", KLP_PATCHED: "patched"}

# A read of target memory fails with these (see lpdebug.tasks): one
# unreadable patch or ops costs that entry, not the livepatch state.
_UNREADABLE = (drgn.FaultError, NotImplementedError, LookupError, AttributeError)

# enum klp_state of 4.4/4.9, where objects and funcs had a `state` member.
_KLP_ENABLED = 1

# Array terminators are only trusted this far; a patch module declares a
# handful of objects and functions.
_ARRAY_LIMIT = 100_000

# The stage of lpdebug.report.triage the livepatch walkers run in.
STAGE = "livepatch"


def list_layout(prog: drgn.Program) -> str:
    """``"list"`` (5.2+: obj_list/func_list) or ``"array"`` (older kernels)."""
    # obj_list/func_list (with nop and dynamic objects) came with e1452b607c48
    # "livepatch: Add atomic replace" (v5.1); 5.10.223 include/linux/livepatch.h has them.
    return "list" if kernel.has_member(prog, "struct klp_patch", "obj_list") else "array"


def _sink(diagnostics: Optional[List[Diagnostic]]) -> List[Diagnostic]:
    return diagnostics if diagnostics is not None else []


def for_each_klp_patch(prog: drgn.Program, diagnostics: Optional[List[Diagnostic]] = None) -> Iterator[drgn.Object]:
    """
    The patches on ``klp_patches``, as ``struct klp_patch *``: every enabled
    patch and the one in transition (5.2+; before 5.1 the list held every
    registered patch). Yields nothing on a kernel without livepatch.
    """
    if not kernel.has_object(prog, "klp_patches"):
        return
    yield from kernel.walk_list(prog["klp_patches"], "struct klp_patch", "list", _sink(diagnostics),
                                "klp_patches", stage=STAGE)


def for_each_klp_object(patch: drgn.Object, diagnostics: Optional[List[Diagnostic]] = None) -> Iterator[drgn.Object]:
    """The ``struct klp_object *`` of a ``struct klp_patch *``, nop objects included (5.2+)."""
    prog = patch.prog_
    errs = _sink(diagnostics)
    if list_layout(prog) == "list":
        yield from kernel.walk_list(patch.obj_list, "struct klp_object", "node", errs,
                                    f"objects of klp_patch {patch.value_():#x}", stage=STAGE)
        return
    # Arrays end at an entry without funcs (4.9+ also require no name, but
    # the kernel refuses to register an object without funcs anyway).
    objs = patch.objs
    try:
        for i in range(_ARRAY_LIMIT):
            obj = objs + i
            if not obj.funcs.value_():
                return
            yield obj
        errs.append(corrupt(STAGE, patch.value_(), f"objects of klp_patch {patch.value_():#x}: "
                            f"no terminator in {_ARRAY_LIMIT} entries"))
    except drgn.FaultError as e:
        errs.append(from_exception(STAGE, f"objects of klp_patch {patch.value_():#x}", e))


def for_each_klp_func(obj: drgn.Object, diagnostics: Optional[List[Diagnostic]] = None) -> Iterator[drgn.Object]:
    """The ``struct klp_func *`` of a ``struct klp_object *``, nop functions included (5.2+)."""
    prog = obj.prog_
    errs = _sink(diagnostics)
    if list_layout(prog) == "list":
        yield from kernel.walk_list(obj.func_list, "struct klp_func", "node", errs,
                                    f"functions of klp_object {obj.value_():#x}", stage=STAGE)
        return
    # The array ends at an entry whose old_name, new_func and old_sympos
    # (4.9+) are all zero, as klp_for_each_func_static() tests.
    keys = [m for m in ("old_name", "new_func", "old_sympos")
            if kernel.has_member(prog, "struct klp_func", m)]
    funcs = obj.funcs
    try:
        for i in range(_ARRAY_LIMIT):
            func = funcs + i
            if not any(func.member_(k).value_() for k in keys):
                return
            yield func
        errs.append(corrupt(STAGE, obj.value_(), f"functions of klp_object {obj.value_():#x}: "
                            f"no terminator in {_ARRAY_LIMIT} entries"))
    except drgn.FaultError as e:
        errs.append(from_exception(STAGE, f"functions of klp_object {obj.value_():#x}", e))


def for_each_klp_ops(prog: drgn.Program, diagnostics: Optional[List[Diagnostic]] = None) -> Iterator[drgn.Object]:
    """The ``struct klp_ops *`` on the static ``klp_ops`` list: one per patched old function."""
    if not kernel.has_object(prog, "klp_ops") or not kernel.has_type(prog, "struct klp_ops"):
        return
    head = prog.object("klp_ops")
    if head.type_.kind == drgn.TypeKind.FUNCTION:  # a same-named function shadows the list
        return
    yield from kernel.walk_list(head, "struct klp_ops", "node", _sink(diagnostics), "klp_ops",
                                stage=STAGE)


def klp_func_stack(ops: drgn.Object, diagnostics: Optional[List[Diagnostic]] = None) -> Iterator[drgn.Object]:
    """The ``struct klp_func *`` on ``ops->func_stack``, the one in effect first."""
    yield from kernel.walk_list(ops.func_stack, "struct klp_func", "stack_node", _sink(diagnostics),
                                f"func_stack of klp_ops {ops.value_():#x}", stage=STAGE)


def klp_state_entries(patch: drgn.Object, diagnostics: Optional[List[Diagnostic]] = None) -> List[KlpState]:
    """The ``patch->states`` array, up to the entry with id 0: "livepatch:
    Basic API to track system state changes" (v5.5); 5.10.223 has it."""
    prog = patch.prog_
    if not kernel.has_member(prog, "struct klp_patch", "states"):
        return []
    result: List[KlpState] = []
    try:
        states = patch.states
        if not states.value_():
            return []
        for i in range(_ARRAY_LIMIT):
            entry = states + i
            ident = entry.id.value_()
            if not ident:
                return result
            result.append(KlpState(id=ident, version=entry.version.value_(), data=entry.data.value_()))
        _sink(diagnostics).append(corrupt(STAGE, patch.value_(),
                                          f"states of klp_patch {patch.value_():#x}: no terminator"))
    except drgn.FaultError as e:
        _sink(diagnostics).append(from_exception(STAGE, f"states of klp_patch {patch.value_():#x}", e))
    return result


def shadow_variable_count(prog: drgn.Program, diagnostics: Optional[List[Diagnostic]] = None) -> Optional[int]:
    """Number of livepatch shadow variables in ``klp_shadow_hash``; None where the kernel has none."""
    if not kernel.has_object(prog, "klp_shadow_hash"):
        return None
    errs = _sink(diagnostics)
    table = prog["klp_shadow_hash"]
    try:
        nbuckets = len(table)
        word = prog.type("unsigned long")
        raw = prog.read(table.address_, nbuckets * drgn.sizeof(word))
    except (drgn.FaultError, TypeError) as e:
        errs.append(from_exception(STAGE, "klp_shadow_hash", e))
        return None
    fmt = "<Q" if kernel.is_little_endian(prog) else ">Q"
    import struct

    count = 0
    for (first,) in struct.iter_unpack(fmt, raw):
        node = first
        seen = set()
        while node:
            if node in seen:
                errs.append(cycle(STAGE, node, f"klp_shadow_hash: cyclic bucket at {node:#x}, "
                                  "count stopped there"))
                break
            seen.add(node)
            count += 1
            try:
                node = prog.read_u64(node)
            except drgn.FaultError as e:
                errs.append(from_exception(STAGE, f"klp_shadow_hash: the entry at {node:#x}", e, node))
                break
    return count


def target_state(prog: drgn.Program) -> Optional[int]:
    """``klp_target_state``: KLP_PATCHED/KLP_UNPATCHED during a transition, else KLP_UNDEFINED."""
    try:
        return prog["klp_target_state"].value_()
    except (LookupError, drgn.FaultError):
        return None


# kernel/livepatch/transition.c: klp_try_complete_transition() sends the
# signals (klp_send_signals()) each time klp_signals_cnt, before its
# increment, is a non-zero multiple of SIGNALS_TIMEOUT (15; the same in the
# 6.1 and 6.12 sources). klp_start_transition() resets the count.
_SIGNALS_TIMEOUT = 15
# WORK_STRUCT_PENDING_BIT of work_struct.data: bit 0 in every kernel
# (include/linux/workqueue.h); an enum, not always in the debug info.
_WORK_STRUCT_PENDING = 1


def transition_progress(prog: drgn.Program) -> Dict[str, Optional[int]]:
    """
    How long the transition has been going, as the kernel counts it:
    ``attempts`` (``klp_signals_cnt``: failed ``klp_try_complete_transition()``
    runs, rescheduled through ``klp_transition_work`` about every second),
    ``signals_sent`` (rounds of ``klp_send_signals()`` so far) and
    ``retry_pending`` (``klp_transition_work`` is queued) and
    ``next_try_jiffies`` (its timer's expiry minus ``jiffies``). A value the
    kernel does not have, or that cannot be read, is None.
    """
    out: Dict[str, Optional[int]] = {"attempts": None, "signals_sent": None,
                                     "retry_pending": None, "next_try_jiffies": None}
    try:
        attempts = prog["klp_signals_cnt"].value_()
        out["attempts"] = attempts
        out["signals_sent"] = (attempts - 1) // _SIGNALS_TIMEOUT if attempts else 0
    except (LookupError, drgn.FaultError):
        pass
    try:
        work = prog["klp_transition_work"]
        out["retry_pending"] = bool(work.work.data.counter.value_() & _WORK_STRUCT_PENDING)
        if out["retry_pending"]:
            # jiffies is a linker alias of jiffies_64 (low word on 64-bit): read it by symbol,
            # its debug info may be absent.
            now = prog.read_u64(prog.symbol("jiffies_64").address)
            delta = (work.timer.expires.value_() - now) & (2**64 - 1)
            out["next_try_jiffies"] = delta - 2**64 if delta >= 2**63 else delta  # negative: overdue
    except (LookupError, AttributeError, drgn.FaultError):
        pass
    return out


def _transition_patch(prog: drgn.Program) -> Optional[drgn.Object]:
    try:
        patch = prog["klp_transition_patch"].read_()
    except (LookupError, drgn.FaultError):
        return None
    return patch if patch.value_() else None


def _all_tasks(prog: drgn.Program) -> Iterator[drgn.Object]:
    # The transition also waits for each CPU's idle task, which is not on
    # the task list (except CPU 0's, init_task): the union of every task
    # source holds them, and survives a damaged pid IDR.
    from .tasks import find_tasks

    for found in find_tasks(prog).tasks:
        yield found.task


def tasks_not_in_target_state(prog: drgn.Program) -> Iterator[drgn.Object]:
    """
    During a transition, the tasks (``struct task_struct *``, idle tasks
    included) whose ``patch_state`` is not yet ``klp_target_state``; nothing
    when no transition is in progress.
    """
    target = target_state(prog)
    # task_struct.patch_state came with d83a7cb375ee ("livepatch: change to a
    # per-task consistency model", 4.12).
    if target not in (KLP_PATCHED, KLP_UNPATCHED) or not kernel.has_member(prog, "struct task_struct", "patch_state"):
        return
    for task in _all_tasks(prog):
        try:
            if task.patch_state.value_() != target:
                yield task
        except drgn.FaultError:
            continue


# --- model ------------------------------------------------------------------


def _string(ptr: drgn.Object) -> Optional[str]:
    if not ptr.value_():
        return None
    return ptr.string_().decode(errors="replace")


def _func_model(func: drgn.Object, sym: Symbolizer) -> KlpFunc:
    prog = func.prog_
    has = lambda m: kernel.has_member(prog, "struct klp_func", m)  # noqa: E731
    # "livepatch: Change unsigned long old_addr -> void *old_func in struct
    # klp_func" (v5.1); patched/transition replaced enum klp_state in 4.12.
    old_addr = func.old_func.value_() if has("old_func") else func.old_addr.value_()
    new_addr = func.new_func.value_()
    if has("patched"):
        patched = bool(func.patched.value_())
        transition = bool(func.transition.value_())
    else:
        patched = func.state.value_() == _KLP_ENABLED
        transition = False
    return KlpFunc(
        address=func.value_(),
        name=_string(func.old_name) or "",
        sympos=func.old_sympos.value_() if has("old_sympos") else 0,
        old_addr=old_addr,
        new_addr=new_addr,
        new_symbol=sym.name_of(new_addr) if new_addr else None,
        new_module=sym.module_of(new_addr) if new_addr else None,
        old_module=sym.module_of(old_addr) if old_addr else None,
        old_size=func.old_size.value_() if has("old_size") else 0,
        new_size=func.new_size.value_() if has("new_size") else 0,
        patched=patched,
        transition=transition,
        nop=bool(func.nop.value_()) if has("nop") else False,
    )


def _object_model(obj: drgn.Object, sym: Symbolizer, diagnostics: List[Diagnostic]) -> KlpObject:
    prog = obj.prog_
    has = lambda m: kernel.has_member(prog, "struct klp_object", m)  # noqa: E731
    name = _string(obj.name)
    if has("patched"):
        patched = bool(obj.patched.value_())
    else:
        patched = obj.state.value_() == _KLP_ENABLED
    model = KlpObject(
        address=obj.value_(),
        name=name,
        loaded=name is None or bool(obj.mod.value_()),
        patched=patched,
        dynamic=bool(obj.dynamic.value_()) if has("dynamic") else False,
    )
    for func in for_each_klp_func(obj, diagnostics):
        try:
            model.funcs.append(_func_model(func, sym))
        except drgn.FaultError as e:
            diagnostics.append(from_exception(STAGE, f"klp_func at {func.value_():#x}", e))
    return model


def _patch_model(patch: drgn.Object, transition_addr: int, sym: Symbolizer,
                 diagnostics: List[Diagnostic]) -> KlpPatch:
    prog = patch.prog_
    has = lambda m: kernel.has_member(prog, "struct klp_patch", m)  # noqa: E731
    mod = patch.mod
    name = mod.name.string_().decode(errors="replace") if mod.value_() else f"klp_patch@{patch.value_():#x}"
    if has("enabled"):
        enabled = bool(patch.enabled.value_())
    else:
        enabled = patch.state.value_() == _KLP_ENABLED
    model = KlpPatch(
        address=patch.value_(),
        name=name,
        module=name if mod.value_() else None,
        enabled=enabled,
        transition=patch.value_() == transition_addr,
        replace=bool(patch.replace.value_()) if has("replace") else False,
        forced=bool(patch.forced.value_()) if has("forced") else False,
        states=klp_state_entries(patch, diagnostics),
    )
    for obj in for_each_klp_object(patch, diagnostics):
        try:
            model.objects.append(_object_model(obj, sym, diagnostics))
        except drgn.FaultError as e:
            diagnostics.append(from_exception(STAGE, f"klp_object at {obj.value_():#x}", e))
    return model


def _ops_model(ops: drgn.Object, sym: Symbolizer, diagnostics: List[Diagnostic]) -> KlpOps:
    prog = ops.prog_
    stack = list(klp_func_stack(ops, diagnostics))
    old_addr = 0
    if stack:
        top = stack[0]
        old_addr = (top.old_func if kernel.has_member(prog, "struct klp_func", "old_func") else top.old_addr).value_()
    return KlpOps(
        address=ops.value_(),
        old_addr=old_addr,
        old_symbol=sym.name_of(old_addr) if old_addr else None,
        func_stack=[f.value_() for f in stack],
        active=stack[0].value_() if stack else None,
    )


def livepatch_state(prog: drgn.Program, traces: Optional[Iterable[TaskTrace]] = None) -> LivepatchState:
    """
    Everything livepatch holds, as a :class:`LivepatchState`. With
    ``traces`` (true backtraces of the tasks), the transition's ``blocking``
    list is filled too; see :func:`blocking_tasks`.
    """
    state = LivepatchState()
    if not kernel.has_livepatch(prog):
        state.unavailable = ("the kernel has no livepatch support (CONFIG_LIVEPATCH is off: "
                             "no klp_patches, no struct klp_patch)")
        return state
    if not kernel.has_object(prog, "klp_patches"):
        # Global, holding the enabled patches only, since 958ef1e39d24
        # ("livepatch: Simplify API by removing registration step", 5.1).
        state.diagnostics.append(missing_debug_info(
            STAGE, "klp_patches is not in the debug info (kernels before 5.2 keep it static)"))
        return state
    sym = Symbolizer(prog)
    transition = _transition_patch(prog)
    transition_addr = transition.value_() if transition is not None else 0
    for patch in for_each_klp_patch(prog, state.diagnostics):
        try:
            state.patches.append(_patch_model(patch, transition_addr, sym, state.diagnostics))
        except _UNREADABLE as e:
            state.diagnostics.append(from_exception(STAGE, f"klp_patch at {patch.value_():#x}", e))
    for ops in for_each_klp_ops(prog, state.diagnostics):
        try:
            state.ops.append(_ops_model(ops, sym, state.diagnostics))
        except _UNREADABLE as e:
            state.diagnostics.append(from_exception(STAGE, f"klp_ops at {ops.value_():#x}", e))
    target = target_state(prog)
    if transition is not None:
        name = next((p.name for p in state.patches if p.address == transition_addr), None)
        if name is None:
            try:
                name = transition.mod.name.string_().decode(errors="replace")
            except _UNREADABLE as e:
                state.diagnostics.append(from_exception(
                    STAGE, f"klp_transition_patch {transition_addr:#x}", e, transition_addr))
                name = f"klp_patch@{transition_addr:#x}"
        progress = transition_progress(prog)
        state.transition = KlpTransition(
            patch=name, target_state=_STATE_NAMES.get(target) if target is not None else None,
            attempts=progress["attempts"], signals_sent=progress["signals_sent"],
            retry_pending=None if progress["retry_pending"] is None
            else bool(progress["retry_pending"]),
            next_try_jiffies=progress["next_try_jiffies"])
    state.shadow_count = shadow_variable_count(prog, state.diagnostics)
    if traces is not None:
        state.transition.blocking = blocking_tasks(state, traces)
    return state


# --- the transition's blocking tasks ----------------------------------------


def _checked_ranges(state: LivepatchState, target: str) -> List[tuple]:
    """
    (start, end, old_name) of the code a task must not be running for the
    transition to switch it, as klp_check_stack_func() computes it.
    """
    patch = next((p for p in state.patches if p.name == state.transition.patch), None)
    if patch is None:
        return []
    funcs_by_addr: Dict[int, KlpFunc] = {
        f.address: f for p in state.patches for o in p.objects for f in o.funcs
    }
    stack_of: Dict[int, List[int]] = {}
    for ops in state.ops:
        for addr in ops.func_stack:
            stack_of[addr] = ops.func_stack
    ranges = []
    for obj in patch.objects:
        if not obj.patched:
            continue
        for func in obj.funcs:
            if target == "unpatched":
                start, size = func.new_addr, func.new_size
            else:
                stack = stack_of.get(func.address, [func.address])
                pos = stack.index(func.address) if func.address in stack else 0
                if len(stack) <= 1 or pos + 1 >= len(stack) or stack[pos + 1] not in funcs_by_addr:
                    start, size = func.old_addr, func.old_size
                else:
                    prev = funcs_by_addr[stack[pos + 1]]
                    start, size = prev.new_addr, prev.new_size
            if start and size:
                ranges.append((start, start + size, func.name))
    return ranges


def blocking_tasks(state: LivepatchState, traces: Iterable[TaskTrace]) -> List[BlockingTask]:
    """
    The tasks of ``traces`` not yet in the transition's target state, each
    with the first frame (innermost first) whose pc lies in a function the
    transition waits for: the old function (or the previous patch's
    replacement) when patching, the new function when unpatching. A pure
    function of the model; empty when no transition is in progress.
    """
    target = state.transition.target_state
    if state.transition.patch is None or target not in ("patched", "unpatched"):
        return []
    target_value = KLP_PATCHED if target == "patched" else KLP_UNPATCHED
    ranges = _checked_ranges(state, target)
    result = []
    for trace in traces:
        if trace.patch_state is None or trace.patch_state == target_value:
            continue
        function = frame_index = None
        for frame in trace.frames:
            hit = next((name for start, end, name in ranges if start <= frame.pc < end), None)
            if hit is not None:
                function, frame_index = hit, frame.index
                break
        result.append(BlockingTask(pid=trace.pid, comm=trace.comm, patch_state=trace.patch_state,
                                   function=function, frame=frame_index))
    return result


# --- patches the other structures say exist ----------------------------------


# A livepatch directory in sysfs holds one entry per patch; far fewer than this.
_SYSFS_LIMIT = 10_000


def _sysfs_patch_names(prog: drgn.Program) -> Optional[List[str]]:
    """
    The names under ``/sys/kernel/livepatch`` (``klp_root_kobj``'s kernfs
    children, one per registered patch), None when the kernel has no such
    directory (no livepatch, or no sysfs debug info). Raises
    :class:`~lpdebug.tasks.WalkError` when the rbtree is damaged.
    """
    from .model import DiagnosticKind
    from .tasks import WalkError

    if not kernel.has_object(prog, "klp_root_kobj") or not kernel.has_member(prog, "struct kernfs_node", "dir"):
        return None
    root = prog["klp_root_kobj"].read_()
    if not root.value_():
        return None
    sd = root.sd.read_()
    if not sd.value_():
        return None
    names: List[str] = []
    seen: Set[int] = set()
    # In-order walk of kernfs_node.dir.children (linked through kernfs_node.rb).
    pending = [sd.dir.children.rb_node.value_()]
    while pending:
        node = pending.pop()
        if not node:
            continue
        if node in seen or len(seen) >= _SYSFS_LIMIT:
            raise WalkError(DiagnosticKind.CYCLE if node in seen else DiagnosticKind.CORRUPT, node,
                            f"/sys/kernel/livepatch entries (kernfs rbtree): node {node:#x} "
                            + ("reached twice" if node in seen else f"past {_SYSFS_LIMIT} entries"))
        seen.add(node)
        rb = drgn.Object(prog, "struct rb_node *", node)
        kn = drgn.container_of(rb, "struct kernfs_node", "rb")
        names.append(kn.name.string_().decode(errors="replace"))
        pending.extend((rb.rb_left.value_(), rb.rb_right.value_()))
    return sorted(names)


def missing_patches(prog: drgn.Program, state: LivepatchState) -> List[Diagnostic]:
    """
    Diagnostics for patches that ``klp_ops`` or ``/sys/kernel/livepatch``
    show exist but ``state.patches`` (read from ``klp_patches``) lacks: a
    damaged or unreadable ``klp_patches`` must not read as "no livepatch".
    """
    from .model import DiagnosticKind
    from .tasks import WalkError

    diagnostics: List[Diagnostic] = []
    try:
        head: Optional[int] = prog["klp_patches"].address_
    except _UNREADABLE:
        head = None
    known = {f.address for p in state.patches for o in p.objects for f in o.funcs}
    orphans = sorted({func for ops in state.ops for func in ops.func_stack if func not in known})
    if state.ops and not state.patches:
        diagnostics.append(Diagnostic(
            "livepatch", DiagnosticKind.LOST, head,
            f"klp_ops hold {len(state.ops)} patched function(s), but no patch was read from "
            "klp_patches: it is damaged or unreadable, the patches are missing from this report"))
    elif orphans:
        diagnostics.append(Diagnostic(
            "livepatch", DiagnosticKind.LOST, head,
            f"klp_ops hold {len(orphans)} klp_func(s) of no patch on klp_patches "
            f"(first {orphans[0]:#x}; {len(state.patches)} patch(es) read): klp_patches is "
            "damaged or unreadable, patches are missing from this report"))
    try:
        names = _sysfs_patch_names(prog)
    except WalkError as e:
        diagnostics.append(Diagnostic("livepatch", e.kind, e.address, str(e)))
        return diagnostics
    except _UNREADABLE as e:
        diagnostics.append(Diagnostic(
            "livepatch", DiagnosticKind.UNREADABLE, getattr(e, "address", None),
            f"/sys/kernel/livepatch entries are unreadable ({e}): cannot check that every patch "
            "was found"))
        return diagnostics
    if names is None:
        return diagnostics
    found = {p.name for p in state.patches}
    missing = [n for n in names if n not in found]
    if missing:
        diagnostics.append(Diagnostic(
            "livepatch", DiagnosticKind.LOST, head,
            f"/sys/kernel/livepatch holds {', '.join(missing)}, which klp_patches does not give: "
            "klp_patches is damaged or unreadable, or the patch is being freed"))
    return diagnostics
