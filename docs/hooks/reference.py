"""MkDocs hook: the generated reference pages.

``reference/configuration.md`` comes from the run config's dataclasses (jobs.stages.config_reference),
``reference/cli.md`` from the typer app (jobs.cli.reference); in any page, the markers
``<!-- reference: tables -->`` and ``<!-- reference: reasons -->`` are replaced by the stage tables'
columns (schemas.tables) and the rejection reasons (schemas.reasons)."""

from __future__ import annotations

from mkdocs.structure.files import File, Files


def _generated() -> dict:
    from jobs.cli.reference import render_cli
    from jobs.stages.config_reference import render_configuration

    return {"reference/configuration.md": render_configuration, "reference/cli.md": render_cli}


def on_files(files: Files, config) -> Files:
    for uri, render in _generated().items():
        existing = files.get_file_from_path(uri)
        if existing is not None:
            files.remove(existing)
        files.append(File.generated(config, uri, content=render()))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    from jobs.cli.reference import render_reasons, render_tables

    for marker, render in (("<!-- reference: tables -->", render_tables), ("<!-- reference: reasons -->", render_reasons)):
        if marker in markdown:
            markdown = markdown.replace(marker, render())
    return markdown
