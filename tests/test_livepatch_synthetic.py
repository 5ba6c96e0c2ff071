# SPDX-License-Identifier: GPL-2.0-or-later
"""
Synthetic tests of lpdebug.livepatch: mock kernels with the layouts and
broken states the real testbed does not reach (the array layout of kernels
up to 5.0, the 4.4 `state` members, cyclic lists, faulting reads, a kernel
without livepatch). The 5.2+ list layout is also built here so the transition
and blocking logic can be driven into states a running kernel passes through
only briefly.
"""

import pytest

import drgn

from lpdebug import livepatch
from lpdebug.model import DiagnosticKind, Frame, TaskTrace
from synthetic import FAULT_ADDRESS, MockKernel, define_list_head

pytestmark = pytest.mark.synthetic

VMLINUX_TEXT = 0xC000000000010000
MODULE_BASE = 0xC008000000100000


def _common(mk):
    define_list_head(mk)
    mk.struct("module", [("char [56]", "name")])
    mk.symbol("_text", 0xC000000000000000, 0, kind=drgn.SymbolKind.UNKNOWN)
    mk.symbol("_end", 0xC000000001000000, 0, kind=drgn.SymbolKind.UNKNOWN)
    mk.symbol("cmdline_proc_show", VMLINUX_TEXT, 0x80)
    mk.symbol("meminfo_proc_show", VMLINUX_TEXT + 0x100, 0x200)
    mk.symbol("livepatch_cmdline_proc_show", MODULE_BASE + 0x40, 0x60)
    mk.symbol("livepatch_cmdline_proc_show_v2", MODULE_BASE + 0x1000, 0x60)


def _module(mk, name):
    mod = mk.alloc("struct module")
    mk.write(mod, name.encode() + b"\0")
    return mod


def build_list_layout(mk, *, transition=True, target=1):
    """A 6.12-like kernel: two patches on cmdline_proc_show stacked, the second in transition."""
    _common(mk)
    mk.struct("klp_func", [
        ("char *", "old_name"), ("void *", "new_func"), ("unsigned long", "old_sympos"),
        ("void *", "old_func"), ("struct list_head", "node"), ("struct list_head", "stack_node"),
        ("unsigned long", "old_size"), ("unsigned long", "new_size"),
        ("bool", "nop"), ("bool", "patched"), ("bool", "transition"),
    ])
    mk.struct("klp_object", [
        ("char *", "name"), ("struct klp_func *", "funcs"), ("struct list_head", "func_list"),
        ("struct list_head", "node"), ("struct module *", "mod"), ("bool", "dynamic"), ("bool", "patched"),
    ])
    mk.struct("klp_state", [("unsigned long", "id"), ("unsigned int", "version"), ("void *", "data")])
    mk.struct("klp_patch", [
        ("struct module *", "mod"), ("struct klp_object *", "objs"), ("struct klp_state *", "states"),
        ("bool", "replace"), ("struct list_head", "list"), ("struct list_head", "obj_list"),
        ("bool", "enabled"), ("bool", "forced"),
    ])
    mk.struct("klp_ops", [("struct list_head", "node"), ("struct list_head", "func_stack")])
    mk.struct("task_struct", [("int", "pid"), ("int", "patch_state")])
    patches = mk.variable("klp_patches", "struct list_head")
    mk.list_init(patches)
    ops_head = mk.variable("klp_ops", "struct list_head")
    mk.list_init(ops_head)
    mk.variable("klp_transition_patch", "struct klp_patch *")
    target_addr = mk.variable("klp_target_state", "int")
    mk.write_int(target_addr, target if transition else -1, 4)

    name = mk.string("cmdline_proc_show")
    ops = mk.new("struct klp_ops")
    mk.list_init(ops + 16)
    mk.list_add_tail(ops_head, ops)
    result = {"ops": ops}
    for i, (modname, new) in enumerate([("livepatch_sample", MODULE_BASE + 0x40),
                                         ("livepatch_sample2", MODULE_BASE + 0x1000)]):
        patch = mk.new("struct klp_patch", mod=_module(mk, modname), enabled=1, replace=i)
        mk.list_init(patch + drgn.offsetof(mk.type("struct klp_patch"), "obj_list"))
        mk.list_add_tail(patches, patch + drgn.offsetof(mk.type("struct klp_patch"), "list"))
        obj = mk.new("struct klp_object", patched=1)
        mk.list_init(obj + drgn.offsetof(mk.type("struct klp_object"), "func_list"))
        mk.list_add_tail(patch + drgn.offsetof(mk.type("struct klp_patch"), "obj_list"),
                         obj + drgn.offsetof(mk.type("struct klp_object"), "node"))
        last = i == 1
        func = mk.new("struct klp_func", old_name=name, new_func=new, old_func=VMLINUX_TEXT,
                      old_size=0x80, new_size=0x60, patched=1, transition=int(last and transition))
        mk.list_add_tail(obj + drgn.offsetof(mk.type("struct klp_object"), "func_list"),
                         func + drgn.offsetof(mk.type("struct klp_func"), "node"))
        result[modname] = (patch, obj, func)
    # func_stack: newest first.
    fo = drgn.offsetof(mk.type("struct klp_func"), "stack_node")
    mk.list_add_tail(ops + 16, result["livepatch_sample2"][2] + fo)
    mk.list_add_tail(ops + 16, result["livepatch_sample"][2] + fo)
    states = mk.alloc(2 * 24)
    mk.set(states, "struct klp_state", "id", 7)
    mk.set(states, "struct klp_state", "version", 2)
    mk.set(result["livepatch_sample2"][0], "struct klp_patch", "states", states)
    if transition:
        mk.write_int(mk.prog["klp_transition_patch"].address_, result["livepatch_sample2"][0])
    return result


