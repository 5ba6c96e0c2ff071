# SPDX-License-Identifier: GPL-2.0-or-later
"""
True backtraces on the real-kernel testbed, compared with the kernel's own view.

The oracle is ``truth/tasks/PID/stack.nofgraph``: the task's /proc/PID/stack
captured in the guest before function_graph was switched on. It is used for
tasks that slept at the same point both times, shown by the kernel's own
captures (see :func:`oracle_frames`):

- ``still``: the task never ran in between. ``stack`` (captured with
  function_graph on) equals ``stack.nofgraph`` and shows no hooked return;
  a task that ran would have entered traced functions, the scheduler's at
  least, and left ``return_to_handler`` (``mcount+0x10``) lines.
- ``again``: the task ran, then slept again at the same point. ``stack``
  aligns with ``stack.nofgraph`` where each ``return_to_handler`` line
  stands for one nofgraph line or for a scheduler function (hooked, it is
  no longer in the __sched range the kernel filters).

Either way the dump's raw frames, printed the kernel's way, must still equal
``stack``: a task may have moved between the capture and the dump (the
toc-crash thread does: it crashes after the captures).

Tasks that moved (a capture disagrees), or that started after the captures,
are not compared; the test prints how many and why. Where the truth has
``tasks/PID/ctxt`` (the context switch counts of /proc/PID/status, taken
right before ``stack``: scale-tasks), a task whose count in the dump
(``nvcsw + nivcsw``) is higher ran after the capture and is not compared
either: with function_graph on, a task asleep again elsewhere may show as
many hooked returns as before, which the alignment alone cannot tell.

Both sides are normalised by :func:`oracle_frames` and :func:`our_frames`;
every difference that remains between /proc/PID/stack and a true backtrace
has one of these reasons, and each is removed here on purpose:

1. The first line of /proc/PID/stack is no frame: ``arch_stack_walk()``
   starts at ``thread.ksp``, the switch frame, and prints its LR save word,
   which no callee wrote (the kernel's reliable walker skips it for that
   reason). It shows as a raw address, 0x0, or whatever text address was
   left there (``tick_periodic+0xbc`` was seen). Dropped.
2. /proc/PID/stack skips scheduler and lock functions
   (``stack_trace_consume_entry_nosched``: ``in_sched_functions()``, the
   ``__sched_text`` and ``__lock_text`` ranges). Dropped from ours, by the
   same address ranges read from vmlinux.
3. A function replaced by a livepatch was entered through
   ``livepatch_handler``, whose address the replacement saved in its
   caller's frame: /proc/PID/stack prints ``livepatch_handler+0x30`` where
   the caller is. The oracle line is replaced by the caller: the k-th such
   line from the top takes the saved LR of the k-th livepatch-stack entry
   from the top, read here with plain memory reads and named with drgn's
   own symbol lookup (not lpdebug's).
4. A task that ran between the captures (``again``) may have slept again at
   another call site of the same function, which a line that the
   function_graph capture shows hooked cannot tell: ``arch_stack_walk()``
   prints the raw LR save word (arch/powerpc/kernel/stacktrace.c, 5.10 to
   6.12; only the reliable walker calls ``ftrace_graph_ret_addr()``). There
   the oracle vouches for the function and module, not the offset. Seen on
   settled-5.10's rcu_sched: 5.10's ``rcu_gp_fqs_loop()`` is a plain
   ``static`` function that gcc inlines into ``rcu_gp_kthread()``
   (kernel/rcu/tree.c), so its wait for a grace-period request
   (``rcu_gp_kthread+0xa0``) and its force-quiescent-state wait (``+0x2ac``)
   are two call sites of one frame at the same depth; 6.12 marks
   ``rcu_gp_fqs_loop()`` ``noinline_for_stack``, and the second wait has a
   frame of its own, so a move between them changes the stack's shape.

Scenarios are a fixed list: one that the testbed has not built fails.
"""

from __future__ import annotations

import os
import re
from typing import Dict, List, Optional, Set, Tuple

import pytest

from testbed import open_vmcore, scenario, truth

pytestmark = pytest.mark.testbed

# settled-hash belongs to the hash-MMU work; every other scenario is covered.
SCALE_SCENARIOS = ["scale-tasks-1000", "scale-tasks-2500", "scale-tasks-5000", "scale-patches"]
SCENARIOS = ["settled", "settled-6.1", "settled-64k", "stuck", "stacked", "toc-corrupt",
             "toc-crash", "nolivepatch", "settled-5.10", "stuck-5.10", "toc-corrupt-5.10", "toc-crash-5.10",
             "panic-5.10"] + SCALE_SCENARIOS
