"""
README.md's sample output is the tool's output: every code block after an
``<!-- output-of: lpdebug ARGS [| head -N] -->`` marker equals what that
command prints on the bundled sample (its first N lines with ``| head -N``).
A ``lpdebug batch`` block runs from the checkout over its committed fixtures,
with ``--out`` in a scratch directory.
"""

import os
import re
import shlex
import subprocess
import sys
import tempfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = re.compile(r"<!-- output-of: lpdebug (.*?)(?: \| head -(\d+))? -->\n```\n(.*?)```", re.S)


def run_sample(words):
    """What ``lpdebug WORDS`` prints (a batch from the checkout, its --out file in a scratch directory)."""
    with tempfile.TemporaryDirectory() as scratch:
        if words[0] == "batch":
            words = [os.path.join(scratch, os.path.basename(w)) if i and words[i - 1] == "--out" else w
                     for i, w in enumerate(words)]
        return subprocess.run([sys.executable, "-m", "lpdebug.commands.cli", *words],
                              capture_output=True, text=True, timeout=900, cwd=REPO)


def samples():
    with open(os.path.join(REPO, "README.md")) as f:
        return MARKER.findall(f.read())


def test_readme_has_sample_blocks():
    commands = [args.split()[0] for args, _, _ in samples()]
    assert {"triage", "bt", "stacks"} <= set(commands), commands


@pytest.mark.parametrize("args, head, block", samples(), ids=lambda v: str(v)[:40])
def test_readme_sample_block_is_the_tools_output(args, head, block):
    words = shlex.split(args)
    if words[0] == "batch":
        assert words[1] == "vmcores/fixtures", "README's batch samples run on the committed fixtures"
    else:
        assert "--sample" in words, "README samples run on the bundled sample"
    proc = run_sample(words)
    assert proc.returncode in (0, 1), proc.stderr
    out = proc.stdout
    if head:
        out = "".join(out.splitlines(True)[:int(head)])
    assert block == out, (f"README.md's block for 'lpdebug {args}' is not the tool's output; "
                          f"regenerate it:\n{out}")


def write():
    """Regenerate every sample block of README.md from the tool (python3 tests/test_readme_samples.py)."""
    path = os.path.join(REPO, "README.md")
    with open(path) as f:
        text = f.read()

    def block(m):
        args, head = m.group(1), m.group(2)
        out = run_sample(shlex.split(args)).stdout
        if head:
            out = "".join(out.splitlines(True)[:int(head)])
        return m.group(0)[:m.start(3) - m.start(0)] + out + "```"

    with open(path, "w") as f:
        f.write(MARKER.sub(block, text))


if __name__ == "__main__":
    write()


def test_readme_floor_command_names_lpdebugs_drgn_floor():
    # the README's floor run (as .ci/run does it) pins the floor that lpdebug.drgn_compat declares
    from lpdebug import drgn_compat

    floor = ".".join(map(str, drgn_compat.FLOOR))
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")) as f:
        text = f.read()
    pins = re.findall(r'"drgn==([0-9.]+)" -e', text)
    assert pins == [floor], pins
