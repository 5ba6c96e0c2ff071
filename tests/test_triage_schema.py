# SPDX-License-Identifier: GPL-2.0-or-later
"""
docs/triage.schema.json and docs/triage-schema.md against the model they are
generated from: the committed documents are the generated ones, no field of a
model dataclass is left out of the encoder, the schema or the doc, and the
schema (checked with ``jsonschema``) rejects what it must.

Other tests validate real output with ``from test_triage_schema import
validate_triage``.
"""

import dataclasses
import json
import os
import re
import subprocess
import sys

import jsonschema
import pytest

from lpdebug import model, schema

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA_PATH = os.path.join(REPO, "docs", "triage.schema.json")
DOC_PATH = os.path.join(REPO, "docs", "triage-schema.md")


def load_schema():
    with open(SCHEMA_PATH) as f:
        return json.load(f)


def schema_errors(doc):
    validator = jsonschema.Draft202012Validator(load_schema())
    return [f"{'/'.join(map(str, e.absolute_path)) or '$'}: {e.message}"
            for e in validator.iter_errors(doc)]


def validate_triage(doc):
    """Assert ``doc`` is a valid lpdebug.triage/2 document."""
    errors = schema_errors(doc)
    assert not errors, "triage JSON does not fit docs/triage.schema.json:\n" + "\n".join(errors[:20])


# --- the committed documents are generated from the model -----------------------


def test_committed_schema_and_doc_are_the_generated_ones():
    for path, content in schema.generated_documents(os.path.join(REPO, "docs")).items():
        with open(path) as f:
            assert f.read() == content, (
                f"{os.path.relpath(path, REPO)} is not what the model gives: run "
                "'python3 -m lpdebug.schema --write'")


