#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""
Benchmark: lpdebug's Symbolizer (sorted table + bisect) against drgn's own
``drgn.SymbolIndex`` and ``Program.symbol``, in the same run on the same
program and the same addresses.

    python3 benchmarks/bench_symbolizer.py              # the bundled sample (no testbed needed)
    python3 benchmarks/bench_symbolizer.py SCENARIO     # a testbed capture (vmcores/build)

The addresses are every dyn_ftrace record's ip, the bulk of what a triage
names. The part SymbolIndex could replace is the address index (a sorted
table searched with bisect): both are built from the same symbols and asked
the same addresses. It also prints what SymbolIndex alone leaves unnamed or
names otherwise (no kallsyms alias rule, no size-0 labels, no gaps), and
drgn's ``prog.symbol``. Numbers, not assertions: timing belongs in a
benchmark, not in a test.
"""

import bisect
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import drgn  # noqa: E402

from lpdebug import ftrace, kernel, sample  # noqa: E402
from lpdebug.symbols import Symbolizer  # noqa: E402

DRGN_SAMPLE = 500
# Each timing is the fastest of this many runs: the machine may be busy.
REPEAT = 5


def open_program(argv):
    if len(argv) < 2:
        return "bundled sample", sample.open_sample()
    from testbed import scenario

    from lpdebug.target import open_vmcore

    s = scenario(argv[1])
    return argv[1], open_vmcore(s["vmcore"], [s["vmlinux"], *s["modules"]], default_debug_info=False)


def _fastest(fn, repeat=REPEAT):
    """The shortest of ``repeat`` timings of ``fn()``, and its result."""
    best = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        took = time.perf_counter() - t0
        best = took if best is None else min(best, took)
    return best, result


def _ms(seconds):
    return f"{seconds * 1e3:9.1f} ms"


def main(argv):
    what, prog = open_program(argv)
    addrs = [r.ip for r in ftrace.ftrace_records(prog, all_records=True)]
    n = len(addrs)
    raw = prog.symbols()

    # The whole Symbolizer, as a triage uses it: build, then name each address
    # (symbol, offset and module, a SymbolInfo each).
    kernel.invalidate(prog)
    t0 = time.perf_counter()
    ours = Symbolizer(prog)
    t_build = time.perf_counter() - t0
    t_named, named = _fastest(lambda: [ours.lookup(a) for a in addrs])

    # The step SymbolIndex could take over: the address index over the same
    # symbols (one a address, after the kallsyms alias rule).
    dealiased = list(ours._syms)
    t_sort, table = _fastest(lambda: sorted(sym.address for sym in dealiased))
    t_bisect, _ = _fastest(lambda: [bisect.bisect_right(table, a) for a in addrs])
    t_index_build, index = _fastest(lambda: drgn.SymbolIndex(dealiased))
    t_index, found = _fastest(lambda: [index(prog, None, a, True) for a in addrs])

    # drgn alone, on its own symbols (no alias rule, no size-0 labels or gaps).
    drgn_index = drgn.SymbolIndex(raw)
    drgn_found = [drgn_index(prog, None, a, True) for a in addrs]
    unnamed = sum(1 for f in drgn_found if not f)
    other = sum(1 for o, f in zip(named, drgn_found) if f and o is not None and o.name != f[0].name)

    step = max(1, n // DRGN_SAMPLE)
    picked = addrs[::step][:DRGN_SAMPLE]
    t0 = time.perf_counter()
    for a in picked:
        try:
            prog.symbol(a)
        except LookupError:
            pass
    per_drgn = (time.perf_counter() - t0) / max(1, len(picked))

    print(f"{what}: {n} addresses (dyn_ftrace record ips), {len(raw)} symbols, {len(dealiased)} after aliases")
    print(f"  lpdebug Symbolizer build         {_ms(t_build)}  (prog.symbols(), alias rule, module regions)")
    print(f"  lpdebug Symbolizer lookups       {_ms(t_named)}  ({t_named / max(1, n) * 1e6:.2f} us each:"
          " symbol, offset, module)")
    print("  the address index alone, same symbols:")
    print(f"    lpdebug sorted table  build    {_ms(t_sort)}")
    print(f"    lpdebug bisect        lookups  {_ms(t_bisect)}  ({t_bisect / max(1, n) * 1e6:.2f} us each)")
    print(f"    drgn SymbolIndex      build    {_ms(t_index_build)}")
    print(f"    drgn SymbolIndex      lookups  {_ms(t_index)}  ({t_index / max(1, n) * 1e6:.2f} us each)")
    print(f"    SymbolIndex misses (size-0 labels, gaps the kallsyms rule names): "
          f"{sum(1 for f in found if not f)} of {n}")
    print(f"  drgn SymbolIndex on drgn's own symbols: {unnamed} unnamed, {other} named otherwise than kallsyms")
    print(f"  drgn prog.symbol lookups         {_ms(per_drgn * n)}  ({per_drgn * 1e6:.2f} us each,"
          f" {len(picked)} timed)")


if __name__ == "__main__":
    main(sys.argv)