# The scale-tasks captures hold /proc/PID/stack of a sample of their thousands of tasks: that many at least
# must be compared.
MIN_COMPARED = {"scale-tasks-1000": 200, "scale-tasks-2500": 200, "scale-tasks-5000": 200}

_PROGRAMS: Dict[str, object] = {}
_TRACES: Dict[str, list] = {}

LINE = re.compile(
    r"^\[<[0-9a-fA-F]+>\] (?P<name>[^\s+]+)(?:\+(?P<off>0x[0-9a-f]+)/0x[0-9a-f]+)?"
    r"(?: \[(?P<mod>[^\]]+)\])?$")
RETURN_TO_HANDLER_NAMES = ("mcount", "return_to_handler")

Entry = Tuple[str, int, Optional[str]]  # (symbol, offset, module or None for vmlinux)


def program(name: str):
    """The scenario's vmcore as a drgn Program (cached for the test session)."""
    if name not in _PROGRAMS:
        _PROGRAMS[name] = open_vmcore(name)
    return _PROGRAMS[name]


def traces(name: str):
    """lpdebug's true backtraces of every task of the scenario (cached)."""
    if name not in _TRACES:
        from drgn.helpers.linux.pid import for_each_task

        from lpdebug.backtrace import true_backtrace

        prog = program(name)
        _TRACES[name] = [true_backtrace(task) for task in for_each_task(prog)]
    return _TRACES[name]


def parse_stack(text: str) -> List[Optional[Entry]]:
    """/proc/PID/stack lines as (symbol, offset, module); None for a raw address."""
    entries: List[Optional[Entry]] = []
    for line in text.splitlines():
        m = LINE.match(line.strip())
        if m is None:
            raise AssertionError(f"unparsable /proc/PID/stack line: {line!r}")
        if m.group("off") is None:
            entries.append(None)
            continue
        entries.append((m.group("name"), int(m.group("off"), 16), m.group("mod")))
    return entries


def read_truth(name: str, *parts: str) -> Optional[str]:
    path = truth(name, *parts)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return f.read()


RTH = "<return_to_handler>"


def _hooked(entry: Optional[Entry]) -> bool:
    return entry is not None and entry[0] in RETURN_TO_HANDLER_NAMES


def hidden_by_hooks(nofgraph: List[Entry], with_fgraph: List[Entry]) -> Optional[Set[int]]:
    """
    None when ``with_fgraph`` cannot be read as ``nofgraph`` with some return
    addresses hooked; else the lines of ``nofgraph`` that a return_to_handler
    line stands for in some reading. Each return_to_handler line stands for
    one line of ``nofgraph`` or for a scheduler function (which
    /proc/PID/stack drops only while it is not hooked); every other line is
    equal.
    """
    memo: Dict[Tuple[int, int], Optional[Set[int]]] = {}

    def go(i: int, j: int) -> Optional[Set[int]]:
        if (i, j) not in memo:
            readings: List[Set[int]] = []
            if j == len(with_fgraph):
                if i == len(nofgraph):
                    readings.append(set())
            elif _hooked(with_fgraph[j]):
                rest = go(i + 1, j + 1) if i < len(nofgraph) else None
                if rest is not None:
                    readings.append(rest | {i})
                rest = go(i, j + 1)
                if rest is not None:
                    readings.append(rest)
            elif i < len(nofgraph) and nofgraph[i] == with_fgraph[j]:
                rest = go(i + 1, j + 1)
                if rest is not None:
                    readings.append(rest)
            memo[i, j] = set().union(*readings) if readings else None
        return memo[i, j]

    return go(0, 0)


def aligns(nofgraph: List[Entry], with_fgraph: List[Entry]) -> bool:
    """``with_fgraph`` can be read as ``nofgraph`` with some return addresses hooked."""
    return hidden_by_hooks(nofgraph, with_fgraph) is not None


def same_point(nofgraph: List[Optional[Entry]], with_fgraph: List[Optional[Entry]]) -> bool:
    """The task never ran between the two captures: /proc/PID/stack is the
    same and shows no hooked return (a task that ran would have entered
    traced functions, at least the scheduler's)."""
    return nofgraph[1:] == with_fgraph[1:] and not any(map(_hooked, with_fgraph))


