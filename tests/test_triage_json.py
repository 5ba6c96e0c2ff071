# SPDX-License-Identifier: GPL-2.0-or-later
"""
lpdebug.schema's to_json/dumps on hand-built model objects (schema
conformance, exact values, determinism), and lpdebug.report's triage() rule
that a failing stage becomes a typed diagnostic, the rest of the report goes
on and the exit status says "incomplete".
"""

import json
import random

import lpdebug
import pytest

from lpdebug import model, report, schema
from lpdebug.model import Diagnostic, DiagnosticKind
from lpdebug.toc import ModuleToc, TocMap
from test_triage_schema import validate_triage

VMLINUX_TOC = 0xC000000001A7B100
MOD_TOC = 0xC0080000000C8000
RTH = 0xC00000000008C2F0  # return_to_handler
LPH = 0xC00000000008C400  # livepatch_handler


def _func(i):
    return model.KlpFunc(
        address=0xC0080000001D0000 + 0x40 * i, name=f"victim_fn{i}", sympos=i % 2,
        old_addr=0xC008000000050000 + 0x100 * i, new_addr=0xC0080000001C0000 + 0x100 * i,
        new_symbol=f"livepatch_victim_fn{i}", new_module="lp_test", old_module="victim",
        old_size=0x80, new_size=0x90, patched=True, transition=i == 1, nop=False)


def _task(pid, *, with_stacks=False):
    frames = [
        model.Frame(index=0, pc=0xC000000000021234, sp=0xC000000004A3FD00,
                    symbol="__switch_to", offset=0x134, module=None, source="unwound",
                    raw_pc=0xC000000000021234),
    ]
    trace = model.TaskTrace(pid=pid, comm=f"task{pid}", state="S", patch_state=1,
                            address=0xC000000004A30000 + pid * 0x1000, frames=frames)
    if with_stacks:
        trace.frames.append(model.Frame(
            index=1, pc=0xC008000000050044, sp=0xC000000004A3FE00, symbol="victim_thread",
            offset=0x44, module="victim", source="livepatch", raw_pc=LPH + 0x30,
            toc_restore=True, toc_slot=MOD_TOC))
        trace.ret_stack = [model.FgraphEntry(index=0, ret=0xC000000000190000, func=0xC0000000001A0000,
                                             retp=0xC000000004A3FF00, address=0xC000000005000000)]
        trace.livepatch_stack = model.LivepatchStack(
            base=0xC000000004A3C008, sp=0xC000000004A3C020,
            entries=[model.LivepatchStackEntry(address=0xC000000004A3C008, toc=MOD_TOC,
                                               lr=RTH, real_lr=0xC008000000050044,
                                               magic=0x57AC6E9D, magic_ok=True)])
    return trace


