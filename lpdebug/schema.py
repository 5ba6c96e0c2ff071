# SPDX-License-Identifier: GPL-2.0-or-later
"""
The triage JSON, derived from the model: the encoder, the JSON Schema and the
field tables of ``docs/triage-schema.md``.

Every field of every dataclass in :mod:`lpdebug.model` is serialized under its
own name; what the type does not say (sort orders, a JSON key that differs, a
dict written as a list, the values a string may take) is declared on the field
as ``field(metadata=json_meta(...))`` (:func:`lpdebug.model.json_meta`). Its meaning is the field's comment in
``model.py``. So the encoder, ``docs/triage.schema.json`` and the field tables
cannot drift from the model: ``python3 -m lpdebug.schema --write`` regenerates
both documents, ``--check`` says whether the committed ones are current.

The encoding is deterministic: keys are sorted, and lists whose order means
nothing are sorted, so the same kernel state gives the same bytes.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import io
import json
import os
import re
import sys
import tokenize
import typing
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from . import model
from .model import TriageResult, sort_key

__all__ = ("SCHEMA", "BATCH_SCHEMA", "COMMAND_SCHEMAS", "to_json", "dumps", "command_dumps",
           "json_schema", "batch_line_json", "batch_json_schema", "field_tables", "main")

SCHEMA = "lpdebug.triage/2"
# One line of lpdebug batch's results file (lpdebug.batch.BatchLine), docs/batch.md.
BATCH_SCHEMA = "lpdebug.batch/1"
# A field holding a whole document of another schema (json_meta(document=...)): its $defs entry.
_DOCUMENT_DEFS = {SCHEMA: "triage_document"}
_DOCUMENT_LINKS = {"triage_document": f"a `{SCHEMA}` document ([triage-schema.md](triage-schema.md))"}

_NONE = type(None)


# --- encoding ---------------------------------------------------------------


def _is_record(value: Any) -> bool:
    return dataclasses.is_dataclass(value) or (isinstance(value, tuple) and hasattr(value, "_fields"))


def _record_fields(cls: Any) -> List[Tuple[str, str, Dict[str, Any]]]:
    """(attribute, JSON key, metadata) of each field of a model dataclass or NamedTuple."""
    if dataclasses.is_dataclass(cls):
        return [(f.name, f.metadata.get("name", f.name), dict(f.metadata))
                for f in dataclasses.fields(cls)]
    return [(name, name, {}) for name in cls._fields]


def _encode(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if _is_record(value):
        out = {}
        for attr, key, meta in _record_fields(type(value)):
            out[key] = _encode(_arrange(value, attr, meta))
        return out
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def _arrange(record: Any, attr: str, meta: Dict[str, Any]) -> Any:
    value = getattr(record, attr)
    if value is None:
        return None
    if meta.get("values"):
        value = list(value.values())
    if "sort" in meta:
        value = sorted(value, key=sort_key(meta["sort"]))
    if "sorted_with" in meta:
        sibling = getattr(record, meta["sorted_with"])
        padded = list(value) + [None] * (len(sibling) - len(value))
        order = sorted(range(len(sibling)), key=lambda i: sort_key(())(sibling[i]))
        value = [padded[i] for i in order]
    return value


def to_json(result: TriageResult) -> Dict[str, Any]:
    """The ``lpdebug.triage/2`` document for ``result`` (a JSON-ready dict)."""
    doc = _encode(result)
    doc["schema"] = SCHEMA
    return doc


# Every other command's --json document: its own schema id, documented in
# docs/triage-schema.md; its parts are encoded as in the triage document.
COMMAND_SCHEMAS = {name: f"lpdebug.{name}/1"
                   for name in ("patches", "ops", "records", "bt", "stacks", "toc")}


def command_dumps(command: str, **parts: Any) -> str:
    """A command's --json document: ``schema`` (its :data:`COMMAND_SCHEMAS` id) and ``parts``."""
    doc = {"schema": COMMAND_SCHEMAS[command]}
    doc.update({key: _encode(value) for key, value in parts.items()})
    return json.dumps(doc, indent=1, sort_keys=True)


