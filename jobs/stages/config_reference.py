"""The configuration reference, read from the run config's dataclasses and their source comments.

Every TOML key of ``--config RUN.toml`` is a field of ``Config`` or of a dataclass it holds (walked
recursively: ``[download.fetch]`` is ``Config.download.fetch``). A key's one-line meaning is the code's
own comment: the trailing ``# comment`` on the field's line, else the comment lines just above the field.
The manual's generated page (``docs/reference/configuration.md``) and the test that every key is
documented both use this module.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import json
import re
import tokenize
import types
import typing
from dataclasses import dataclass
from functools import cache
from typing import Any

from jobs.stages.config import Config


@dataclass(frozen=True)
class KeyDoc:
    section: str  # dotted TOML table, e.g. "download.fetch"
    key: str
    kind: str  # the TOML type, in words
    default: str  # the default as TOML writes it ("unset" for None)
    meaning: str  # the field's comment ("" when it has none)
    owner: str  # module.Class that declares the field


@cache
def _source_comments(path: str) -> tuple[dict[int, str], set[int]]:
    """Line number -> the comment on it, and the lines that hold nothing but a comment."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    lines = text.splitlines()
    only = {n for n in comments if lines[n - 1].lstrip().startswith("#")}
    return comments, only


def field_comments(cls: type) -> dict[str, str]:
    """Field name -> its one-line meaning from the source of ``cls`` ("" for an uncommented field)."""
    path = inspect.getsourcefile(cls)
    if path is None:
        return {}
    comments, comment_only = _source_comments(path)
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    node = next((n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == cls.__name__), None)
    if node is None:
        return {}
    out = {}
    for stmt in node.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        trailing = [comments[n] for n in range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1)
                    if n in comments and n not in comment_only]
        if trailing:
            out[stmt.target.id] = " ".join(trailing)
            continue
        above, n = [], stmt.lineno - 1
        while n in comment_only:
            above.insert(0, comments[n])
            n -= 1
        out[stmt.target.id] = " ".join(above)
    return out