def _result():
    funcs = [_func(0), _func(1)]
    patch = model.KlpPatch(
        address=0xC0080000001E0000, name="lp_test", module="lp_test", enabled=True,
        transition=True, replace=False, forced=False,
        objects=[model.KlpObject(address=0xC0080000001E1000, name="victim", loaded=True,
                                 patched=True, dynamic=False, funcs=funcs)],
        states=[model.KlpState(id=1, version=2, data=0)])
    lp = model.LivepatchState(
        patches=[patch],
        ops=[model.KlpOps(address=0xC000000007000000 + i, old_addr=f.old_addr,
                          old_symbol=f.name, func_stack=[f.address], active=f.address)
             for i, f in enumerate(funcs)],
        transition=model.KlpTransition(
            patch="lp_test", target_state="patched",
            blocking=[model.BlockingTask(pid=42, comm="task42", patch_state=0,
                                         function="victim_fn1", frame=1)]),
        shadow_count=0)
    ops = model.FtraceOps(address=0xC000000002000000, func=0xC000000000300000,
                          func_symbol="klp_ftrace_handler", owner=None,
                          flags=["ENABLED", "DYNAMIC", "IPMODIFY", "PERMANENT"], flags_raw=0x11003,
                          filter=[0xC008000000050108, 0xC008000000050008],
                          filter_symbols=["victim_fn1", "victim_fn0"])
    records = [model.FtraceRecord(ip=0xC008000000050008 + 0x100 * i, symbol=f"victim_fn{i}",
                                  module="victim", flags=["ENABLED", "IPMODIFY"],
                                  flags_raw=0xA0000001, refcount=1, ops=[ops.address])
               for i in range(2)]
    tocs = TocMap(tocs={
        "vmlinux": ModuleToc(module="vmlinux", toc=VMLINUX_TOC, source="paca"),
        "victim": ModuleToc(module="victim", toc=MOD_TOC, source=".toc",
                            section_address=MOD_TOC - 0x8000, prologues_checked=3),
    })
    findings = [
        model.Finding(kind="frame_toc_mismatch", severity="error", pid=42, frame=1,
                      address=0xC008000000050044, expected_toc=MOD_TOC, expected_module="victim",
                      actual_toc=VMLINUX_TOC, actual_module=None, message="frame #1 ..."),
        model.Finding(kind="toc_prologue_mismatch", severity="warning", pid=None, frame=None,
                      address=0xC008000000050000, expected_toc=MOD_TOC, expected_module="victim",
                      actual_toc=MOD_TOC + 8, actual_module=None, message="prologue ..."),
    ]
    return model.TriageResult(
        kernel=model.KernelInfo(release="6.12.57", arch="ppc64le", page_size=4096, mmu="radix",
                                elf_abi=2, build_id="ab" * 20, livepatch=True,
                                fgraph_layout="offset"),
        livepatch=lp,
        ftrace=model.FtraceState(ops=[ops], records=records, total_records=12830),
        tasks=[_task(1), _task(42, with_stacks=True), _task(7)],
        findings=findings,
        tocs=tocs,
        diagnostics=[Diagnostic("ftrace", DiagnosticKind.UNREADABLE, 0xC000000003000000,
                                "records of ftrace page 0xc000000003000000 unreadable")],
    )


def test_to_json_fits_the_schema():
    validate_triage(schema.to_json(_result()))


def test_to_json_values():
    doc = json.loads(schema.dumps(_result()))
    assert doc["schema"] == "lpdebug.triage/2"
    assert doc["kernel"] == {**doc["kernel"], "release": "6.12.57", "arch": "ppc64le",
                             "page_size": 4096, "mmu": "radix"}
    patch = doc["livepatch"]["patches"][0]
    assert (patch["name"], patch["enabled"], patch["transition"], patch["replace"]) == \
        ("lp_test", True, True, False)
    func = patch["objects"][0]["funcs"][1]
    assert func["name"] == "victim_fn1" and func["sympos"] == 1
    assert func["old_addr"] == 0xC008000000050100 and func["new_addr"] == 0xC0080000001C0100
    assert func["new_symbol"] == "livepatch_victim_fn1" and func["transition"] is True
    assert doc["livepatch"]["transition"] == {
        "patch": "lp_test", "target_state": "patched",
        "blocking": [{"pid": 42, "comm": "task42", "function": "victim_fn1", "patch_state": 0,
                      "frame": 1}],
        "attempts": None, "signals_sent": None, "retry_pending": None,
        "next_try_jiffies": None}
    ops = doc["ftrace"]["ops"][0]
    # filter IPs sorted, names kept beside their IP
    assert ops["filter"] == [0xC008000000050008, 0xC008000000050108]
    assert ops["filter_symbols"] == ["victim_fn0", "victim_fn1"]
    assert [r["ip"] for r in doc["ftrace"]["records"]] == [0xC008000000050008, 0xC008000000050108]
    assert [t["pid"] for t in doc["tasks"]] == [1, 7, 42]
    t42 = doc["tasks"][2]
    assert t42["frames"][1] == {**t42["frames"][1], "pc": 0xC008000000050044,
                                "symbol": "victim_thread", "module": "victim",
                                "source": "livepatch", "raw_pc": LPH + 0x30}
    assert t42["livepatch_stack"]["entries"] == [
        {"toc": MOD_TOC, "lr": RTH, "real_lr": 0xC008000000050044, "magic_ok": True,
         "address": 0xC000000004A3C008, "magic": 0x57AC6E9D}]
    assert t42["livepatch_stack"]["base"] == 0xC000000004A3C008
    assert t42["livepatch_stack"]["bounds_error"] is None
    assert t42["ret_stack"][0]["retp"] == 0xC000000004A3FF00
    assert doc["tasks"][0]["livepatch_stack"] is None
    # task-less finding first
    assert [f["kind"] for f in doc["findings"]] == ["toc_prologue_mismatch", "frame_toc_mismatch"]
    assert [i["module"] for i in doc["tocs"]["images"]] == ["victim", "vmlinux"]
    assert doc["diagnostics"] == [{
        "stage": "ftrace", "kind": "unreadable", "address": 0xC000000003000000,
        "message": "records of ftrace page 0xc000000003000000 unreadable"}]