def dumps(result: TriageResult, *, indent: Optional[int] = 1) -> str:
    """:func:`to_json` as text: sorted keys, so equal results give equal bytes."""
    return _joined(json.JSONEncoder(indent=indent, sort_keys=True).iterencode(to_json(result))) + "\n"


def _joined(chunks: Iterable[str], batch: int = 4096) -> str:
    # json.dumps with an indent joins a list of every small piece it makes:
    # millions of strings for thousands of tasks, about 200 MiB at 5,000
    # (benchmarks/run rss). Joined a batch at a time, only the text stays.
    parts: List[str] = []
    pending: List[str] = []
    for chunk in chunks:
        pending.append(chunk)
        if len(pending) >= batch:
            parts.append("".join(pending))
            pending.clear()
    parts.append("".join(pending))
    return "".join(parts)


def batch_line_json(line: Any) -> Dict[str, Any]:
    """The ``lpdebug.batch/1`` line for ``line`` (a :class:`lpdebug.batch.BatchLine`)."""
    doc = _encode(line)
    doc["schema"] = BATCH_SCHEMA
    return doc


# --- what each field means: its comment in model.py -------------------------


def _field_comments(module: Any = model) -> Dict[Tuple[str, str], str]:
    """(class, field) -> the comments on the field's lines and the comment block just above it."""
    path = module.__file__
    with open(path, encoding="utf-8") as f:
        source = f.read()
    comments: Dict[int, str] = {}
    code_lines = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                              tokenize.ENDMARKER):
            code_lines.add(tok.start[0])
    out = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        for stmt in node.body:
            if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                continue
            above: List[str] = []
            line = stmt.lineno - 1
            while line in comments and line not in code_lines:
                above.insert(0, comments[line])
                line -= 1
            end = stmt.end_lineno or stmt.lineno
            trailing = [comments[n] for n in range(stmt.lineno, end + 1) if n in comments]
            out[(node.name, stmt.target.id)] = " ".join(above + trailing)
    return out


# --- the JSON Schema --------------------------------------------------------


def _def_name(cls: type) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()


def _module(cls: type) -> Any:
    return sys.modules[cls.__module__]


def _hints(cls: type) -> Dict[str, Any]:
    return typing.get_type_hints(cls, vars(_module(cls)))


def _optional(tp: Any) -> Tuple[Any, bool]:
    if typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not _NONE]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


class _Builder:
    """The JSON Schema of TriageResult, one ``$defs`` entry per model record."""

    def __init__(self) -> None:
        self.defs: Dict[str, Dict[str, Any]] = {}
        self.order: List[type] = []
        self.comments: Dict[str, Dict[Tuple[str, str], str]] = {}

    def type_schema(self, tp: Any, meta: Dict[str, Any]) -> Dict[str, Any]:
        inner, nullable = _optional(tp)
        if "document" in meta:
            schema: Dict[str, Any] = {"$ref": "#/$defs/" + _DOCUMENT_DEFS[meta["document"]]}
        else:
            schema = self._plain(inner, meta)
        if nullable:
            if "$ref" in schema:
                return {"anyOf": [schema, {"type": "null"}]}
            schema = dict(schema)
            schema["type"] = [schema["type"], "null"]
            if "enum" in schema:
                schema["enum"] = list(schema["enum"]) + [None]
        return schema

    def _plain(self, tp: Any, meta: Dict[str, Any]) -> Dict[str, Any]:
        origin = typing.get_origin(tp)
        if tp is bool:
            return {"type": "boolean"}
        if tp is int:
            return {"type": "integer"}
        if tp is float:
            return {"type": "number"}
        if tp is str:
            schema: Dict[str, Any] = {"type": "string"}
            if "choices" in meta:
                schema["enum"] = list(meta["choices"])
            return schema
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return {"type": "string", "enum": [m.value for m in tp]}
        if origin in (list, List, tuple, Sequence):
            (item,) = typing.get_args(tp)[:1]
            return {"type": "array", "items": self.type_schema(item, {})}
        if origin in (dict, Dict):
            _, item = typing.get_args(tp)
            if meta.get("values"):
                return {"type": "array", "items": self.type_schema(item, {})}
            return {"type": "object", "additionalProperties": self.type_schema(item, {})}
        if isinstance(tp, type) and (dataclasses.is_dataclass(tp) or hasattr(tp, "_fields")):
            return {"$ref": "#/$defs/" + self.record(tp)}
        raise TypeError(f"lpdebug.schema: no JSON type for {tp!r}")

    def record(self, cls: type) -> str:
        name = _def_name(cls)
        if name in self.defs:
            return name
        self.defs[name] = {}  # placeholder against recursion
        self.order.append(cls)
        self.defs[name] = self.record_schema(cls)
        return name

    def record_schema(self, cls: type) -> Dict[str, Any]:
        hints = _hints(cls)
        props: Dict[str, Any] = {}
        for attr, key, meta in _record_fields(cls):
            schema = self.type_schema(hints[attr], meta)
            description = self.describe(cls, attr, meta)
            if description:
                schema = {**schema, "description": description}
            props[key] = schema
        return {"type": "object", "properties": props, "required": sorted(props),
                "additionalProperties": False}

    def describe(self, cls: type, attr: str, meta: Dict[str, Any]) -> str:
        # The comments speak Python; the document speaks JSON.
        if cls.__module__ not in self.comments:
            self.comments[cls.__module__] = _field_comments(_module(cls))
        text = re.sub(r"\bNone\b", "null", self.comments[cls.__module__].get((cls.__name__, attr), ""))
        notes = []
        if meta.get("sort") is not None:
            keys = meta["sort"]
            notes.append("sorted" + (" by " + ", ".join(keys) if keys else ""))
        if "sorted_with" in meta:
            notes.append(f"in the order of {meta['sorted_with']}")
        if meta.get("values"):
            notes.append("a list")
        return "; ".join(([text] if text else []) + notes)


