"""
No single point of total loss: real captures damaged the way issue 10 found them.

- The head of the pid IDR (``init_pid_ns.idr``) set to 0 on ``stuck`` and ``toc-corrupt``: every task is
  still found (the task list and the runqueues hold them), the report says the IDR is damaged and exits 3
  (incomplete), and ``stuck`` is still held back by ``lpd_stuck``; the findings stay.
- The page of task-state strings zeroed: every task and its backtrace stay, only the state is ``?``, with
  one diagnostic.
- The census agrees with the kernel's own counters and with what the guest said itself
  (``/proc/loadavg``'s thread count, ``/proc/stat``'s forks).

Each runs on the testbed's full captures (marker ``testbed``) and on the committed fixtures (marker
``fixtures``), which hold the pages the undamaged triage reads (the damaged run reads no others).
"""

import os
import subprocess
import sys

import drgn
import pytest

from lpdebug import model, render, sample, target
from lpdebug import report as tr

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz"))
import damage  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "vmcores", "fixtures")


def _inputs(where, name):
    """(vmcore, [vmlinux, modules...], truth directory or None) of a scenario."""
    if where == "testbed":
        from testbed import scenario

        s = scenario(name)
        return s["vmcore"], [s["vmlinux"], *s["modules"]], s.get("truth")
    paths = sample.fixture_paths(os.path.join(FIXTURES, name))
    return paths["vmcore"], [paths["vmlinux"], *paths["modules"]], None


def _where(name):
    return [pytest.param("testbed", name, marks=pytest.mark.testbed, id=f"testbed-{name}"),
            pytest.param("fixtures", name, marks=pytest.mark.fixtures, id=f"fixture-{name}")]


def _open(vmcore, symbols):
    return target.open_vmcore(vmcore, symbols, default_debug_info=False)


def _cli(*argv):
    return subprocess.run([sys.executable, "-m", "lpdebug.commands.cli", *argv], capture_output=True,
                          text=True, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), timeout=600)


def _damaged(tmp_path, vmcore, patches):
    out = str(tmp_path / "vmcore")
    damage.damaged_copy(vmcore, out, patches)
    return out


_undamaged = {}


def _undamaged_result(where, name):
    if (where, name) not in _undamaged:
        vmcore, symbols, _ = _inputs(where, name)
        prog = _open(vmcore, symbols)
        _undamaged[where, name] = (prog, tr.triage(prog))
    return _undamaged[where, name]


@pytest.mark.parametrize("where, name", _where("stuck") + _where("toc-corrupt"))
def test_pid_idr_head_zeroed_loses_no_task(tmp_path, where, name):
    prog, before = _undamaged_result(where, name)
    idr = prog["init_pid_ns"].idr
    head = idr.idr_rt.xa_head
    assert head.value_() != 0
    vmcore, symbols, _ = _inputs(where, name)
    damaged = _damaged(tmp_path, vmcore, {head.address_: bytes(8)})

    after = tr.triage(_open(damaged, symbols))
    assert after.census.found["pid_idr"] == 0
    # Every task is still there, found through the task list and the runqueues.
    assert sorted((t.pid, t.address) for t in after.tasks) == sorted((t.pid, t.address) for t in before.tasks)
    assert all("pid_idr" not in t.sources for t in after.tasks)
    assert after.census.counted == after.census.nr_threads
    damaged_idr = [d for d in after.diagnostics
                   if d.kind == model.DiagnosticKind.CORRUPT and d.address == idr.address_]
    assert len(damaged_idr) == 1, after.diagnostics
    assert "pid IDR is damaged" in damaged_idr[0].message
    # What the tasks show is unchanged.
    assert [(f.kind, f.pid) for f in after.findings] == [(f.kind, f.pid) for f in before.findings]
    assert after.livepatch.transition.blocking == before.livepatch.transition.blocking
    if name == "stuck":
        assert "lpd_stuck" in {b.comm for b in after.livepatch.transition.blocking}

    proc = _cli("triage", "-c", damaged, *[a for s in symbols for a in ("-s", s)])
    assert proc.returncode == 3, proc.stderr
    assert "pid IDR is damaged" in proc.stdout.split("Kernel\n------")[0]
    if name == "stuck":
        assert "no task is holding it back" not in proc.stdout
        assert "lpd_stuck" in render.render_transition(after.livepatch.transition)
    assert f"Findings ({len(before.findings)})" in proc.stdout


@pytest.mark.parametrize("where, name", _where("stuck"))
def test_task_state_strings_zeroed_cost_only_the_state(tmp_path, where, name):
    prog, before = _undamaged_result(where, name)
    strings = prog["task_state_array"][0].value_()
    page = strings & ~0xFFF
    vmcore, symbols, _ = _inputs(where, name)
    damaged = _damaged(tmp_path, vmcore, {page: bytes(4096)})

    after = tr.triage(_open(damaged, symbols))
    assert len(after.tasks) == len(before.tasks)
    assert {t.state for t in after.tasks} == {"?"}
    # Only the state is lost: the backtraces are whole.
    assert [[f.pc for f in t.frames] for t in after.tasks] == [[f.pc for f in t.frames] for t in before.tasks]
    no_state = [d for d in after.diagnostics if "state of" in d.message]
    assert len(no_state) == 1 and no_state[0].kind == model.DiagnosticKind.UNREADABLE
    assert f"state of {len(after.tasks)} task(s)" in no_state[0].message


