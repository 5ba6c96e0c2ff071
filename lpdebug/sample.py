# SPDX-License-Identifier: GPL-2.0-or-later
"""
The bundled sample: a real ppc64le kernel capture, small enough to ship.

A fixture is a directory with ``fixture.json`` and xz-compressed files: a
minimized vmcore (only the memory pages lpdebug's full triage reads), a
vmlinux pruned to the DWARF that triage needs, the modules' debug info, the
triage JSON expected from the *full* capture, and the capture's ground truth
(``truth.tar.xz``). They are made by ``vmcores/fixtures/minimize.py``.

drgn needs plain files, so the first use decompresses a fixture into a cache
directory keyed by the content hashes (``$LPDEBUG_CACHE``, else
``$XDG_CACHE_HOME/lpdebug``, else ``~/.cache/lpdebug``); later uses open the
cached files directly.

Open the sample in drgn's REPL with lpdebug's commands::

    python3 -m lpdebug.sample --repl

or print the files and the equivalent ``drgn`` command line::

    python3 -m lpdebug.sample
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import os
import shlex
import sys
import tempfile
from typing import Any, Dict, List, Optional, Sequence

from .errors import LpdebugError

__all__ = (
    "SAMPLE_DIR",
    "DEFAULT_SAMPLE",
    "samples",
    "sample_dir",
    "load_fixture",
    "fixture_paths",
    "sample_paths",
    "open_fixture",
    "open_sample",
    "expected_json",
    "cache_root",
)

SAMPLE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sample_data")
DEFAULT_SAMPLE = "settled"
FIXTURE_FILE = "fixture.json"


class SampleError(LpdebugError):
    pass


def samples() -> List[str]:
    """Names of the samples shipped with the package."""
    if not os.path.isdir(SAMPLE_DIR):
        return []
    return sorted(
        n for n in os.listdir(SAMPLE_DIR) if os.path.isfile(os.path.join(SAMPLE_DIR, n, FIXTURE_FILE))
    )


def sample_dir(name: str = DEFAULT_SAMPLE) -> str:
    path = os.path.join(SAMPLE_DIR, name)
    if not os.path.isfile(os.path.join(path, FIXTURE_FILE)):
        have = ", ".join(samples()) or "none"
        raise SampleError(f"no sample named {name!r} in this installation (have: {have})")
    return path


def load_fixture(fixture_dir: str) -> Dict[str, Any]:
    """The parsed ``fixture.json`` of a fixture directory."""
    path = os.path.join(fixture_dir, FIXTURE_FILE)
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise SampleError(f"{path}: cannot read the fixture description: {e}") from e


def cache_dir(kind: str) -> str:
    """lpdebug's cache directory for ``kind`` ($LPDEBUG_CACHE, else the XDG user cache)."""
    root = os.environ.get("LPDEBUG_CACHE")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "lpdebug")
    return os.path.join(root, kind)


def cache_root() -> str:
    return cache_dir("fixtures")


def _materialize(fixture_dir: str, entry: Dict[str, Any]) -> str:
    """Path of the decompressed file described by ``entry``, decompressing it on first use."""
    digest = entry["sha256"]
    dest_dir = os.path.join(cache_root(), digest[:24])
    dest = os.path.join(dest_dir, entry["name"])
    if os.path.isfile(dest) and os.path.getsize(dest) == entry["size"]:
        return dest
    blob = os.path.join(fixture_dir, entry["blob"])
    try:
        os.makedirs(dest_dir, exist_ok=True)
    except OSError:  # no writable home: a per-user directory under the temporary directory
        dest_dir = os.path.join(tempfile.gettempdir(), f"lpdebug-{os.getuid()}", "fixtures", digest[:24])
        dest = os.path.join(dest_dir, entry["name"])
        if os.path.isfile(dest) and os.path.getsize(dest) == entry["size"]:
            return dest
        os.makedirs(dest_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=".tmp-")
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, lzma.open(blob, "rb") as src:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                h.update(chunk)
                out.write(chunk)
        if h.hexdigest() != digest:
            raise SampleError(f"{blob}: decompressed content does not match its recorded sha256")
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return dest


