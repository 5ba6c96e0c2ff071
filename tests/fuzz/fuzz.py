#!/usr/bin/env python3
"""
Fuzz lpdebug's command line with damaged copies of the committed fixtures.

Each run takes one fixture (vmcores/fixtures/*: a real capture, minimized),
damages it once (``damage.py``: bit flips, random and pointer-like words,
zeroed pages in the PT_LOAD data, damaged notes and headers, truncations,
another fixture's vmlinux or modules, damaged debug files), runs
``lpdebug triage`` on it (JSON on even runs, text on odd ones) and
classifies the outcome. The runs are deterministic: run ``i`` of seed ``s``
always makes the same damage (``--show I`` reproduces one).

Bad classes (the goal is none):

  traceback        an exception escaped the command, or a traceback on stderr
  hang             no answer within --timeout seconds
  memory           the process grew past --max-rss MiB
  invalid_json     a JSON run printed no valid lpdebug.triage document
  internal_error   "internal error": lpdebug met a failure it did not foresee
  exit0_regress    exit 0 (clean) where the undamaged fixture gave 1 (findings) or 3
  lost_silent      fewer tasks than the undamaged fixture, yet a complete report
  unclear_error    exit 2 without exactly one "lpdebug: error:" line

Good classes: clean (0), findings (1), error (2, one clear line),
incomplete (3: the report says what it could not check).

  python3 tests/fuzz/fuzz.py --fast          # the CI tier: 300 runs
  python3 tests/fuzz/fuzz.py --runs 5000 --seed 10 --log fuzz.log   # the long run
  python3 tests/fuzz/fuzz.py --runs 5000 --seed 10 --log fuzz.log --resume
                                             # goes on where an interrupted long run stopped
  python3 tests/fuzz/fuzz.py --show 123      # what run 123 does, and its files
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import damage  # noqa: E402

BAD = ("traceback", "hang", "memory", "invalid_json", "internal_error", "exit0_regress",
       "lost_silent", "unclear_error")
GOOD = ("clean", "findings", "error", "incomplete")
STATUS_CLASS = {0: "clean", 1: "findings", 2: "error", 3: "incomplete"}
FAST_RUNS = 300


# --- the worker: runs the CLI in-process, one request a line ----------------------------------


def worker_main() -> None:
    """Read one JSON argv a line on stdin, answer one JSON result a line on stdout."""
    sys.path.insert(0, REPO)
    from lpdebug.commands import cli  # noqa: F401 (import cost paid once)

    real_stdout = sys.stdout
    for line in sys.stdin:
        request = json.loads(line)
        out, err = io.StringIO(), io.StringIO()
        status: Any = None
        escaped = None
        start = time.monotonic()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main(request["argv"])
            except SystemExit as e:
                status = e.code if isinstance(e.code, int) else 2
            except BaseException as e:  # noqa: BLE001 (what escapes the command is the finding)
                import traceback

                escaped = "".join(traceback.format_exception(e))
        answer = {"status": status, "stdout": out.getvalue(), "stderr": err.getvalue(),
                  "escaped": escaped, "seconds": round(time.monotonic() - start, 3)}
        real_stdout.write(json.dumps(answer) + "\n")
        real_stdout.flush()


class Worker:
    """One worker process; restarted after a hang, a blow-up or ``recycle`` runs."""

    def __init__(self, max_rss_mib: int, recycle: int = 40) -> None:
        self.max_rss = max_rss_mib * 1024
        self.recycle = recycle
        self.proc: Optional[subprocess.Popen] = None
        self.runs = 0

    def _start(self) -> None:
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.pop("LPDEBUG_TRACEBACK", None)
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, env=env, cwd=REPO)
        self.runs = 0

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def _rss(self) -> int:
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:  # type: ignore[union-attr]
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def run(self, argv: List[str], timeout: float) -> Dict[str, Any]:
        if self.proc is None or self.runs >= self.recycle:
            self.stop()
            self._start()
        self.runs += 1
        proc = self.proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        answer: Dict[str, Any] = {}

        def read() -> None:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if line:
                answer.update(json.loads(line))

        reader = threading.Thread(target=read, daemon=True)
        proc.stdin.write(json.dumps({"argv": argv}) + "\n")
        proc.stdin.flush()
        reader.start()
        deadline = time.monotonic() + timeout
        peak = 0
        while reader.is_alive():
            reader.join(0.05)
            peak = max(peak, self._rss())
            if peak > self.max_rss:
                self.stop()
                return {"killed": "memory", "peak_kib": peak}
            if time.monotonic() > deadline:
                self.stop()
                return {"killed": "hang", "peak_kib": peak}
        if not answer:
            self.stop()
            return {"killed": "died", "peak_kib": peak}
        answer["peak_kib"] = peak
        return answer


# --- classifying ---------------------------------------------------------------------------------


def _text_task_count(text: str) -> Optional[int]:
    # "True backtraces (N of M tasks...": M is every task the report has.
    marker = "True backtraces ("
    at = text.find(marker)
    if at < 0:
        return None
    try:
        return int(text[at + len(marker):].split(" of ", 1)[1].split()[0])
    except (IndexError, ValueError):
        return None


def _json_doc(text: str) -> Optional[Dict[str, Any]]:
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    if not isinstance(doc, dict) or not str(doc.get("schema", "")).startswith("lpdebug.triage/"):
        return None
    if not isinstance(doc.get("tasks"), list) or not isinstance(doc.get("findings"), list):
        return None
    return doc


def classify(answer: Dict[str, Any], as_json: bool, baseline: Dict[str, Any]) -> Tuple[str, str]:
    """(class, one-line detail) of one run's answer against its fixture's undamaged baseline."""
    killed = answer.get("killed")
    if killed in ("hang", "memory"):
        return killed, f"peak {answer.get('peak_kib', 0) // 1024} MiB"
    if killed:
        return "traceback", "the worker died"
    stderr = answer.get("stderr", "")
    if answer.get("escaped") or "Traceback (most recent call last)" in stderr:
        detail = (answer.get("escaped") or stderr).strip().splitlines()[-1]
        return "traceback", detail
    status = answer.get("status")
    if status not in STATUS_CLASS:
        return "traceback", f"exit status {status!r}"
    errors = [line for line in stderr.splitlines() if line.startswith("lpdebug: error:")]
    if "internal error" in stderr:
        return "internal_error", errors[0] if errors else stderr.strip()[-200:]
    if status == 2:
        if len(errors) != 1:
            return "unclear_error", stderr.strip()[-200:] or "(nothing on stderr)"
        return "error", errors[0]
    stdout = answer.get("stdout", "")
    if as_json:
        doc = _json_doc(stdout)
        if doc is None:
            return "invalid_json", stdout[:120].replace("\n", " ")
        tasks = len(doc["tasks"])
    else:
        tasks = _text_task_count(stdout)
    if status == 0 and baseline.get("status") != 0:
        # The undamaged fixture has findings (1) or is incomplete (3): damage cannot make it clean.
        return "exit0_regress", f"baseline {baseline.get('status')}, {tasks} tasks"
    if status != 3 and tasks is not None and baseline.get("tasks") is not None and tasks < baseline["tasks"]:
        return "lost_silent", f"{tasks} tasks of {baseline['tasks']}, exit {status}"
    return STATUS_CLASS[status], ""


# --- the runs ---------------------------------------------------------------------------------------


def fixture_inputs(names: Optional[List[str]] = None) -> List[damage.Inputs]:
    """Every committed fixture, decompressed (lpdebug.sample's cache)."""
    sys.path.insert(0, REPO)
    from lpdebug import sample

    root = os.path.join(REPO, "vmcores", "fixtures")
    found = []
    for name in sorted(os.listdir(root)):
        if names and name not in names:
            continue
        if not os.path.isfile(os.path.join(root, name, "fixture.json")):
            continue
        paths = sample.fixture_paths(os.path.join(root, name))
        found.append(damage.Inputs(name, paths["vmcore"], paths["vmlinux"], list(paths["modules"])))
    if not found:
        raise SystemExit(f"no fixtures under {root}")
    return found


@dataclass
class Run:
    index: int
    fixture: str
    mutator: str
    what: str
    as_json: bool
    cls: str = ""
    detail: str = ""
    seconds: float = 0.0
    peak_mib: int = 0
    seed: Optional[int] = None


def plan(seed: int, index: int, fixtures: List[damage.Inputs], scratch: str) -> Tuple[Run, damage.Inputs]:
    rng = random.Random(f"lpdebug-fuzz:{seed}:{index}")
    inputs = fixtures[rng.randrange(len(fixtures))]
    others = [f for f in fixtures if f.name != inputs.name]
    mutator, what, damaged = damage.mutate(rng, inputs, others, scratch)
    return Run(index, inputs.name, mutator, what, as_json=index % 2 == 0, seed=seed), damaged


def _argv(inputs: damage.Inputs, as_json: bool) -> List[str]:
    return ["triage", *inputs.argv()] + (["--json"] if as_json else [])


def baselines(fixtures: List[damage.Inputs], worker: Worker, timeout: float) -> Dict[str, Dict[str, Any]]:
    result = {}
    for inputs in fixtures:
        answer = worker.run(_argv(inputs, True), timeout)
        doc = _json_doc(answer.get("stdout", ""))
        result[inputs.name] = {"status": answer.get("status"), "tasks": len(doc["tasks"]) if doc else None}
    return result


def fuzz(seed: int, runs: int, jobs: int, timeout: float, max_rss: int, names: Optional[List[str]] = None,
         start: int = 0, progress: bool = True, log: Optional[str] = None,
         indices: Optional[List[int]] = None) -> Tuple[List[Run], Dict[str, Dict[str, Any]]]:
    fixtures = fixture_inputs(names)
    workers = [Worker(max_rss) for _ in range(jobs)]
    free = list(workers)
    lock = threading.Lock()
    base = baselines(fixtures, workers[0], timeout * 3)
    done: List[Run] = []
    scratch_root = tempfile.mkdtemp(prefix="lpdebug-fuzz-")

    def one(index: int) -> Run:
        with lock:
            worker = free.pop()
        scratch = os.path.join(scratch_root, str(index))
        try:
            run, damaged = plan(seed, index, fixtures, scratch)
            answer = worker.run(_argv(damaged, run.as_json), timeout)
            run.cls, run.detail = classify(answer, run.as_json, base[run.fixture])
            run.seconds = answer.get("seconds", timeout)
            run.peak_mib = answer.get("peak_kib", 0) // 1024
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            with lock:
                free.append(worker)
        with lock:
            done.append(run)
            if log_file is not None:
                log_file.write(json.dumps(run.__dict__) + "\n")
                log_file.flush()
            if progress and len(done) % 50 == 0:
                counts = collections.Counter(r.cls for r in done)
                sys.stderr.write(f"  {len(done)}/{runs} runs: "
                                 + ", ".join(f"{c} {counts[c]}" for c in BAD + GOOD if counts[c]) + "\n")
        return run

    log_file = open(log, "a") if log else None

    try:
        with ThreadPoolExecutor(jobs) as pool:
            list(pool.map(one, indices if indices is not None else range(start, start + runs)))
    finally:
        for worker in workers:
            worker.stop()
        shutil.rmtree(scratch_root, ignore_errors=True)
        if log_file is not None:
            log_file.close()
    done.sort(key=lambda r: r.index)
    return done, base


def table(runs: List[Run]) -> str:
    counts = collections.Counter(r.cls for r in runs)
    lines = [f"{'class':<16} {'runs':>6}", f"{'-' * 16} {'-' * 6}"]
    for cls in BAD + GOOD:
        lines.append(f"{cls:<16} {counts.get(cls, 0):>6}" + ("  (bad)" if cls in BAD and counts.get(cls) else ""))
    lines.append(f"{'total':<16} {len(runs):>6}")
    slowest = max(runs, key=lambda r: r.seconds) if runs else None
    if slowest is not None:
        lines.append(f"slowest run {slowest.seconds:.1f} s (run {slowest.index}); "
                     f"peak RSS {max(r.peak_mib for r in runs)} MiB")
    by_mutator = collections.Counter(r.mutator for r in runs)
    lines.append("mutators: " + ", ".join(f"{m} {n}" for m, n in sorted(by_mutator.items())))
    return "\n".join(lines)


def _logged_runs(log: Optional[str], seed: int, wanted: range) -> List[Run]:
    """The runs of ``seed`` in ``wanted`` that the --log file ``log`` holds (each once)."""
    if not log or not os.path.exists(log):
        return []
    found: Dict[int, Run] = {}
    with open(log) as f:
        for line in f:
            if line.strip():
                run = Run(**json.loads(line))
                if run.seed == seed and run.index in wanted:
                    found[run.index] = run
    return list(found.values())


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--fast", action="store_true", help=f"the CI tier: {FAST_RUNS} runs")
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--start", type=int, default=0, help="index of the first run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before a run is a hang")
    parser.add_argument("--max-rss", type=int, default=2048, help="MiB before a run is a memory blow-up")
    parser.add_argument("--fixture", action="append", help="only these fixtures (repeatable)")
    parser.add_argument("--show", type=int, metavar="I", help="print what run I does and keep its files")
    parser.add_argument("--json", metavar="FILE", help="write every run as JSON here at the end")
    parser.add_argument("--log", metavar="FILE", help="append each run as a JSON line as it ends")
    parser.add_argument("--table", metavar="LOG", help="print the table of a --log file and exit")
    parser.add_argument("--resume", action="store_true",
                        help="with --log: run only the runs of this seed and range the log lacks; "
                             "the table covers the logged runs too")
    args = parser.parse_args(argv)
    if args.worker:
        worker_main()
        return 0
    if args.show is not None:
        fixtures = fixture_inputs(args.fixture)
        scratch = tempfile.mkdtemp(prefix=f"lpdebug-fuzz-{args.seed}-{args.show}-")
        run, damaged = plan(args.seed, args.show, fixtures, scratch)
        print(f"run {run.index}: {run.fixture}: {run.mutator}: {run.what}")
        print("lpdebug " + " ".join(_argv(damaged, run.as_json)))
        return 0
    if args.table:
        with open(args.table) as f:
            logged = [Run(**json.loads(line)) for line in f if line.strip()]
        print(table(logged))
        for r in [r for r in logged if r.cls in BAD][:40]:
            print(f"  {r.cls}: run {r.index} ({r.fixture}, {r.mutator}: {r.what[:100]}): {r.detail[:200]}")
        return 0
    runs = FAST_RUNS if args.fast else args.runs
    wanted = range(args.start, args.start + runs)
    logged = _logged_runs(args.log, args.seed, wanted) if args.resume else []
    if args.resume and not args.log:
        parser.error("--resume needs --log")
    done_before = {r.index for r in logged}
    start = time.monotonic()
    done, base = fuzz(args.seed, runs, args.jobs, args.timeout, args.max_rss, args.fixture, args.start,
                      log=args.log, indices=[i for i in wanted if i not in done_before])
    elapsed = time.monotonic() - start
    done = sorted(logged + done, key=lambda r: r.index)
    print(f"lpdebug fuzz: seed {args.seed}, runs {args.start}..{args.start + runs - 1}, "
          f"{len(base)} fixtures, {args.jobs} jobs, {elapsed:.0f} s"
          + (f" (resumed: {len(logged)} runs from {args.log}, wall time not included)" if logged else ""))
    print("baselines: " + ", ".join(f"{n} exit {b['status']} {b['tasks']} tasks" for n, b in sorted(base.items())))
    print(table(done))
    bad = [r for r in done if r.cls in BAD]
    for r in bad[:40]:
        print(f"  {r.cls}: run {r.index} ({r.fixture}, {r.mutator}: {r.what[:100]}): {r.detail[:200]}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([r.__dict__ for r in done], f, indent=1)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
