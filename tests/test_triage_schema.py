# SPDX-License-Identifier: GPL-2.0-or-later
"""
docs/triage.schema.json: a small JSON Schema validator (the subset the schema
uses; the project adds no dependency for it), tests that the validator
rejects what it must, and that docs/triage-schema.md documents every field.

Other tests validate real output with ``from test_triage_schema import
validate_triage``.
"""

import json
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA_PATH = os.path.join(REPO, "docs", "triage.schema.json")
DOC_PATH = os.path.join(REPO, "docs", "triage-schema.md")

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}

_SUPPORTED = {"$schema", "$id", "$ref", "$defs", "title", "description", "type", "properties",
              "required", "additionalProperties", "items", "enum", "const", "minimum"}


def _resolve(root, ref):
    assert ref.startswith("#/"), ref
    node = root
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def validate(instance, schema, root=None, path="$"):
    """Errors of ``instance`` against ``schema`` (a list of strings; empty when valid)."""
    root = schema if root is None else root
    unsupported = set(schema) - _SUPPORTED
    if unsupported:
        raise ValueError(f"{path}: schema uses unsupported keywords {sorted(unsupported)}")
    if "$ref" in schema:
        return validate(instance, _resolve(root, schema["$ref"]), root, path)
    errors = []
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_TYPES[t](instance) for t in types):
            return [f"{path}: {instance!r} is not of type {'/'.join(types)}"]
    if "const" in schema and instance != schema["const"]:
        errors.append(f"{path}: {instance!r} is not {schema['const']!r}")
    if "enum" in schema and instance not in schema["enum"]:
        errors.append(f"{path}: {instance!r} is not one of {schema['enum']}")
    if "minimum" in schema and _TYPES["number"](instance) and instance < schema["minimum"]:
        errors.append(f"{path}: {instance} < {schema['minimum']}")
    if isinstance(instance, dict):
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in instance:
                errors.append(f"{path}: missing {key!r}")
        extra = schema.get("additionalProperties", True)
        for key, value in instance.items():
            if key in props:
                errors.extend(validate(value, props[key], root, f"{path}.{key}"))
            elif extra is False:
                errors.append(f"{path}: unexpected {key!r}")
            elif isinstance(extra, dict):
                errors.extend(validate(value, extra, root, f"{path}.{key}"))
    if isinstance(instance, list) and "items" in schema:
        for i, item in enumerate(instance):
            errors.extend(validate(item, schema["items"], root, f"{path}[{i}]"))
    return errors


def load_schema():
    with open(SCHEMA_PATH) as f:
        return json.load(f)


def validate_triage(doc):
    """Assert ``doc`` is a valid lpdebug.triage/1 document."""
    errors = validate(doc, load_schema())
    assert not errors, "triage JSON does not fit docs/triage.schema.json:\n" + "\n".join(errors[:20])


# --- the validator itself must be able to fail ----------------------------------


def _minimal_doc():
    return {
        "schema": "lpdebug.triage/1",
        "kernel": {"release": "6.12.0", "arch": "ppc64le", "page_size": 4096, "mmu": "radix",
                   "elf_abi": 2, "build_id": None, "livepatch": True, "fgraph_layout": "offset",
                   "errors": []},
        "livepatch": {"patches": [], "transition": {"patch": None, "target_state": None,
                                                    "blocking": []},
                      "ops": [], "shadow_count": None, "errors": []},
        "ftrace": {"ops": [], "records": [], "total_records": 0, "errors": []},
        "tasks": [],
        "findings": [],
        "tocs": {"images": [], "errors": []},
        "errors": [],
        "diagnostics": [],
    }


def test_minimal_document_is_valid():
    assert validate(_minimal_doc(), load_schema()) == []


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d.update(schema="lpdebug.triage/2"), "is not 'lpdebug.triage/1'"),
    (lambda d: d["kernel"].pop("release"), "missing 'release'"),
    (lambda d: d["kernel"].update(page_size="4096"), "is not of type integer"),
    (lambda d: d["kernel"].update(mmu="segmented"), "is not one of"),
    (lambda d: d.update(surprise=1), "unexpected 'surprise'"),
    (lambda d: d["ftrace"]["records"].append(
        {"ip": "0xc000", "symbol": "x", "module": None, "flags": [], "flags_raw": 0,
         "refcount": 0, "ops": []}), "$.ftrace.records[0].ip"),
    (lambda d: d["findings"].append(
        {"kind": "frame_toc_mismatch", "severity": "fatal", "pid": 1, "frame": 0, "address": 1,
         "expected_toc": 1, "expected_module": None, "actual_toc": 2, "actual_module": None,
         "message": "m"}), "is not one of"),
    (lambda d: d["kernel"].update(livepatch=1), "is not of type boolean"),
])
def test_validator_rejects(mutate, expected):
    doc = _minimal_doc()
    mutate(doc)
    errors = validate(doc, load_schema())
    assert errors and any(expected in e for e in errors), errors


# --- the prose documentation covers the machine-readable schema -----------------


def _schema_fields(node, root, seen=None):
    seen = set() if seen is None else seen
    if "$ref" in node:
        ref = node["$ref"]
        if ref in seen:
            return set()
        seen.add(ref)
        return _schema_fields(_resolve(root, ref), root, seen)
    names = set(node.get("properties", {}))
    for child in node.get("properties", {}).values():
        names |= _schema_fields(child, root, seen)
    if "items" in node:
        names |= _schema_fields(node["items"], root, seen)
    return names


def test_every_schema_field_is_documented():
    schema = load_schema()
    with open(DOC_PATH) as f:
        doc = f.read()
    documented = set(re.findall(r"`([a-z_]+)`", doc))
    missing = sorted(_schema_fields(schema, schema) - documented)
    assert not missing, f"docs/triage-schema.md does not describe: {missing}"


def test_finding_kinds_match_architecture():
    schema = load_schema()
    kinds = set(schema["$defs"]["finding"]["properties"]["kind"]["enum"])
    with open(os.path.join(REPO, "docs", "architecture.md")) as f:
        table = set(re.findall(r"^\| `([a-z_]+)` \|", f.read(), re.M))
    assert kinds == table