def test_list_layout_patches_objects_funcs_synthetic():
    mk = MockKernel()
    built = build_list_layout(mk)
    state = livepatch.livepatch_state(mk.prog)
    assert state.diagnostics == []
    assert [p.name for p in state.patches] == ["livepatch_sample", "livepatch_sample2"]
    first, second = state.patches
    assert (first.enabled, first.replace, first.transition) == (True, False, False)
    assert (second.enabled, second.replace, second.transition) == (True, True, True)
    assert [(s.id, s.version) for s in second.states] == [(7, 2)]
    assert first.states == []
    (obj,) = second.objects
    assert obj.name is None and obj.loaded and obj.patched
    (func,) = obj.funcs
    assert func.name == "cmdline_proc_show"
    assert func.old_addr == VMLINUX_TEXT and func.new_addr == MODULE_BASE + 0x1000
    assert func.new_symbol == "livepatch_cmdline_proc_show_v2"
    assert func.transition and func.patched and not func.nop
    assert state.transition.patch == "livepatch_sample2"
    assert state.transition.target_state == "patched"
    (ops,) = state.ops
    assert ops.old_symbol == "cmdline_proc_show"
    assert ops.func_stack == [built["livepatch_sample2"][2], built["livepatch_sample"][2]]
    assert ops.active == built["livepatch_sample2"][2]


def _trace(pid, patch_state, pcs):
    return TaskTrace(pid=pid, comm=f"t{pid}", state="S", patch_state=patch_state, address=0,
                     frames=[Frame(index=i, pc=pc, sp=0, symbol=None, offset=None, module=None,
                                   source="unwound", raw_pc=pc) for i, pc in enumerate(pcs)])


def test_blocking_tasks_patching_checks_previous_replacement_synthetic():
    # Patching over an earlier patch: the kernel waits for tasks running the
    # previous replacement (livepatch_cmdline_proc_show), not the original.
    mk = MockKernel()
    build_list_layout(mk)
    state = livepatch.livepatch_state(mk.prog)
    traces = [
        _trace(1, 1, [0xC000000000020000, MODULE_BASE + 0x50]),  # already patched: not blocking
        _trace(2, 0, [0xC000000000020000, MODULE_BASE + 0x50, 0xC000000000030000]),
        _trace(3, 0, [VMLINUX_TEXT + 0x10]),  # the original is not what the kernel checks here
        _trace(4, None, [MODULE_BASE + 0x50]),  # no patch_state known
    ]
    blocking = livepatch.blocking_tasks(state, traces)
    assert [(b.pid, b.function, b.frame) for b in blocking] == [
        (2, "cmdline_proc_show", 1), (3, None, None)]