def _walk(value):
    if isinstance(value, dict):
        for k, v in value.items():
            yield k, v
            yield from _walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v)


def test_addresses_are_integers():
    doc = schema.to_json(_result())
    address_keys = {"address", "old_addr", "new_addr", "ip", "pc", "sp", "raw_pc", "toc", "lr",
                    "real_lr", "ret", "func", "retp", "expected_toc", "actual_toc"}
    seen = set()
    for key, value in _walk(doc):
        if key in address_keys and value is not None:
            assert isinstance(value, int) and not isinstance(value, bool), (key, value)
            seen.add(key)
    assert seen == address_keys


def test_dumps_is_deterministic_whatever_the_input_order():
    reference = schema.dumps(_result())
    rng = random.Random(3)
    for _ in range(5):
        shuffled = _result()
        rng.shuffle(shuffled.tasks)
        rng.shuffle(shuffled.ftrace.records)
        rng.shuffle(shuffled.findings)
        rng.shuffle(shuffled.livepatch.ops)
        ops = shuffled.ftrace.ops[0]
        pairs = list(zip(ops.filter, ops.filter_symbols))
        rng.shuffle(pairs)
        ops.filter, ops.filter_symbols = [p[0] for p in pairs], [p[1] for p in pairs]
        shuffled.tocs = TocMap(tocs=dict(reversed(list(shuffled.tocs.tocs.items()))))
        assert schema.dumps(shuffled) == reference


def test_dumps_keeps_kernel_order_where_it_means_something():
    result = _result()
    second = model.KlpPatch(address=1, name="lp_second", module="lp_second", enabled=True,
                            transition=False, replace=False, forced=False)
    result.livepatch.patches.append(second)
    names = [p["name"] for p in json.loads(schema.dumps(result))["livepatch"]["patches"]]
    assert names == ["lp_test", "lp_second"]
    result.livepatch.patches.reverse()
    names = [p["name"] for p in json.loads(schema.dumps(result))["livepatch"]["patches"]]
    assert names == ["lp_second", "lp_test"]


def test_package_exports_triage_as_a_function_and_the_module_under_another_name():
    import types

    assert isinstance(lpdebug.triage, types.FunctionType)
    assert lpdebug.triage is report.triage
    assert lpdebug.to_json is schema.to_json and lpdebug.dumps is schema.dumps
    assert lpdebug.exit_status is report.exit_status
    assert type(report) is types.ModuleType  # no class swap


# --- triage(): a failing stage is a typed diagnostic and an incomplete result ------------


class FakeTask:
    def __init__(self, pid):
        self.pid = pid

    def value_(self):
        return 0xC000000004A30000 + self.pid