def fixture_paths(fixture_dir: str) -> Dict[str, Any]:
    """
    ``{"vmcore": path, "vmlinux": path, "modules": [paths], "name": ...}`` of
    a fixture's decompressed files (decompressed into the cache if needed).
    """
    meta = load_fixture(fixture_dir)
    files = meta["files"]
    return {
        "name": meta["name"],
        "vmcore": _materialize(fixture_dir, files["vmcore"]),
        "vmlinux": _materialize(fixture_dir, files["vmlinux"]),
        "modules": [_materialize(fixture_dir, m) for m in files["modules"]],
    }


def sample_paths(name: str = DEFAULT_SAMPLE) -> Dict[str, Any]:
    """:func:`fixture_paths` of a bundled sample."""
    return fixture_paths(sample_dir(name))


def open_fixture(fixture_dir: str):  # type: ignore[no-untyped-def]
    """A drgn Program on a fixture (vmcore, vmlinux and module debug info loaded)."""
    from . import target

    paths = fixture_paths(fixture_dir)
    return target.open_vmcore(
        paths["vmcore"], [paths["vmlinux"], *paths["modules"]], default_debug_info=False
    )


def open_sample(name: str = DEFAULT_SAMPLE):  # type: ignore[no-untyped-def]
    """A drgn Program on a bundled sample (default: the settled livepatch capture)."""
    return open_fixture(sample_dir(name))


def expected_json(fixture_dir: str) -> str:
    """The triage JSON (all records) lpdebug gave on the full capture the fixture was cut from."""
    meta = load_fixture(fixture_dir)
    with lzma.open(os.path.join(fixture_dir, meta["expected"]), "rt") as f:
        return f.read()


def describe(name: str = DEFAULT_SAMPLE) -> str:
    """A short human description of a sample."""
    meta = load_fixture(sample_dir(name))
    return meta.get("description") or meta["name"]


def drgn_command(paths: Dict[str, Any]) -> List[str]:
    """The ``drgn`` command line that opens ``paths`` (lpdebug's commands load as a drgn plugin)."""
    argv = ["drgn", "-c", paths["vmcore"], "--no-default-symbols", "-s", paths["vmlinux"]]
    for m in paths["modules"]:
        argv += ["-s", m]
    return argv


def _repl(prog: Any, name: str) -> None:
    import drgn.cli

    try:  # make lpdebug's commands available whichever way the plugin is installed
        from .commands import drgn_plugin  # noqa: F401
    except Exception:
        pass

    def banner(default: str) -> str:
        return default + f"\nlpdebug sample {name!r}: try lpdebug.triage(prog), or the lpdebug commands"

    def add_globals(g: Dict[str, Any]) -> Dict[str, Any]:
        import lpdebug

        g["lpdebug"] = lpdebug
        return g

    drgn.cli.run_interactive(prog, banner_func=banner, globals_func=add_globals)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m lpdebug.sample",
        description="Decompress a bundled sample capture and show how to open it.",
    )
    parser.add_argument("name", nargs="?", default=DEFAULT_SAMPLE, help="sample name (default: %(default)s)")
    parser.add_argument("--repl", action="store_true", help="open the sample in drgn's interactive REPL")
    parser.add_argument("--json", action="store_true", help="print the file paths as JSON")
    parser.add_argument("--list", action="store_true", help="list the bundled samples")
    args = parser.parse_args(argv)
    try:
        if args.list:
            for n in samples():
                print(f"{n}\t{describe(n)}")
            return 0
        paths = sample_paths(args.name)
        if args.repl:
            _repl(open_sample(args.name), args.name)
            return 0
    except LpdebugError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(paths, indent=1))
    else:
        print(f"vmcore:  {paths['vmcore']}")
        print(f"vmlinux: {paths['vmlinux']}")
        for m in paths["modules"]:
            print(f"module:  {m}")
        print("open it in drgn with lpdebug's commands:")
        print("  " + " ".join(shlex.quote(a) for a in drgn_command(paths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