@pytest.mark.parametrize("where, name", _where("settled-64k"))
def test_runqueue_without_its_idle_task_is_not_silent(tmp_path, where, name):
    # A secondary CPU's idle task (pid 0) is on no list: only its runqueue holds it. That
    # runqueue's rq->idle and rq->curr zeroed (fuzz seed 10 run 97 zeroed its page) lost it
    # with a complete report and exit 0.
    from drgn.helpers.linux.percpu import per_cpu

    prog, before = _undamaged_result(where, name)
    rq = per_cpu(prog["runqueues"], 1)
    idle = rq.idle.value_()
    assert idle and [t.sources for t in before.tasks if t.address == idle] == [["runqueue"]]
    vmcore, symbols, _ = _inputs(where, name)
    damaged = _damaged(tmp_path, vmcore, {rq.idle.address_: bytes(8), rq.curr.address_: bytes(8)})

    after = tr.triage(_open(damaged, symbols))
    assert {t.address for t in after.tasks} == {t.address for t in before.tasks} - {idle}
    no_idle = [d for d in after.diagnostics if d.address == rq.address_]
    assert len(no_idle) == 1 and no_idle[0].kind == model.DiagnosticKind.CORRUPT, after.diagnostics
    assert "CPU 1's runqueue has no idle task" in no_idle[0].message
    assert tr.exit_status(after) == 3


def _truth_file(truth, name):
    path = os.path.join(truth, name)
    with open(path) as f:
        return f.read()


@pytest.mark.testbed
@pytest.mark.parametrize("name", ["settled", "stuck", "toc-corrupt", "toc-crash", "settled-6.1", "nolivepatch"])
def test_census_agrees_with_the_kernel_and_the_guest(name):
    vmcore, symbols, truth = _inputs("testbed", name)
    result = tr.triage(_open(vmcore, symbols))
    census = result.census
    assert census.failed == [] and not [d for d in result.diagnostics if d.stage == "tasks"]
    assert census.nr_threads is not None and census.counted == census.nr_threads
    # Every task with a pid is in both the pid IDR and the task list; every CPU's idle task is found.
    assert census.found["pid_idr"] == census.counted
    assert census.found["task_list"] == census.counted + 1  # init_task (pid 0) is the list's head
    from testbed import scenario

    idle = {t.address for t in result.tasks if t.pid == 0}
    assert len(idle) == scenario(name)["ncpus"]
    # The guest's own view, taken just before the capture: /proc/loadavg's "running/total" counts
    # nr_threads; the shell that captured the truth and its children may have come and gone since.
    loadavg_total = int(_truth_file(truth, "loadavg").split()[3].split("/")[1])
    assert abs(loadavg_total - census.nr_threads) <= 3, (loadavg_total, census.nr_threads)
    forks = int(next(line.split()[1] for line in _truth_file(truth, "proc_stat").splitlines()
                     if line.startswith("processes ")))
    assert census.total_forks >= forks


@pytest.mark.parametrize("where, name", _where("settled"))
def test_task_list_cycle_is_found_and_costs_no_task(tmp_path, where, name):
    from drgn.helpers.linux.list import list_for_each_entry

    prog, before = _undamaged_result(where, name)
    init = prog["init_task"]
    leaders = list(list_for_each_entry("struct task_struct", init.tasks.address_of_(), "tasks"))
    third = leaders[2]
    # Its successor link points back to itself: a loop that never returns to the head.
    vmcore, symbols, _ = _inputs(where, name)
    loop = third.tasks.address_
    damaged = _damaged(tmp_path, vmcore, {third.tasks.next.address_: loop.to_bytes(8, "little")})

    after = tr.triage(_open(damaged, symbols))
    assert after.census.failed == ["task_list"]
    cycles = [d for d in after.diagnostics if d.kind == model.DiagnosticKind.CYCLE]
    assert len(cycles) == 1 and cycles[0].address == loop and "task list" in cycles[0].message
    assert sorted((t.pid, t.address) for t in after.tasks) == sorted((t.pid, t.address) for t in before.tasks)
    assert after.census.counted == after.census.nr_threads