def _raise(exc):
    def fail(*args, **kwargs):
        raise exc
    return fail


@pytest.fixture
def stub_stages(monkeypatch):
    """Every stage of triage() on model objects, none raising; a test then breaks one."""
    from lpdebug import backtrace, checks, ftrace, kernel, livepatch, toc

    kinfo = model.KernelInfo(release="6.12.57", arch="ppc64le", page_size=4096, mmu="radix")
    traces = {1: _task(1), 42: _task(42, with_stacks=True)}
    in_transition = model.LivepatchState(
        transition=model.KlpTransition(patch="lp_test", target_state="patched"))
    monkeypatch.setattr(kernel, "kernel_info", lambda prog: kinfo)
    monkeypatch.setattr(kernel, "kernel_log", lambda prog: [])
    monkeypatch.setattr(livepatch, "livepatch_state", lambda prog, *a, **k: in_transition)
    monkeypatch.setattr(livepatch, "blocking_tasks", lambda state, traces: [])
    monkeypatch.setattr(ftrace, "read_ftrace_state",
                        lambda prog: (model.FtraceState(total_records=7), ftrace.RecordTable([], [])))
    monkeypatch.setattr(toc, "module_tocs", lambda prog, **k: TocMap())
    monkeypatch.setattr(livepatch, "missing_patches", lambda prog, state: [])
    monkeypatch.setattr(backtrace, "true_backtrace", lambda task, **k: traces[task.pid])
    _found_tasks(monkeypatch, 42, 1)
    monkeypatch.setattr(checks, "all_findings", lambda *a, **k: [])
    return monkeypatch


def _found_tasks(monkeypatch, *pids):
    """lpdebug.tasks.find_tasks gives these tasks, each found by the pid IDR alone."""
    from lpdebug import tasks

    found = [tasks.FoundTask(FakeTask(pid), [model.TaskSource.PID_IDR], pid) for pid in sorted(pids)]
    census = model.TaskCensus(found={"pid_idr": len(pids)}, tasks=len(pids), counted=len(pids),
                              nr_threads=len(pids))
    monkeypatch.setattr(tasks, "find_tasks", lambda prog: tasks.FoundTasks(found, census, []))
    monkeypatch.setattr(tasks, "Symbolizer", lambda prog: None)


def test_triage_with_no_failing_stage_is_complete(stub_stages):
    result = report.triage(object())
    assert result.diagnostics == []
    assert report.exit_status(result) == report.EXIT_CLEAN == 0


# The walker each stage of triage() calls, and the stage name its diagnostic must carry.
STAGE_WALKERS = [
    ("kernel", "lpdebug.kernel.kernel_info"),
    ("livepatch", "lpdebug.livepatch.livepatch_state"),
    ("ftrace", "lpdebug.ftrace.read_ftrace_state"),
    ("tasks", "lpdebug.tasks.find_tasks"),
    ("tasks", "lpdebug.backtrace.true_backtrace"),
    ("tocs", "lpdebug.toc.module_tocs"),
    ("checks", "lpdebug.checks.all_findings"),
    ("transition", "lpdebug.livepatch.blocking_tasks"),
    ("kernel_log", "lpdebug.kernel.kernel_log"),
]


def test_every_stage_is_injected():
    assert {stage for stage, _ in STAGE_WALKERS} == set(report.STAGES)


@pytest.mark.parametrize("stage, walker", STAGE_WALKERS)
def test_an_injected_failure_in_each_stage_is_a_typed_diagnostic_and_exit_3(stub_stages, stage,
                                                                             walker):
    stub_stages.setattr(walker, _raise(RuntimeError(f"injected into {walker}")))
    result = report.triage(object())
    assert result.diagnostics  # one, or one per task when each task's trace raises
    for diagnostic in result.diagnostics:
        assert diagnostic.stage == stage
        assert diagnostic.kind is DiagnosticKind.STAGE_FAILED
        assert "RuntimeError: injected into" in diagnostic.message
    assert report.exit_status(result) == report.EXIT_INCOMPLETE == 3
    # the rest of the report is still there
    assert result.ftrace.total_records == (0 if stage == "ftrace" else 7)
    validate_triage(schema.to_json(result))


