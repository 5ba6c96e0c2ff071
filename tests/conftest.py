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