def _sched_ranges(prog) -> List[Tuple[int, int]]:
    ranges = []
    for start, end in (("__sched_text_start", "__sched_text_end"),
                       ("__lock_text_start", "__lock_text_end")):
        try:
            ranges.append((prog.symbol(start).address, prog.symbol(end).address))
        except LookupError:
            pass
    return ranges


def _drgn_name(prog, address: int) -> Entry:
    from drgn.helpers.linux.module import address_to_module

    sym = prog.symbol(address)
    mod = address_to_module(prog, address)
    return sym.name, address - sym.address, (mod.name.string_().decode() if mod else None)


def raw_livepatch_lrs(prog, pid: int) -> List[int]:
    """Saved LRs of a task's livepatch stack, newest first, by plain reads."""
    from drgn.helpers.linux.pid import find_task

    task = find_task(prog, pid)
    sp = task.thread_info.livepatch_sp.value_()
    base = task.stack.value_() + 8
    return [prog.read_u64(at - 16) for at in range(sp, base, -24)]


def _kernel_view_of_raw_frames(name: str, trace) -> List[Entry]:
    """What /proc/PID/stack would print for the dump-time raw frames (drgn's
    own symbol lookup; return_to_handler by address)."""
    from lpdebug.fgraph import return_to_handler_address

    prog = program(name)
    rth = return_to_handler_address(prog)
    ranges = _sched_ranges(prog)
    view: List[Entry] = []
    for frame in trace.frames:
        if any(start <= frame.raw_pc < end for start, end in ranges):
            continue
        view.append((RTH, 0, None) if frame.raw_pc == rth else _drgn_name(prog, frame.raw_pc))
    return view


def ran_after_capture(name: str, pid: int) -> bool:
    """The task switched context after the truth's ``ctxt`` capture (False when there is none): its
    nvcsw + nivcsw in the dump, by plain reads, exceed /proc/PID/status's counts."""
    from drgn.helpers.linux.pid import find_task

    text = read_truth(name, "tasks", str(pid), "ctxt")
    if text is None:
        return False
    counts = [int(n) for n in re.findall(r"^(?:non)?voluntary_ctxt_switches:\s*(\d+)$", text, re.M)]
    assert len(counts) == 2, f"unparsable tasks/{pid}/ctxt: {text!r}"
    task = find_task(program(name), pid)
    return task.nvcsw.value_() + task.nivcsw.value_() != sum(counts)


def oracle_frames(name: str, trace) -> Tuple[Optional[List[Entry]], str]:
    """
    The kernel's view of a task's true backtrace and which kind of task gave
    it: ``"still"`` (never ran between the captures), ``"again"`` (ran, and
    slept again at the same point: the function_graph capture aligns with
    the earlier one and the dump still shows that capture), or None with the
    reason the task cannot be compared.
    """
    pid = trace.pid
    nofgraph_text = read_truth(name, "tasks", str(pid), "stack.nofgraph")
    fgraph_text = read_truth(name, "tasks", str(pid), "stack")
    if nofgraph_text is None or fgraph_text is None:
        return None, "no capture"
    if ran_after_capture(name, pid):
        return None, "ran after the capture (context switches)"
    nofgraph = parse_stack(nofgraph_text)
    with_fgraph = parse_stack(fgraph_text)
    if len(nofgraph) < 2 or None in nofgraph[1:] or None in with_fgraph[1:]:
        return None, "raw addresses in the capture"
    hidden: Set[int] = set()
    if any(map(_hooked, nofgraph[1:])):
        # function_graph was on before (an earlier stage of scale-tasks): the capture names no caller there
        return None, "hooked returns in the capture without function_graph"
    if same_point(nofgraph, with_fgraph):
        kind = "still"
    else:
        found = hidden_by_hooks(nofgraph[1:], with_fgraph[1:])
        if found is None:
            return None, "slept elsewhere with function_graph on"
        kind, hidden = "again", found
    shown = [(RTH, 0, None) if _hooked(e) else e for e in with_fgraph[1:]]
    if _kernel_view_of_raw_frames(name, trace) != shown:
        return None, "moved after the function_graph capture"
    prog = program(name)
    entries = nofgraph[1:]
    lrs = iter(raw_livepatch_lrs(prog, pid)) if any(
        e[0] == "livepatch_handler" for e in entries) else iter(())
    result: List[Entry] = []
    for index, entry in enumerate(entries):
        if index in hidden and entry[0] != "livepatch_handler":
            # A hooked line shows return_to_handler: the function is the one this task
            # slept in, its call site is not shown (reason 4 of the module docstring).
            result.append((entry[0], ANY_OFFSET, entry[2]))
        elif entry[0] == "livepatch_handler":
            lr = next(lrs, None)
            if lr is None:
                return None, "livepatch_handler without a livepatch-stack entry"
            named = _drgn_name(prog, lr)
            if named[0] in RETURN_TO_HANDLER_NAMES:
                return None, "the hidden caller's LR was hooked: no independent name"
            result.append(named)
        else:
            result.append(entry)
    return result, kind


