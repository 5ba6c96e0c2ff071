"""
lpdebug.coverage's pure functions on model values: pages the dump filter excluded are counted from
FILTERED diagnostics (one per page, whatever number of reads hit it), other diagnostics are counted by
stage, MISSING_DEBUG_INFO ones are not "unread". Real captures: tests/test_debuginfo*.py.
"""

from lpdebug import coverage, render
from lpdebug.model import (
    Coverage,
    Diagnostic,
    DiagnosticKind,
    FtraceState,
    KernelInfo,
    LivepatchState,
    ModuleDebugInfo,
    TriageResult,
)


def _result(diagnostics, page_size=65536):
    return TriageResult(kernel=KernelInfo("6.1.0", "ppc64le", page_size, "radix"),
                        livepatch=LivepatchState(), ftrace=FtraceState(), diagnostics=diagnostics)


def _coverage():
    return Coverage(vmlinux_build_id="ab", vmlinux_debug_file="vmlinux", vmlinux_found_by="given",
                    modules=[ModuleDebugInfo("loop", "cd", "loop.ko", "search", "debug_info")])


def test_filtered_pages_are_distinct_pages_of_filtered_diagnostics():
    page = 0xc000000001230000
    diagnostics = [
        Diagnostic("tasks", DiagnosticKind.FILTERED, page + 0x10, "excluded by the dump's filter"),
        Diagnostic("tasks", DiagnosticKind.FILTERED, page + 0x8000, "excluded by the dump's filter"),
        Diagnostic("ftrace", DiagnosticKind.FILTERED, page + 0x10000, "excluded by the dump's filter"),
        Diagnostic("tasks", DiagnosticKind.UNREADABLE, 0x10, "fault"),
        Diagnostic("livepatch", DiagnosticKind.CORRUPT, None, "bad list"),
        Diagnostic("checks", DiagnosticKind.MISSING_DEBUG_INFO, None, "no names"),
    ]
    c = _coverage()
    coverage.count_diagnostics(c, _result(diagnostics))
    assert c.filtered_pages == 2
    assert c.unreadable == {"livepatch": 1, "tasks": 1}
    line = render.coverage_line(c)
    assert "2 page(s) excluded by the dump filter" in line and "2 part(s) not read" in line


def test_an_unfiltered_dump_has_no_filtered_count():
    c = _coverage()
    coverage.count_diagnostics(c, _result([]))
    assert c.filtered_pages is None and c.unreadable == {}
    assert render.coverage_line(c) == ("Coverage: vmlinux debug info vmlinux; 1 of 1 modules with "
                                       "debug info; everything read")
