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
    # A test of a feature that needs a newer drgn than lpdebug's floor
    # (lpdebug.drgn_compat.FEATURES) is skipped below that drgn, with the line
    # lpdebug itself says there: the feature is documented not to work there, so
    # this is not a hidden failure. CI runs the fast tier at the floor too (.ci/run).
    for marker in item.iter_markers("needs_drgn"):
        import pytest

        from lpdebug import drgn_compat

        for feature in marker.args:
            problem = drgn_compat.feature_problem(feature)
            if problem is not None:
                pytest.skip(f"below this feature's documented drgn floor: {problem}")