def our_frames(name: str, trace) -> List[Entry]:
    """lpdebug's true backtrace, without the frames /proc/PID/stack skips."""
    ranges = _sched_ranges(program(name))
    return [(f.symbol, f.offset, f.module) for f in trace.frames
            if not any(start <= f.pc < end for start, end in ranges)]


# The offset of an oracle line that a hooked return hides (see oracle_frames).
ANY_OFFSET = -1


def same_frames(ours: List[Entry], expected: List[Entry]) -> bool:
    """Equal, line by line; where the oracle cannot show the offset, the function and module."""
    return len(ours) == len(expected) and all(
        o == e or (e[1] == ANY_OFFSET and (o[0], o[2]) == (e[0], e[2]))
        for o, e in zip(ours, expected))


def agreement(name: str) -> Dict[str, object]:
    """Tasks compared with the oracle, per kind, the equal ones, the
    differences, and why the other tasks were not compared."""
    compared = {"still": 0, "again": 0}
    equal = {"still": 0, "again": 0}
    differences = []
    skipped: Dict[str, int] = {}
    for trace in traces(name):
        expected, kind = oracle_frames(name, trace)
        if expected is None:
            skipped[kind] = skipped.get(kind, 0) + 1
            continue
        compared[kind] += 1
        ours = our_frames(name, trace)
        if same_frames(ours, expected):
            equal[kind] += 1
        else:
            differences.append(f"pid {trace.pid} ({trace.comm}, {kind}): ours {ours} != "
                               f"kernel {expected}")
    return {"compared": compared, "equal": equal, "differences": differences,
            "skipped": skipped}


# --- the oracle helpers themselves must be able to fail ----------------------


def test_parse_stack_reads_raw_and_module_lines():
    text = ("[<0>] 0xc00000000286bbf0\n[<0>] __switch_to+0x2f4/0x39c\n"
            "[<0>] livepatch_x_patch+0x30/0x44 [lpd_patch]\n")
    assert parse_stack(text) == [None, ("__switch_to", 0x2F4, None),
                                 ("livepatch_x_patch", 0x30, "lpd_patch")]


def test_same_point_and_alignment_reject_a_task_that_moved():
    before = [None, ("__switch_to", 0x2F4, None), ("do_wait", 0xF4, None)]
    hooked = [None, ("__switch_to", 0x2F4, None), ("mcount", 0x10, None)]
    moved = [None, ("__switch_to", 0x2F4, None), ("do_select", 0x20, None)]
    assert same_point(before, before) and not same_point(before, hooked)
    assert not same_point(before, moved)
    assert aligns(before[1:], hooked[1:])
    assert aligns(before[1:], hooked[1:] + [("mcount", 0x10, None)])  # a hooked sched function
    assert not aligns(before[1:], moved[1:])
    assert not aligns(before[1:] + [("kthread", 0x108, None)], hooked[1:])
    # the hooked line stands for do_wait (whose call site it hides) or for a sched function
    assert hidden_by_hooks(before[1:], hooked[1:]) == {1}
    assert hidden_by_hooks(before[1:], before[1:]) == set()
    assert hidden_by_hooks(before[1:], moved[1:]) is None
    hidden = [("do_wait", ANY_OFFSET, None)]
    assert same_frames([("do_wait", 0x40, None)], hidden)
    assert not same_frames([("do_select", 0xF4, None)], hidden)
    assert not same_frames([("do_wait", 0xF4, "lpd_victim")], hidden)
    assert not same_frames([("do_wait", 0x40, None)], [("do_wait", 0xF4, None)])


# --- end to end ---------------------------------------------------------------


