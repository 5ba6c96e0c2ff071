#!/usr/bin/env python3
"""
Benchmark: size on disk and triage time of every dump format of a capture,
next to its raw ELF twin's, in one run.

    python3 benchmarks/bench_dump_formats.py [TWIN...]   # testbed scenarios with derived dumps
                                                         # (default: every twin in the manifest)

For each raw capture and each dump ``vmcores/build`` derived from it with
makedumpfile (kdump-compressed zlib/lzo, filtered ELF), it prints: the file's
size (apparent, and allocated on disk: the raw captures are sparse), the time
``lpdebug.target.open_vmcore`` takes (drgn loading vmlinux and module debug
info, plus lpdebug's reading of the dump's headers), the time of a full
``triage(all_records=True)``, and as the yardstick, drgn's own work on the
same Program: ``prog.stack_trace()`` of every task. The triage reads memory
through the same reader as drgn's unwinding, so their ratio tells what a
format costs lpdebug beyond what it costs drgn. Numbers, not assertions.
"""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from drgn.helpers.linux.pid import for_each_task  # noqa: E402

from lpdebug import dumpfile, report, schema, target  # noqa: E402


def measure(s):
    t0 = time.perf_counter()
    prog = target.open_vmcore(s["vmcore"], [s["vmlinux"], *s["modules"]], default_debug_info=False)
    t1 = time.perf_counter()
    result = report.triage(prog, all_records=True)
    t2 = time.perf_counter()
    frames = 0
    for task in for_each_task(prog):
        try:
            frames += len(prog.stack_trace(task))
        except Exception:  # noqa: BLE001 (a task drgn cannot unwind still counts in the time)
            pass
    t3 = time.perf_counter()
    st = os.stat(s["vmcore"])
    filtered = [d for d in result.diagnostics if d.kind.value == "filtered"]
    dump = dumpfile.dump_file(prog)
    return {
        "name": s["name"],
        "format": s.get("format", "raw ELF"),
        "level": s.get("dump_level"),
        "size": st.st_size,
        "disk": st.st_blocks * 512,
        "open": t1 - t0,
        "triage": t2 - t1,
        "drgn": t3 - t2,
        "frames": frames,
        "tasks": len(result.tasks),
        "findings": len(result.findings),
        "excluded": dump.excluded_pages if dump else 0,
        "filtered": len(filtered),
        "json": schema.dumps(result),
    }


def mib(n):
    return f"{n / (1 << 20):.1f}"


def main(argv):
    from testbed import load_manifest

    scenarios = load_manifest()["scenarios"]
    twins = argv[1:] or sorted({s["derived_from"] for s in scenarios if "derived_from" in s},
                               key=[s["name"] for s in scenarios].index)
    print("| dump | format | -d | size MiB | on disk MiB | open s | triage s | drgn stack_trace s"
          " | tasks | findings | excluded pages | filtered reads | JSON = raw |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for twin in twins:
        group = [s for s in scenarios if s["name"] == twin or s.get("derived_from") == twin]
        raw_json = None
        for s in group:
            m = measure(s)
            if raw_json is None:
                raw_json = m["json"]
            print(f"| {m['name']} | {m['format']} | {m['level'] if m['level'] is not None else '-'}"
                  f" | {mib(m['size'])} | {mib(m['disk'])} | {m['open']:.2f} | {m['triage']:.2f}"
                  f" | {m['drgn']:.2f} | {m['tasks']} | {m['findings']} | {m['excluded']}"
                  f" | {m['filtered']} | {'yes' if m['json'] == raw_json else 'NO'} |", flush=True)


if __name__ == "__main__":
    main(sys.argv)