def json_schema() -> Dict[str, Any]:
    """The JSON Schema (2020-12) of the triage document, from the model."""
    builder = _Builder()
    top = builder.record_schema(TriageResult)
    top["properties"] = {"schema": {"const": SCHEMA, "description": f"always `{SCHEMA}`"},
                         **top["properties"]}
    top["required"] = sorted(top["properties"])
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA,
        "title": "lpdebug triage report",
        "description": ("Output of lpdebug triage --json and lpdebug.dumps(). Generated from "
                        "lpdebug/model.py by python3 -m lpdebug.schema --write; see "
                        "docs/triage-schema.md."),
        **top,
        "$defs": {name: builder.defs[name] for name in sorted(builder.defs)},
    }


def batch_json_schema() -> Dict[str, Any]:
    """The JSON Schema (2020-12) of one line of ``lpdebug batch``'s results, from its dataclasses."""
    from .batch import BatchLine

    builder = _Builder()
    top = builder.record_schema(BatchLine)
    top["properties"] = {"schema": {"const": BATCH_SCHEMA, "description": f"always `{BATCH_SCHEMA}`"},
                         **top["properties"]}
    top["required"] = sorted(top["properties"])
    triage = json_schema()
    defs = dict(builder.defs)
    defs.update(triage["$defs"])
    defs[_DOCUMENT_DEFS[SCHEMA]] = {k: v for k, v in triage.items()
                                   if k not in ("$schema", "$id", "$defs", "title")}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": BATCH_SCHEMA,
        "title": "lpdebug batch results line",
        "description": ("One line of lpdebug batch --out FILE. Generated from lpdebug/batch.py by "
                        "python3 -m lpdebug.schema --write; see docs/batch.md."),
        **top,
        "$defs": {name: defs[name] for name in sorted(defs)},
    }


# --- the field tables of docs/triage-schema.md ------------------------------


def _type_text(schema: Dict[str, Any]) -> str:
    if "const" in schema:
        return "string"
    if "anyOf" in schema:
        return " or ".join(_type_text(s) for s in schema["anyOf"])
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return _DOCUMENT_LINKS.get(name) or f"[`{name}`](#{name})"
    types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    texts = []
    for t in types:
        if t == "array":
            texts.append("array of " + _type_text(schema["items"]))
        elif t == "object" and "additionalProperties" in schema:
            texts.append("object of " + _type_text(schema["additionalProperties"]))
        elif t == "integer":
            texts.append("int")
        elif t == "number":
            texts.append("number")
        elif t == "boolean":
            texts.append("bool")
        else:
            texts.append(t)
    text = "/".join(texts)
    if "enum" in schema:
        text += ": " + ", ".join("null" if v is None else f"`{v}`" for v in schema["enum"])
    return text