@pytest.mark.parametrize("name", SCENARIOS)
def test_true_backtraces_equal_the_kernels_view(name):
    result = agreement(name)
    print(f"{name}: equal/compared {result['equal']}/{result['compared']}, "
          f"not compared {result['skipped']}")
    assert result["compared"]["still"] > 0, f"{name}: no task slept through both captures"
    assert sum(result["compared"].values()) >= MIN_COMPARED.get(name, 1), result["compared"]
    assert not result["differences"], "\n".join(result["differences"])


@pytest.mark.parametrize("name", ["settled", "settled-6.1", "settled-64k", "nolivepatch",
                                  "settled-5.10"] + SCALE_SCENARIOS)
def test_fgraph_frames_resolved_by_retp(name):
    """Every return_to_handler in the stacks is resolved, by the entry whose
    retp is the frame's own SP (the 6.12 word-offset layout, the 6.1 array,
    64K pages, Debian's own 6.1 kernel)."""
    prog = program(name)
    from lpdebug.fgraph import return_to_handler_address

    rth = return_to_handler_address(prog)
    resolved = 0
    for trace in traces(name):
        assert trace.ret_stack_diagnostics == [], (trace.pid, trace.ret_stack_diagnostics)
        by_address = {e.address: e for e in trace.ret_stack}
        for frame in trace.frames:
            assert frame.pc != rth, f"pid {trace.pid} frame {frame.index} left unresolved"
            if frame.source == "fgraph":
                entry = by_address[frame.fgraph_entry]
                assert frame.raw_pc == rth
                assert entry.retp == frame.sp and entry.ret == frame.pc
                resolved += 1
    assert resolved > 0, f"{name} has function_graph on: some frame must be hooked"


@pytest.mark.parametrize("name", ["settled", "settled-5.10"])
def test_livepatch_frames_restore_the_hidden_caller_on_settled(name):
    """The kthread whose callee is livepatched shows its own function where
    /proc/PID/stack shows livepatch_handler."""
    s = scenario(name)
    pid = s["lpd_pids"]["lpd_lp_victim"]
    trace = next(t for t in traces(name) if t.pid == pid)
    frames = [f for f in trace.frames if f.source == "livepatch"]
    assert len(frames) == len(trace.livepatch_stack.entries) == 1
    frame = frames[0]
    assert frame.symbol == "lpd_lp_thread" and frame.module == "lpd_victim"
    # The address the unwinder found is livepatch_handler's, or return_to_handler
    # standing for it when the graph tracer hooked the replacement's return.
    hidden = frame.raw_pc
    if frame.fgraph_entry is not None:
        hidden = next(e.ret for e in trace.ret_stack if e.address == frame.fgraph_entry)
    assert program(name).symbol(hidden).name == "livepatch_handler"



def _klp_old_and_new(prog) -> List[Tuple[int, int]]:
    """(old_func, new_func) of every klp_func, read with drgn's list helpers."""
    from drgn.helpers.linux.list import list_for_each_entry

    pairs = []
    for patch in list_for_each_entry("struct klp_patch", prog["klp_patches"].address_of_(), "list"):
        for obj in list_for_each_entry("struct klp_object", patch.obj_list.address_of_(), "node"):
            for func in list_for_each_entry("struct klp_func", obj.func_list.address_of_(), "node"):
                pairs.append((func.old_func.value_(), func.new_func.value_()))
    return pairs


def _called_from(prog, return_address: int) -> Optional[int]:
    """What the ``bl`` just before ``return_address`` calls: the function
    itself, or the target a module stub jumps to."""
    insn = prog.read_u32(return_address - 4)
    if insn & 0xFC000003 != 0x48000001:
        return None
    offset = insn & 0x03FFFFFC
    if offset & 0x02000000:
        offset -= 0x04000000
    target = return_address - 4 + offset
    if prog.read_u32(target + 28) == 0x73747562:  # STUB_MAGIC: a module stub
        return prog.read_u64(target + 32)
    return target


@pytest.mark.parametrize("name", ["settled", "stuck", "stacked", "toc-corrupt", "toc-crash",
                                  "settled-6.1", "settled-64k", "settled-5.10", "stuck-5.10",
                                  "toc-corrupt-5.10", "toc-crash-5.10", "panic-5.10"] + SCALE_SCENARIOS)