def test_blocking_tasks_unpatching_checks_new_function_synthetic():
    mk = MockKernel()
    build_list_layout(mk, target=0)
    state = livepatch.livepatch_state(mk.prog)
    assert state.transition.target_state == "unpatched"
    traces = [_trace(5, 1, [MODULE_BASE + 0x1010]), _trace(6, 1, [MODULE_BASE + 0x50])]
    blocking = livepatch.blocking_tasks(state, traces)
    assert [(b.pid, b.function, b.frame) for b in blocking] == [(5, "cmdline_proc_show", 0), (6, None, None)]


def test_no_transition_means_no_blocking_synthetic():
    mk = MockKernel()
    build_list_layout(mk, transition=False)
    state = livepatch.livepatch_state(mk.prog)
    assert state.transition.patch is None and state.transition.target_state is None
    assert not any(p.transition for p in state.patches)
    assert livepatch.blocking_tasks(state, [_trace(2, 0, [MODULE_BASE + 0x50])]) == []


def test_cyclic_patch_list_is_bounded_and_reported_synthetic():
    mk = MockKernel()
    built = build_list_layout(mk, transition=False)
    # Make the second patch's list node point back at the first (a cycle that skips the head).
    lo = drgn.offsetof(mk.type("struct klp_patch"), "list")
    mk.write_int(built["livepatch_sample2"][0] + lo, built["livepatch_sample"][0] + lo)
    state = livepatch.livepatch_state(mk.prog)
    assert [p.name for p in state.patches] == ["livepatch_sample", "livepatch_sample2"]
    assert any("cycle" in e.message and "klp_patches" in e.message and e.kind is DiagnosticKind.CYCLE
               for e in state.diagnostics)


def test_faulting_object_list_keeps_the_rest_synthetic():
    mk = MockKernel()
    built = build_list_layout(mk, transition=False)
    po = drgn.offsetof(mk.type("struct klp_patch"), "obj_list")
    mk.write_int(built["livepatch_sample"][0] + po, FAULT_ADDRESS)
    state = livepatch.livepatch_state(mk.prog)
    assert [p.name for p in state.patches] == ["livepatch_sample", "livepatch_sample2"]
    assert state.patches[0].objects == []
    assert len(state.patches[1].objects) == 1
    assert any("unreadable" in e.message and e.kind is DiagnosticKind.UNREADABLE
               for e in state.diagnostics)


def build_array_layout(mk, *, with_state_enum=False):
    """Kernels up to 5.0: static arrays of objects and funcs, no obj_list/func_list."""
    _common(mk)
    if with_state_enum:  # 4.4/4.9: `state` members instead of patched/enabled
        func_members = [("char *", "old_name"), ("void *", "new_func"), ("unsigned long", "old_sympos"),
                        ("unsigned long", "old_addr"), ("int", "state"), ("struct list_head", "stack_node")]
        obj_members = [("char *", "name"), ("struct klp_func *", "funcs"), ("struct module *", "mod"), ("int", "state")]
        patch_members = [("struct module *", "mod"), ("struct klp_object *", "objs"),
                         ("struct list_head", "list"), ("int", "state")]
    else:  # 4.19-5.0
        func_members = [("char *", "old_name"), ("void *", "new_func"), ("unsigned long", "old_sympos"),
                        ("unsigned long", "old_addr"), ("struct list_head", "stack_node"),
                        ("unsigned long", "old_size"), ("unsigned long", "new_size"),
                        ("bool", "patched"), ("bool", "transition")]
        obj_members = [("char *", "name"), ("struct klp_func *", "funcs"), ("struct module *", "mod"),
                       ("bool", "patched")]
        patch_members = [("struct module *", "mod"), ("struct klp_object *", "objs"),
                         ("struct list_head", "list"), ("bool", "enabled")]
    mk.struct("klp_func", func_members)
    mk.struct("klp_object", obj_members)
    mk.struct("klp_patch", patch_members)
    patches = mk.variable("klp_patches", "struct list_head")
    mk.list_init(patches)
    funcs = mk.alloc(3 * drgn.sizeof(mk.type("struct klp_func")))  # two funcs and a terminator
    fsize = drgn.sizeof(mk.type("struct klp_func"))
    for i, (name, old, new) in enumerate([("cmdline_proc_show", VMLINUX_TEXT, MODULE_BASE + 0x40),
                                           ("meminfo_proc_show", VMLINUX_TEXT + 0x100, MODULE_BASE + 0x1000)]):
        f = funcs + i * fsize
        mk.set(f, "struct klp_func", "old_name", mk.string(name))
        mk.set(f, "struct klp_func", "new_func", new)
        mk.set(f, "struct klp_func", "old_addr", old)
        mk.set(f, "struct klp_func", "old_sympos", i)
        mk.set(f, "struct klp_func", "state" if with_state_enum else "patched", 1)
    osize = drgn.sizeof(mk.type("struct klp_object"))
    objs = mk.alloc(2 * osize)
    mk.set(objs, "struct klp_object", "funcs", funcs)
    mk.set(objs, "struct klp_object", "state" if with_state_enum else "patched", 1)
    patch = mk.new("struct klp_patch", mod=_module(mk, "livepatch_old"), objs=objs)
    mk.set(patch, "struct klp_patch", "state" if with_state_enum else "enabled", 1)
    mk.list_add_tail(patches, patch + drgn.offsetof(mk.type("struct klp_patch"), "list"))
    return patch