@pytest.mark.parametrize("where, name", _where("settled"))
def test_pid_idr_node_pointing_to_itself(tmp_path, where, name):
    prog, before = _undamaged_result(where, name)
    head = prog["init_pid_ns"].idr.idr_rt.xa_head.value_()
    assert head & 3 == 2, "the pid IDR has more than one entry: its head is a node"
    root = drgn.Object(prog, "struct xa_node", address=head - 2)
    # The root's first slot (pids 0..63 at the lowest level, or a subtree) points to the root itself.
    vmcore, symbols, _ = _inputs(where, name)
    damaged = _damaged(tmp_path, vmcore, {root.slots[0].address_: head.to_bytes(8, "little")})

    after = tr.triage(_open(damaged, symbols))
    assert "pid_idr" in after.census.failed
    cycles = [d for d in after.diagnostics if d.kind == model.DiagnosticKind.CYCLE]
    assert len(cycles) == 1 and cycles[0].address == head - 2 and "pid IDR" in cycles[0].message
    # The pids the damaged slot held are found through the task list.
    assert sorted((t.pid, t.address) for t in after.tasks) == sorted((t.pid, t.address) for t in before.tasks)
    assert after.census.counted == after.census.nr_threads


@pytest.mark.parametrize("where, name", _where("stuck"))
def test_fewer_tasks_than_nr_threads_is_lost_never_clean(tmp_path, where, name):
    # Both task sources that hold every process emptied (the pid IDR's head zeroed,
    # init_task.tasks pointing to itself): only init_task and the runqueues' tasks are
    # left, and the kernel's own nr_threads says how many are missing.
    prog, before = _undamaged_result(where, name)
    idr_head = prog["init_pid_ns"].idr.idr_rt.xa_head
    tasks = prog["init_task"].tasks
    self_pointer = tasks.address_.to_bytes(8, "little")
    vmcore, symbols, _ = _inputs(where, name)
    damaged = _damaged(tmp_path, vmcore, {idr_head.address_: bytes(8), tasks.next.address_: self_pointer,
                                          tasks.prev.address_: self_pointer})

    after = tr.triage(_open(damaged, symbols))
    assert after.census.found["pid_idr"] == 0 and after.census.found["task_list"] == 1
    assert len(after.tasks) < len(before.tasks)
    nr_threads = prog["nr_threads"]
    assert after.census.nr_threads == nr_threads.value_() == before.census.counted
    lost = [d for d in after.diagnostics if d.kind == model.DiagnosticKind.LOST]
    assert len(lost) == 1 and lost[0].address == nr_threads.address_, after.diagnostics
    assert f"{after.census.counted} tasks with a pid found, but the kernel counts {nr_threads.value_()}" \
        in lost[0].message
    assert f"{nr_threads.value_() - after.census.counted} lost" in lost[0].message
    assert tr.exit_status(after) == 3
    proc = _cli("triage", "-c", damaged, *[a for s in symbols for a in ("-s", s)])
    assert proc.returncode == 3, proc.stderr
    assert "lost" in proc.stdout.split("Kernel\n------")[0]


@pytest.mark.parametrize("where, name", _where("settled"))
def test_klp_patches_emptied_while_klp_ops_and_sysfs_show_patches(tmp_path, where, name):
    prog, before = _undamaged_result(where, name)
    names = sorted(p.name for p in before.livepatch.patches)
    assert names and before.livepatch.ops
    head = prog["klp_patches"]
    # The list head points to itself: klp_patches reads as empty, with no error of its own.
    vmcore, symbols, _ = _inputs(where, name)
    damaged = _damaged(tmp_path, vmcore, {head.next.address_: head.address_.to_bytes(8, "little")})

    after = tr.triage(_open(damaged, symbols))
    # no error of the walk's own: what livepatch says is only that patches are lost
    assert after.livepatch.patches == []
    assert all(d.kind == model.DiagnosticKind.LOST for d in after.livepatch.diagnostics)
    lost = [d for d in after.diagnostics if d.stage == "livepatch" and d.kind == model.DiagnosticKind.LOST]
    assert len(lost) == 2, after.diagnostics
    assert all(d.address == head.address_ for d in lost)
    assert any(f"klp_ops hold {len(before.livepatch.ops)} patched function(s)" in d.message for d in lost)
    assert any(f"/sys/kernel/livepatch holds {', '.join(names)}" in d.message for d in lost)
    proc = _cli("triage", "-c", damaged, *[a for s in symbols for a in ("-s", s)])
    assert proc.returncode == 3, proc.stderr


@pytest.mark.fixtures
def test_no_task_from_any_source_is_lost_never_clean(monkeypatch):
    # init_task always comes from its symbol, so no damage to a real dump empties every
    # source: each walker is replaced by an empty one (all sources broken off at once).
    from lpdebug import tasks

    prog = sample.open_sample()
    monkeypatch.setattr(tasks, "_SOURCES", tuple((source, lambda prog: iter(()))
                                                 for source, _ in tasks._SOURCES))
    result = tr.triage(prog)
    assert result.tasks == [] and result.census.tasks == 0
    lost = [d for d in result.diagnostics if d.kind == model.DiagnosticKind.LOST and d.stage == "tasks"]
    assert [d.message for d in lost] == ["no task found by any source: every task is lost"]
    assert tr.exit_status(result) == 3