def test_livepatch_callers_call_the_patched_function(name):
    """
    Every caller restored from the livepatch stack returns right after a call
    of the patched (old) function: the instruction before its true return
    address is a ``bl`` to the old function's global or local entry (a call
    inside its module), or to a module stub whose target is the old function
    (a call from another module). The old functions are read from the
    kernel's klp_funcs with drgn's list helpers; nothing of the walk that
    found the caller is reused.
    """
    prog = program(name)
    pairs = _klp_old_and_new(prog)
    checked = 0
    for trace in traces(name):
        for frame in trace.frames:
            if frame.source != "livepatch":
                continue
            callee = trace.frames[frame.index - 1]
            olds = {old for old, new in pairs
                    if prog.symbol(new).address == prog.symbol(callee.pc).address}
            assert olds, f"pid {trace.pid}: frame {frame.index - 1} runs no replacement"
            called = _called_from(prog, frame.pc)
            assert called in olds | {old + 8 for old in olds}, (
                f"pid {trace.pid} frame {frame.index}: {frame.symbol}+{frame.offset:#x} "
                f"follows a call of {called and hex(called)}, not of {sorted(map(hex, olds))}")
            checked += 1
    assert checked > 0, f"{name}: no caller was restored from a livepatch stack"


CRASH_SCENARIOS = ["toc-crash", "toc-crash-5.10"]


def _crashed_trace(name: str):
    crashed = [t for t in traces(name) if t.crashed]
    assert len(crashed) == 1, f"{name}: {len(crashed)} crashed tasks"
    return crashed[0]


@pytest.mark.parametrize("name", CRASH_SCENARIOS)
def test_crashed_task_backtrace_equals_the_oops_on_the_console(name):
    """The crashed task's true backtrace is the one the kernel's own oops
    printed (tests/oops.py): same functions, offsets, modules and stack
    pointers, frame for frame."""
    from oops import oops_frames

    with open(scenario(name)["console"], errors="replace") as f:
        want = oops_frames(f.read())
    trace = _crashed_trace(name)
    assert trace.cpu_unwind == "exception", "an oops saves its exception frame in the crash note"
    got = [(f.symbol, f.offset, f.module) for f in trace.frames]
    assert got == [w.key() for w in want], f"{name}: ours {got}\noops {[w.key() for w in want]}"
    assert [f.sp for f in trace.frames] == [w.sp if w.sp is not None else f.sp
                                           for f, w in zip(trace.frames, want)]


@pytest.mark.parametrize("name, drgn_start", [("toc-crash", "nip"), ("toc-crash-5.10", "link")])
def test_drgn_starts_its_crash_note_trace_where_its_release_list_says(name, drgn_start):
    """drgn's own trace of the crashed thread (from the vmcore's NT_PRSTATUS)
    starts at nip on 6.12 and at link on 5.10, which its release list
    (libdrgn/arch_ppc64.c) takes for a kernel without b684c09f09e7; the oops
    (previous test) shows nip is right on both, which lpdebug follows."""
    prog = program(name)
    trace = _crashed_trace(name)
    drgn_frames = prog.crashed_thread().stack_trace()
    assert drgn_frames[0].pc == trace.cpu_registers[drgn_start]
    assert trace.frames[0].pc == trace.cpu_registers["nip"] != trace.cpu_registers["link"]


def test_panic_backtrace_equals_the_panic_stack_dump_on_the_console():
    """A panic() without an exception frame (sysrq c): the crash note comes
    from ppc_save_regs() in __crash_kexec(), so the true backtrace starts
    there ("saved"); from panic() outward it is the stack panic()'s
    dump_stack() printed: the same frames (stack pointers) and, beyond panic,
    the same return addresses. drgn, by its release list, starts at link."""
    from oops import call_trace_after

    name = "panic-5.10"
    with open(scenario(name)["console"], errors="replace") as f:
        dump = call_trace_after(f.read(), "Kernel panic - not syncing")
    trace = _crashed_trace(name)
    assert trace.cpu_unwind == "saved" and trace.cpu_registers["trap"] == 0
    assert trace.frames[0].symbol == "__crash_kexec" and trace.frames[0].sp == trace.cpu_registers["r1"]
    first = next(i for i, e in enumerate(dump) if e.symbol == "panic")
    want, got = dump[first:], trace.frames[1:]
    assert [(f.symbol, f.sp) for f in got] == [(e.symbol, e.sp) for e in want], (got, want)
    assert [(f.symbol, f.offset, f.module) for f in got[1:]] == [e.key() for e in want[1:]]
    drgn_frames = program(name).crashed_thread().stack_trace()
    assert drgn_frames[0].pc == trace.cpu_registers["link"] != trace.frames[0].pc