@pytest.mark.parametrize("with_state_enum", [False, True], ids=["4.19-5.0", "4.4-4.9"])
def test_array_layout_synthetic(with_state_enum):
    mk = MockKernel()
    build_array_layout(mk, with_state_enum=with_state_enum)
    assert livepatch.list_layout(mk.prog) == "array"
    state = livepatch.livepatch_state(mk.prog)
    assert state.diagnostics == []
    (patch,) = state.patches
    assert patch.name == "livepatch_old" and patch.enabled and not patch.replace
    (obj,) = patch.objects
    assert obj.name is None and obj.patched
    assert [(f.name, f.sympos, f.old_addr, f.new_symbol, f.patched, f.nop) for f in obj.funcs] == [
        ("cmdline_proc_show", 0, VMLINUX_TEXT, "livepatch_cmdline_proc_show", True, False),
        ("meminfo_proc_show", 1, VMLINUX_TEXT + 0x100, "livepatch_cmdline_proc_show_v2", True, False),
    ]


def test_unterminated_func_array_is_bounded_synthetic():
    mk = MockKernel()
    build_array_layout(mk)
    (patch,) = livepatch.for_each_klp_patch(mk.prog)
    obj = next(livepatch.for_each_klp_object(patch))
    # Point funcs just below the arena's end: the walk runs off mapped memory and must stop.
    fsize = drgn.sizeof(mk.type("struct klp_func"))
    from synthetic import ARENA_BASE
    last = ARENA_BASE + len(mk.arena) - fsize
    mk.write(last, b"\x01" * fsize)
    mk.set(obj.value_(), "struct klp_object", "funcs", last)
    errors = []
    funcs = list(livepatch.for_each_klp_func(obj, errors))
    assert len(funcs) == 1
    assert errors and "unreadable" in errors[0].message


def test_kernel_without_livepatch_synthetic():
    mk = MockKernel()
    define_list_head(mk)
    state = livepatch.livepatch_state(mk.prog)
    assert state.patches == [] and state.ops == []
    assert state.transition.patch is None
    assert "CONFIG_LIVEPATCH" in state.unavailable and state.diagnostics == []


def test_shadow_variable_count_synthetic():
    mk = MockKernel()
    define_list_head(mk)
    table = mk.variable("klp_shadow_hash", "struct hlist_head [16]")
    # Bucket 3 holds two entries, bucket 9 one.
    a, b, c = (mk.alloc(64) for _ in range(3))
    mk.write_int(table + 3 * 8, a)
    mk.write_int(a, b)
    mk.write_int(table + 9 * 8, c)
    assert livepatch.shadow_variable_count(mk.prog) == 3
    mk.write_int(b, a)  # a cycle
    errors = []
    livepatch.shadow_variable_count(mk.prog, errors)
    assert errors and "cyclic" in errors[0].message and errors[0].kind is DiagnosticKind.CYCLE
