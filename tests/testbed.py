# SPDX-License-Identifier: GPL-2.0-or-later
"""Shared access to the real-kernel testbed built by ``vmcores/build``.

Other tests import this module::

    from testbed import load_manifest, scenario
    s = scenario("settled")
    s["vmcore"], s["vmlinux"], s["modules"], s["truth"]   # absolute paths

Every path-valued field of the manifest (vmcore, vmlinux, modules, vmcoreinfo,
truth) is returned as an absolute path.  When the manifest is missing,
``load_manifest()`` raises ``TestbedMissing`` (an AssertionError), so tests that
need the testbed FAIL loudly instead of skipping.
"""
import json
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANIFEST = os.environ.get("LPDEBUG_MANIFEST",
                          os.path.join(REPO, "vmcores", "out", "manifest.json"))

PATH_FIELDS = ("vmcore", "vmlinux", "vmcoreinfo", "truth", "console")


class TestbedMissing(AssertionError):
    pass


_cache = None


def load_manifest():
    """Parsed manifest with absolute paths (cached)."""
    global _cache
    if _cache is not None:
        return _cache
    if not os.path.exists(MANIFEST):
        raise TestbedMissing(
            "testbed manifest %s is missing: run vmcores/build (it builds the "
            "ppc64le kernels, boots the scenarios and captures them)" % MANIFEST)
    with open(MANIFEST) as f:
        m = json.load(f)
    base = os.path.dirname(os.path.abspath(MANIFEST))

    def absp(p):
        if p is None:
            return None
        return os.path.normpath(os.path.join(base, p))

    for s in m["scenarios"]:
        for k in PATH_FIELDS:
            if s.get(k):
                s[k] = absp(s[k])
        s["modules"] = [absp(p) for p in s.get("modules", [])]
    _cache = m
    return m


def scenario_names():
    return [s["name"] for s in load_manifest()["scenarios"]]


def scenario(name):
    """The manifest entry for scenario ``name`` (absolute paths)."""
    for s in load_manifest()["scenarios"]:
        if s["name"] == name:
            return s
    raise TestbedMissing("scenario %r not in %s (have: %s); run vmcores/build %s"
                         % (name, MANIFEST, ", ".join(scenario_names()), name))


def open_vmcore(name):
    """A drgn Program on the scenario's vmcore with vmlinux + module debug info."""
    import drgn
    s = scenario(name)
    prog = drgn.Program()
    prog.set_core_dump(s["vmcore"])
    prog.load_debug_info([s["vmlinux"]] + list(s["modules"]))
    return prog


def truth(name, *parts):
    """Absolute path of a ground-truth file of scenario ``name``."""
    return os.path.join(scenario(name)["truth"], *parts)


def live_dir(scenario_name):
    """Where `vmcores/build --live SCENARIO` keeps a running guest's files (live.json, qemu.pid)."""
    return os.path.join(os.environ.get("LPDEBUG_CACHE", "/var/cache/lpdebug"), "live", scenario_name)


def written_since(path, since):
    """Whether ``path`` exists and was written at or after time ``since``: a guest this test booted."""
    return os.path.exists(path) and os.path.getmtime(path) >= since


def stop_live_guest(scenario_name, since):
    """Stop the live guest of ``scenario_name`` if it was booted at or after ``since`` (SIGTERM, then
    SIGKILL after 10 s): a guest somebody else booted is left running."""
    import signal
    import time

    pid_file = os.path.join(live_dir(scenario_name), "qemu.pid")
    if not written_since(pid_file, since):
        return
    with open(pid_file) as f:
        pid = int(f.read().strip())
    try:
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
