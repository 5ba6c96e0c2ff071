"""
docs/triage-schema.md and docs/triage.schema.json against the real output,
field by field, on every committed fixture (default and --all-records JSON).

The schema validation (additionalProperties false, every field required)
keeps the set of fields equal; here the documented *meaning* is checked
where it drifted before: which name a finding gives vmlinux, which registers
``cpu_registers`` holds, and what ``address`` holds for each finding kind.
"""

import json
import os
import re

import pytest

from lpdebug import sample
from lpdebug import report, schema
from test_fixtures import FIXTURES, NAMES
from test_triage_schema import DOC_PATH, load_schema, validate_triage


def _schema_fields(node, root, seen=None):
    """Every property name the schema ``node`` allows, following $ref."""
    seen = set() if seen is None else seen
    names = set()
    if "$ref" in node:
        ref = node["$ref"]
        if ref not in seen:
            seen.add(ref)
            target = root
            for part in ref[2:].split("/"):
                target = target[part]
            names |= _schema_fields(target, root, seen)
    for key in ("anyOf", "oneOf", "allOf"):
        for child in node.get(key, []):
            names |= _schema_fields(child, root, seen)
    names |= set(node.get("properties", {}))
    for child in node.get("properties", {}).values():
        names |= _schema_fields(child, root, seen)
    if isinstance(node.get("items"), dict):
        names |= _schema_fields(node["items"], root, seen)
    if isinstance(node.get("additionalProperties"), dict):
        names |= _schema_fields(node["additionalProperties"], root, seen)
    return names

pytestmark = pytest.mark.fixtures

_docs = {}


def doc(name):
    if name not in _docs:
        prog = sample.open_fixture(os.path.join(FIXTURES, name))
        _docs[name] = json.loads(schema.dumps(report.triage(prog)))
    return _docs[name]


def schema_doc():
    with open(DOC_PATH) as f:
        return f.read()


def _doc_row(first_cell):
    for line in schema_doc().splitlines():
        if line.startswith(f"| {first_cell} |"):
            return line
    raise AssertionError(f"docs/triage-schema.md has no table row for {first_cell}")


def _keys(value, prefix, out):
    if isinstance(value, dict):
        for k, v in value.items():
            out.add(k)
            _keys(v, f"{prefix}.{k}", out)
    elif isinstance(value, list):
        for v in value:
            _keys(v, prefix, out)
    return out


@pytest.mark.parametrize("name", NAMES)
def test_default_json_fits_the_schema(name):
    validate_triage(doc(name))


def test_every_schema_field_occurs_in_real_output_and_every_output_field_is_documented():
    schema = load_schema()
    fields = _schema_fields(schema, schema)
    seen = set()
    for name in NAMES:
        _keys(doc(name), "$", seen)
    # cpu_registers is a free-form object in the schema: its keys are checked below
    seen -= {"link", "msr", "nip", "pid", "pt_regs", "r1", "r2", "trap"}
    # census.found is keyed by task source: its keys are TaskSource's values, an enum the doc lists
    from lpdebug.model import TaskSource

    seen -= {s.value for s in TaskSource}
    assert seen <= fields, sorted(seen - fields)
    documented = set(re.findall(r"`([a-z_]+)`", schema_doc()))
    assert seen <= documented, sorted(seen - documented)


def test_cpu_registers_hold_what_the_doc_lists():
    listed = set(re.findall(r"`([a-z0-9_]+)`", _doc_row("`cpu_registers`").split("|")[3]))
    found = [set(t["cpu_registers"]) for n in NAMES for t in doc(n)["tasks"] if t["cpu_registers"]]
    assert found, "no fixture has a CPU's saved registers"
    for keys in found:
        assert keys == listed, (keys, listed)


def test_modules_are_named_as_documented():
    for name in NAMES:
        d = doc(name)
        images = {i["module"] for i in d["tocs"]["images"]}
        assert "vmlinux" in images or not images
        for f in d["findings"]:
            for key in ("expected_module", "actual_module"):
                # findings name images as tocs does: "vmlinux", null for no image's TOC
                assert f[key] is None or f[key] in images, (name, key, f[key])
            if f["actual_toc"] is not None:
                owner = next((i["module"] for i in d["tocs"]["images"]
                              if i["toc"] == f["actual_toc"]), None)
                assert f["actual_module"] == owner, (name, f)
        for t in d["tasks"]:
            for fr in t["frames"]:
                assert fr["module"] != "vmlinux", (name, fr)  # frames: null means vmlinux
        for r in d["ftrace"]["records"]:
            assert r["module"] != "vmlinux"


def _address_rule(kind):
    return _doc_row(f"`{kind}`").split("|")[2]


def _task(d, pid):
    return next(t for t in d["tasks"] if t["pid"] == pid)


def test_finding_addresses_mean_what_the_doc_says():
    checked = set()
    for name in NAMES:
        d = doc(name)
        for f in d["findings"]:
            rule = _address_rule(f["kind"])
            if f["kind"] == "frame_toc_mismatch":
                assert "`pc`" in rule
                assert f["address"] == _task(d, f["pid"])["frames"][f["frame"]]["pc"]
            elif f["kind"] == "crashed_cpu_toc_mismatch":
                assert "`nip`" in rule
                assert f["address"] == _task(d, f["pid"])["cpu_registers"]["nip"]
            elif f["kind"] == "livepatch_stack_toc_mismatch":
                assert "old" in rule and "real LR" in rule
                olds = {fn["old_addr"] for p in d["livepatch"]["patches"] for o in p["objects"]
                        for fn in o["funcs"]}
                real_lrs = {e["real_lr"] for e in _task(d, f["pid"])["livepatch_stack"]["entries"]}
                assert f["address"] in olds | real_lrs
            elif f["kind"] == "transition_blocked":
                assert "klp_patch" in rule
                patch = next(p for p in d["livepatch"]["patches"]
                             if p["name"] == f["transition"]["patch"])
                assert f["address"] == patch["address"]
            else:
                continue
            checked.add(f["kind"])
    assert checked >= {"frame_toc_mismatch", "crashed_cpu_toc_mismatch",
                       "livepatch_stack_toc_mismatch", "transition_blocked"}, checked


def test_every_finding_kind_has_an_address_row():
    kinds = load_schema()["$defs"]["finding"]["properties"]["kind"]["enum"]
    for kind in kinds:
        assert _address_rule(kind).strip()