def test_schema_check_command_reports_a_stale_document(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("triage.schema.json", "triage-schema.md", "batch.schema.json", "batch.md"):
        (docs / name).write_text(open(os.path.join(REPO, "docs", name)).read())
    check = [sys.executable, "-m", "lpdebug.schema", "--check", "--docs", str(docs)]
    env = {**os.environ, "PYTHONPATH": REPO}
    assert subprocess.run(check, env=env).returncode == 0
    (docs / "triage.schema.json").write_text("{}\n")
    assert subprocess.run(check, env=env, capture_output=True).returncode == 1


def _model_records():
    """Every dataclass and NamedTuple of lpdebug.model (the document's objects)."""
    for value in vars(model).values():
        if isinstance(value, type) and value.__module__ == model.__name__ and (
                dataclasses.is_dataclass(value) or hasattr(value, "_fields")):
            yield value


def _json_keys(cls):
    if dataclasses.is_dataclass(cls):
        return [f.metadata.get("name", f.name) for f in dataclasses.fields(cls)]
    return list(cls._fields)


def test_no_model_field_is_left_out_of_the_schema_or_the_doc():
    doc_schema = load_schema()
    with open(DOC_PATH) as f:
        doc = f.read()
    records = list(_model_records())
    assert model.TriageResult in records and model.Frame in records and model.TocMap in records
    for cls in records:
        keys = _json_keys(cls)
        name = re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()
        node = doc_schema if cls is model.TriageResult else doc_schema["$defs"].get(name)
        assert node is not None, f"{cls.__name__} is not in the schema"
        missing = set(keys) - set(node["properties"])
        assert not missing, f"{cls.__name__}: {sorted(missing)} not in the schema"
        assert set(node["required"]) >= set(keys)
        section = doc.split(f'<a id="{name if cls is not model.TriageResult else "document"}">', 1)
        assert len(section) == 2, f"{cls.__name__} has no table in the doc"
        table = section[1].split("<a id=", 1)[0]
        for key in keys:
            assert f"| `{key}` |" in table, f"{cls.__name__}.{key} is not in the doc's table"
            meaning = re.search(rf"\| `{key}` \| [^|]*(?:\\\|[^|]*)* \| (.*) \|", table)
            assert meaning and meaning.group(1).strip(), f"{cls.__name__}.{key} has no meaning"


def _every_field_set(cls, depth=0):
    """An instance of ``cls`` with every field non-empty, to prove the encoder writes each."""
    import typing

    hints = typing.get_type_hints(cls, vars(model))

    def value(tp, field_name):
        inner, _ = schema._optional(tp)
        origin = typing.get_origin(inner)
        if inner is bool:
            return True
        if inner is int:
            return 7
        if inner is str:
            meta = fields.get(field_name)
            choices = meta.metadata.get("choices") if meta is not None else None
            return choices[0] if choices else "x"
        if isinstance(inner, type) and issubclass(inner, model.DiagnosticKind):
            return model.DiagnosticKind.CORRUPT
        if origin is list:
            return [value(typing.get_args(inner)[0], None)]
        if origin is dict:
            key_type, item = typing.get_args(inner)
            return {"k": value(item, None)}
        return _every_field_set(inner, depth + 1)

    fields = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
    names = list(fields) if fields else list(cls._fields)
    return cls(**{name: value(hints[name], name) for name in names})


def test_every_model_field_is_encoded_and_fits_the_schema():
    result = _every_field_set(model.TriageResult)
    doc = schema.to_json(result)
    validate_triage(doc)

    def check(cls, encoded, where):
        assert set(encoded) == set(_json_keys(cls)) | ({"schema"} if cls is model.TriageResult
                                                       else set()), where
        for key, value in encoded.items():
            assert value not in (None, [], {}), f"{where}.{key} was not written"

    check(model.TriageResult, doc, "$")
    check(model.TaskTrace, doc["tasks"][0], "$.tasks[0]")
    check(model.Frame, doc["tasks"][0]["returned_frame"], "$.tasks[0].returned_frame")
    check(model.LivepatchStack, doc["tasks"][0]["livepatch_stack"], "$.tasks[0].livepatch_stack")
    check(model.Finding, doc["findings"][0], "$.findings[0]")
    check(model.ModuleToc, doc["tocs"]["images"][0], "$.tocs.images[0]")
    check(model.Diagnostic, doc["diagnostics"][0], "$.diagnostics[0]")


# --- the schema must be able to fail --------------------------------------------


def _minimal_doc():
    return schema.to_json(model.TriageResult(
        kernel=model.KernelInfo(release="6.12.0", arch="ppc64le", page_size=4096, mmu="radix",
                                elf_abi=2, livepatch=True, fgraph_layout="offset"),
        livepatch=model.LivepatchState(), ftrace=model.FtraceState(), tocs=model.TocMap()))


def test_minimal_document_is_valid():
    assert schema_errors(_minimal_doc()) == []


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d.update(schema="lpdebug.triage/1"), "'lpdebug.triage/2' was expected"),
    (lambda d: d["kernel"].pop("release"), "'release' is a required property"),
    (lambda d: d["kernel"].update(page_size="4096"), "is not of type 'integer'"),
    (lambda d: d["kernel"].update(mmu="segmented"), "is not one of"),
    (lambda d: d.update(surprise=1), "Additional properties are not allowed"),
    (lambda d: d["ftrace"]["records"].append(
        {"ip": "0xc000", "symbol": "x", "module": None, "flags": [], "flags_raw": 0,
         "refcount": 0, "ops": []}), "is not of type 'integer'"),
    (lambda d: d["findings"].append(
        {"kind": "frame_toc_mismatch", "severity": "fatal", "pid": 1, "frame": 0, "address": 1,
         "expected_toc": 1, "expected_module": None, "actual_toc": 2, "actual_module": None,
         "message": "m", "slot": None}), "is not one of"),
    (lambda d: d["diagnostics"].append(
        {"stage": "tasks", "kind": "broken", "address": None, "message": "m"}), "is not one of"),
    (lambda d: d["kernel"].update(livepatch=1), "is not of type 'boolean'"),
])
def test_schema_rejects(mutate, expected):
    doc = _minimal_doc()
    mutate(doc)
    errors = schema_errors(doc)
    assert errors and any(expected in e for e in errors), errors


def test_finding_kinds_match_architecture():
    kinds = set(load_schema()["$defs"]["finding"]["properties"]["kind"]["enum"])
    with open(os.path.join(REPO, "docs", "architecture.md")) as f:
        table = set(re.findall(r"^\| `([a-z_]+)` \|", f.read(), re.M))
    assert kinds == table == set(model.FINDING_KINDS)
