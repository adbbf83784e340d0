"""Generated reference pages of the manual: the CLI (from the typer app), the stage tables (from
``schemas.tables``) and the rejection reasons (from ``schemas.reasons``). ``docs/hooks/reference.py``
renders them at build time; the configuration reference is ``jobs.stages.config_reference``."""

from __future__ import annotations

import ast
import inspect
import io
import tokenize

import typer

from schemas import reasons, tables


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _commands(group, ctx, path: list[str]):
    """(path, command, context) of every leaf command under ``group``, in the app's order."""
    for name, command in group.commands.items():
        sub = type(ctx)(command, info_name=name, parent=ctx)
        if hasattr(command, "commands"):
            yield from _commands(command, sub, [*path, name])
        else:
            yield [*path, name], command, sub


def render_cli(app: typer.Typer | None = None) -> str:
    """The CLI reference page (Markdown): every command's usage, help and options."""
    if app is None:
        from jobs.cli import app
    root = typer.main.get_command(app)
    ctx = root.make_context("curation", [], resilient_parsing=True)
    out = [
        "# CLI reference",
        "",
        "Every `curation` command, generated from the command line's own definitions (`jobs/cli/`); "
        "`curation COMMAND --help` prints the same. `./spark-submit.sh COMMAND ...` takes the same "
        "arguments on a cluster. A problem of the input, config, paths or environment ends a command "
        "with one line, `error: ...`, and exit code 2.",
        "",
        root.help or "",
        "",
    ]
    for path, command, sub in _commands(root, ctx, []):
        out += [f"## `curation {' '.join(path)}`", ""]
        out += [inspect.cleandoc(command.help or ""), ""]
        out += ["```", command.get_usage(sub).replace("Usage: ", ""), "```", ""]
        rows = [p.get_help_record(sub) for p in command.params]
        rows = [r for r in rows if r]
        if rows:
            out += ["| argument / option | meaning |", "|---|---|"]
            out += [f"| `{_cell(opts)}` | {_cell(help_text)} |" for opts, help_text in rows]
            out.append("")
    return "\n".join(out)


# the tables a stage folder holds (the others are intermediates and per-shard accounting)
STAGE_TABLES = ("candidates", "text_ok", "fetched", "unique", "annotated", "rejected", "hash_list", "uid_list")


def render_tables() -> str:
    """One Markdown table per stage table: column, type, nullable, meaning."""
    out = []
    for table in (tables.TABLES[name] for name in STAGE_TABLES):
        out += [f"### `{table.name}`", "", "| column | type | nullable | meaning |", "|---|---|---|---|"]
        for c in table.columns:
            meaning = c.doc or (f"score of the `[{c.model}]` model (MODELS.toml)" if c.model else "")
            out.append(f"| `{c.name}` | {c.kind} | {'yes' if c.nullable else 'no'} | {_cell(meaning)} |")
        out.append("")
    return "\n".join(out)


def reason_docs() -> list[tuple[str, str, str]]:
    """(group, value, meaning) of every ``schemas.Reason``: the group is the comment line above a
    run of members (``# dedup``), the meaning the member's trailing comment."""
    path = inspect.getsourcefile(reasons)
    text = open(path, encoding="utf-8").read()
    comments = {t.start[0]: t.string.lstrip("#").strip()
                for t in tokenize.generate_tokens(io.StringIO(text).readline) if t.type == tokenize.COMMENT}
    lines = text.splitlines()
    node = next(n for n in ast.walk(ast.parse(text)) if isinstance(n, ast.ClassDef) and n.name == "Reason")
    group, out = "", []
    for stmt in node.body:
        if not isinstance(stmt, ast.Assign):
            continue
        above = stmt.lineno - 1
        if above in comments and lines[above - 1].lstrip().startswith("#"):
            group = comments[above].split(" (")[0]
        trailing = comments.get(stmt.lineno, "") if not lines[stmt.lineno - 1].lstrip().startswith("#") else ""
        out.append((group, reasons.Reason[stmt.targets[0].id].value, trailing))
    return out


def render_reasons() -> str:
    out = ["| reason | raised by | meaning |", "|---|---|---|"]
    out += [f"| `{value}` | {_cell(group)} | {_cell(meaning)} |" for group, value, meaning in reason_docs()]
    return "\n".join(out) + "\n"