def _table(title: str, anchor: str, schema: Dict[str, Any]) -> List[str]:
    lines = [f'<a id="{anchor}"></a>', "", f"### {title}", "",
             "| field | type | meaning |", "|---|---|---|"]
    for key in schema["properties"]:
        prop = schema["properties"][key]
        meaning = prop.get("description", "").replace("|", "\\|")
        lines.append(f"| `{key}` | {_type_text(prop)} | {meaning} |")
    return lines + [""]


def field_tables(schema: Optional[Dict[str, Any]] = None, title: str = "The document") -> str:
    """The generated part of docs/triage-schema.md (or docs/batch.md): one table per object."""
    schema = json_schema() if schema is None else schema
    lines = _table(title, "document", schema)
    seen = set()

    def walk(node: Any) -> Iterator[str]:
        # Definitions in the order a reader meets them, from the top down.
        if isinstance(node, dict):
            ref = node.get("$ref")
            if ref:
                name = ref.rsplit("/", 1)[1]
                if name not in seen and name not in _DOCUMENT_LINKS:
                    seen.add(name)
                    yield name
                    yield from walk(schema["$defs"][name])
            for key, value in node.items():
                if key != "$defs":
                    yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    for name in walk({k: v for k, v in schema.items() if k != "$defs"}):
        lines += _table(f"`{name}`", name, schema["$defs"][name])
    return "\n".join(lines).rstrip("\n") + "\n"


# --- the committed documents --------------------------------------------------

BEGIN = "<!-- BEGIN fields: generated from lpdebug/model.py by `python3 -m lpdebug.schema --write` -->"
END = "<!-- END fields -->"


def _docs_dir() -> str:
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")


def _with_tables(doc_path: str, tables: str, source: str = "lpdebug/model.py") -> str:
    begin = BEGIN.replace("lpdebug/model.py", source)
    with open(doc_path, encoding="utf-8") as f:
        doc = f.read()
    if begin not in doc or END not in doc:
        raise ValueError(f"{doc_path} has no {begin!r} ... {END!r} markers")
    head, rest = doc.split(begin, 1)
    _, tail = rest.split(END, 1)
    return head + begin + "\n\n" + tables + "\n" + END + tail


def generated_documents(docs_dir: Optional[str] = None) -> Dict[str, str]:
    """Path -> the content it must have: the schema files, and the docs with fresh field tables."""
    docs = docs_dir or _docs_dir()
    batch = batch_json_schema()
    return {
        os.path.join(docs, "triage.schema.json"): json.dumps(json_schema(), indent=1) + "\n",
        os.path.join(docs, "triage-schema.md"): _with_tables(os.path.join(docs, "triage-schema.md"),
                                                             field_tables()),
        os.path.join(docs, "batch.schema.json"): json.dumps(batch, indent=1) + "\n",
        os.path.join(docs, "batch.md"): _with_tables(os.path.join(docs, "batch.md"),
                                                     field_tables(batch, "The line"), "lpdebug/batch.py"),
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python3 -m lpdebug.schema",
        description="Generate docs/triage.schema.json and docs/batch.schema.json, and the field "
                    "tables of docs/triage-schema.md and docs/batch.md, from lpdebug/model.py and "
                    "lpdebug/batch.py.")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--write", action="store_true", help="rewrite the documents")
    which.add_argument("--check", action="store_true",
                       help="exit 1 when a committed document differs from the generated one")
    parser.add_argument("--docs", metavar="DIR", help="the docs directory (default: the checkout's)")
    args = parser.parse_args(argv)
    stale = []
    for path, content in generated_documents(args.docs).items():
        try:
            with open(path, encoding="utf-8") as f:
                current: Optional[str] = f.read()
        except FileNotFoundError:
            current = None
        if current != content:
            stale.append(path)
            if args.write:
                with open(path, "w", encoding="utf-8") as f:
                    f.write(content)
    for path in stale:
        print(("wrote " if args.write else "stale: ") + path)
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