def test_a_fault_in_a_stage_is_unreadable_at_the_faults_address(stub_stages):
    import drgn

    stub_stages.setattr("lpdebug.toc.module_tocs",
                        _raise(drgn.FaultError("could not read", 0xC008000000123000)))
    (diagnostic,) = report.triage(object()).diagnostics
    assert (diagnostic.stage, diagnostic.kind, diagnostic.address) == \
        ("tocs", DiagnosticKind.UNREADABLE, 0xC008000000123000)


def test_checks_raising_is_never_a_clean_exit(stub_stages):
    stub_stages.setattr("lpdebug.checks.all_findings", _raise(ValueError("bug")))
    result = report.triage(object())
    assert result.findings == []
    assert report.exit_status(result) == 3


def test_incomplete_wins_over_findings(stub_stages):
    found = model.Finding(kind="unreadable_memory", severity="warning", pid=42, frame=None,
                          address=None, expected_toc=None, expected_module=None,
                          actual_toc=None, actual_module=None, message="m")
    stub_stages.setattr("lpdebug.checks.all_findings", lambda *a, **k: [found])
    assert report.exit_status(report.triage(object())) == report.EXIT_FINDINGS == 1
    stub_stages.setattr("lpdebug.toc.module_tocs", _raise(LookupError("no struct module")))
    result = report.triage(object())
    assert result.findings == [found]
    assert result.diagnostics[0].kind is DiagnosticKind.MISSING_DEBUG_INFO
    assert report.exit_status(result) == 3


def test_a_walkers_own_diagnostics_make_the_result_incomplete(stub_stages):
    lost = Diagnostic("tasks", DiagnosticKind.CORRUPT, 0xC000000004A3C020, "livepatch_sp beyond")
    trace = _task(42, with_stacks=True)
    trace.livepatch_stack.bounds_error = lost
    stub_stages.setattr("lpdebug.backtrace.true_backtrace", lambda task, **k: trace)
    result = report.triage(object())
    assert lost in result.diagnostics
    assert report.exit_status(result) == 3
    doc = schema.to_json(result)
    assert doc["diagnostics"][0]["kind"] == "corrupt"


def test_a_failing_task_keeps_its_row_and_the_rest_goes_on(stub_stages):
    traces = {1: _task(1), 42: _task(42, with_stacks=True)}

    def fake_true_backtrace(task, **kwargs):
        if task.pid == 13:
            raise ValueError("stack pointer outside the stack")
        return traces[task.pid]

    stub_stages.setattr("lpdebug.backtrace.true_backtrace", fake_true_backtrace)
    _found_tasks(stub_stages, 42, 13, 1)
    progress = []
    result = report.triage(object(), progress=lambda *a: progress.append(a))
    # The failure costs the task's trace, not the task: its row stays, with what is known.
    assert [t.pid for t in result.tasks] == [1, 13, 42]
    assert [t.sources for t in result.tasks] == [["pid_idr"]] * 3
    assert result.tasks[1].state == "?" and not result.tasks[1].frames
    (diagnostic,) = result.diagnostics
    assert diagnostic.stage == "tasks" and diagnostic.address == FakeTask(13).value_()
    assert diagnostic.kind is DiagnosticKind.STAGE_FAILED
    assert "ValueError: stack pointer outside the stack" in diagnostic.message
    assert ("tasks", 3, 3) in progress


def test_every_public_name_resolves():
    missing = []
    for name in lpdebug.__all__:
        try:
            getattr(lpdebug, name)
        except (AttributeError, ImportError) as e:
            missing.append(f"{name}: {e}")
    assert not missing, missing
