# SPDX-License-Identifier: GPL-2.0-or-later
"""Test tiers.

``python3 -m pytest -q`` runs the fast tier: synthetic programs and the committed real-kernel fixtures; it
needs no testbed. ``python3 -m pytest -q --testbed`` runs the tests marked ``testbed``, which read the QEMU
testbed that ``vmcores/build`` makes; there they fail, never skip, when the testbed is missing.
"""


def pytest_addoption(parser):
    parser.addoption("--testbed", action="store_true",
                     help="run the real-kernel testbed tier (needs vmcores/build) instead of the fast tier")


def pytest_collection_modifyitems(config, items):
    testbed = config.getoption("--testbed")
    keep, drop = [], []
    for item in items:
        (keep if (item.get_closest_marker("testbed") is not None) == testbed else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_runtest_setup(item):
    # A test of something that needs a newer drgn than lpdebug's floor is
    # skipped below that drgn, saying why: needs_drgn(FEATURE) names a feature
    # of lpdebug.drgn_compat.FEATURES, which lpdebug documents as unavailable
    # below its release (and says so in one line there), so the skip is not a
    # hidden failure; needs_drgn("X.Y.Z", "why") is for a test's own harness
    # (a synthetic program made with an API of that release). CI runs the fast
    # tier at the floor too (.ci/run).
    for marker in item.iter_markers("needs_drgn"):
        import pytest

        from lpdebug import drgn_compat

        first = marker.args[0]
        if first in drgn_compat.FEATURES:
            problem = drgn_compat.feature_problem(first)
        else:
            found = drgn_compat.version() or "none"
            needed = tuple(int(p) for p in first.split("."))
            problem = None
            if drgn_compat.version_tuple(found) < needed:
                problem = f"needs drgn {first} or later ({marker.args[1]}), but drgn {found} is installed"
        if problem is not None:
            pytest.skip(f"below its documented drgn floor: {problem}")
