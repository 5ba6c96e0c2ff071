#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""
Benchmark: lpdebug's dyn_ftrace record walk against drgn's own work, in the
same run on the same program.

    python3 benchmarks/bench_ftrace_records.py [SCENARIO]   # a testbed scenario, settled by default

It needs the full capture (vmcores/build): the minimized fixtures hold only
the pages lpdebug reads, not those drgn's own lookups read.

It prints, for every record of the kernel: the time drgn takes to read the
record pages (the floor), lpdebug's decode and naming, and what naming each
record with drgn's own lookups (prog.symbol + address_to_module) would cost,
measured on a sample of records and scaled. Numbers, not assertions: timing
belongs in a benchmark, not in a test.
"""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from drgn.helpers.linux.module import address_to_module  # noqa: E402

from lpdebug import ftrace, kernel  # noqa: E402

DRGN_SAMPLE = 500


def open_program(argv):
    from testbed import scenario

    from lpdebug.target import open_vmcore

    s = scenario(argv[1] if len(argv) > 1 else "settled")
    return open_vmcore(s["vmcore"], [s["vmlinux"], *s["modules"]], default_debug_info=False)


def main(argv):
    prog = open_program(argv)
    kernel.invalidate(prog)
    timings = {}
    t0 = time.perf_counter()
    records = ftrace.ftrace_records(prog, all_records=True, timings=timings)
    total = time.perf_counter() - t0
    n = len(records)

    step = max(1, n // DRGN_SAMPLE)
    picked = records[::step][:DRGN_SAMPLE]
    t1 = time.perf_counter()
    for r in picked:
        try:
            prog.symbol(r.ip)
        except LookupError:
            pass
        address_to_module(prog, r.ip)
    per_record_drgn = (time.perf_counter() - t1) / max(1, len(picked))

    print(f"records: {int(timings.pop('count', n))}")
    # Every step ftrace_records() timed, under its own name, so that the
    # benchmark follows the library.
    for key, seconds in timings.items():
        print(f"  lpdebug {key:<16} {seconds * 1e3:9.1f} ms")
    print(f"  lpdebug total            {total * 1e3:9.1f} ms  ({total / max(1, n) * 1e6:.1f} us a record)")
    print(f"  drgn naming              {per_record_drgn * n * 1e3:9.1f} ms  "
          f"({per_record_drgn * 1e6:.1f} us a record, prog.symbol + address_to_module, "
          f"{len(picked)} records timed)")


if __name__ == "__main__":
    main(sys.argv)
