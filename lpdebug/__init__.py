"""
lpdebug: livepatch, ftrace and shadow return stacks of ppc64 Linux kernels,
read with drgn.

The walkers take a drgn Program (or a task Object) and return the plain
dataclasses of :mod:`lpdebug.model`; :func:`lpdebug.triage.triage` runs them
all and the checks over every task.
"""