def _kind(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [o for o in typing.get_args(hint) if o is not type(None)]
        words = " or ".join(_kind(o) for o in options)
        return f"{words} (optional)" if len(options) < len(typing.get_args(hint)) else words
    if origin is tuple:
        item = (typing.get_args(hint) or (Any,))[0]
        return f"list of {_kind(item)}s" if item is not Any else "list"
    if origin is dict or hint is dict:
        return "table"
    return {int: "integer", float: "float", bool: "boolean", str: "string"}.get(hint, getattr(hint, "__name__", str(hint)))


def toml_value(value: Any) -> str:
    """``value`` as it is written in TOML ("unset" for None: leave the key out)."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return toml_value(f.default)
    if f.default_factory is not dataclasses.MISSING:
        return toml_value(f.default_factory())
    return "required"


def _table_of(hint: Any) -> type | None:
    """The dataclass a field's TOML table holds: the field's own type, or the item type of a
    ``tuple[SomeDataclass, ...]`` field (an array of tables, ``[[section.key]]``)."""
    if dataclasses.is_dataclass(hint):
        return hint
    if typing.get_origin(hint) is tuple:
        item = (typing.get_args(hint) or (None,))[0]
        return item if dataclasses.is_dataclass(item) else None
    return None


def array_tables(root: type = Config) -> set[str]:
    """Dotted tables written as arrays of tables (``[[safety.lists]]``)."""
    return {name for name, cls, is_array in _walk(root) if is_array}


def _walk(root: type, prefix: str = "") -> list[tuple[str, type, bool]]:
    out = []
    hints = typing.get_type_hints(root)
    for f in dataclasses.fields(root):
        table = _table_of(hints[f.name])
        if table is not None:
            name = f"{prefix}.{f.name}" if prefix else f.name
            out.append((name, table, table is not hints[f.name]))
            out.extend(_walk(table, name))
    return out


def sections(root: type = Config) -> list[tuple[str, type]]:
    """Every (dotted TOML table, dataclass) under ``root``, depth first, in field order."""
    return [(name, cls) for name, cls, _ in _walk(root)]


def config_keys(root: type = Config) -> list[KeyDoc]:
    """Every leaf key of the run config, with its type, default and meaning."""
    keys = []
    for section, cls in sections(root):
        hints = typing.get_type_hints(cls)
        meanings = field_comments(cls)
        for f in dataclasses.fields(cls):
            if _table_of(hints[f.name]) is not None:
                continue
            keys.append(KeyDoc(section, f.name, _kind(hints[f.name]), _default(f),
                               meanings.get(f.name, ""), f"{cls.__module__}.{cls.__qualname__}"))
    return keys


def free_tables(root: type = Config) -> set[str]:
    """Dotted tables whose keys are free (a ``dict`` field such as ``[spark.conf]``)."""
    return {f"{k.section}.{k.key}" for k in config_keys(root) if k.kind == "table"}


_HEADER = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\-\"]+)\s*\]\]?\s*(#.*)?$")
_ASSIGN = re.compile(r"^\s*([A-Za-z0-9_\-]+(?:\s*\.\s*[A-Za-z0-9_\-]+)*)\s*=")


def toml_keys(text: str) -> list[tuple[str, str]]:
    """(dotted table, key) of every assignment in a TOML text or snippet, read line by line (so that
    a snippet that is not a whole TOML file, e.g. one with ``...``, is still read)."""
    table, found = "", []
    for line in text.splitlines():
        if m := _HEADER.match(line):
            table = m.group(1).replace('"', "")
        elif m := _ASSIGN.match(line):
            *parts, key = [p.strip() for p in m.group(1).split(".")]
            found.append((".".join([table, *parts]).strip("."), key))
    return found


def unknown_keys(text: str, root: type = Config) -> list[str]:
    """The ``[table] key`` assignments of a TOML text that name a run-config table but no key of it.
    Tables outside the run config (MODELS.toml sections, custom presets) are not its business."""
    known = {(k.section, k.key) for k in config_keys(root)}
    tables = {name for name, _ in sections(root)}
    free = free_tables(root)
    bad = []
    for table, key in toml_keys(text):
        top = table.split(".")[0]
        if top not in tables or any(table == t or table.startswith(t + ".") for t in free):
            continue
        if (table, key) not in known and f"{table}.{key}" not in tables:
            bad.append(f"[{table}] {key}")
    return bad


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_configuration(root: type = Config) -> str:
    """The configuration reference page (Markdown)."""
    out = [
        "# Configuration reference",
        "",
        "Every key of `--config RUN.toml`, generated from the run config's dataclasses "
        "(`jobs/stages/config.py` and the rule classes it holds). Every key is optional but those marked "
        "`required` (keys of an entry of an array of tables): the default applies when it is left out. An unknown key is an error that lists the known ones, and a value "
        "of the wrong type is an error that names the key. Local paths are made absolute on the driver, "
        "against the folder the command runs in.",
        "",
    ]
    by_section: dict[str, list[KeyDoc]] = {}
    for k in config_keys(root):
        by_section.setdefault(k.section, []).append(k)
    arrays = array_tables(root)
    for section, cls in sections(root):
        keys = by_section.get(section, [])
        if not keys:
            continue
        out += [f"## `[[{section}]]`" if section in arrays else f"## `[{section}]`", ""]
        doc = inspect.getdoc(cls) or ""
        if doc and not doc.startswith(f"{cls.__name__}("):
            out += [doc.split("\n\n")[0].replace("\n", " "), ""]
        out += [f"Declared by `{keys[0].owner}`.", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        for k in keys:
            out.append(f"| `{k.key}` | {k.kind} | `{_cell(k.default)}` | {_cell(k.meaning)} |")
        out.append("")
    return "\n".join(out)
