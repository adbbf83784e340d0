"""The generated configuration reference: every run-config key documented, and every key the configs
and the manual's TOML examples name a real key of the dataclasses."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from jobs.stages.config import load_config
from jobs.stages.config_reference import array_tables, config_keys, render_configuration, unknown_keys

ROOT = Path(__file__).resolve().parents[2]
RUN_CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.toml") if p.name != "models.toml")
MANUAL = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]
TOML_BLOCK = re.compile(r"^```toml\n(.*?)^```", re.S | re.M)


def _key(section: str, key: str):
    return next(k for k in config_keys() if (k.section, k.key) == (section, key))


def test_every_config_key_has_a_documentation_line():
    undocumented = [f"[{k.section}] {k.key} ({k.owner})" for k in config_keys() if not k.meaning.strip()]
    assert undocumented == [], "add a trailing # comment (or a comment line above) to these fields"


def test_a_trailing_comment_is_the_meaning_with_type_and_default():
    k = _key("download.politeness", "max_connections_per_host")
    assert (k.kind, k.default, k.meaning) == ("integer", "8", "concurrent fetches per host in one task (0 = no limit)")
    assert k.owner == "curation.fetch.politeness.PolitenessOptions"


def test_comment_lines_above_a_field_without_a_trailing_comment_are_its_meaning():
    k = _key("pipeline", "redo_stale")
    assert (k.kind, k.default) == ("boolean", "true")
    assert k.meaning.startswith("a stage built from another version of its input") and k.meaning.endswith("naming the stale stage")


def test_optional_and_list_fields_are_typed_as_toml_writes_them():
    assert (_key("storage", "s3_endpoint_url").kind, _key("storage", "s3_endpoint_url").default) == ("string (optional)", "unset")
    assert (_key("pipeline", "inputs").kind, _key("pipeline", "inputs").default) == ("list of strings", "[]")
    assert _key("download.fetch", "disallowed_header_directives").default == '["noai", "noimageai", "noindex", "noimageindex"]'


def test_nested_rule_tables_are_walked():
    sections = {k.section for k in config_keys()}
    assert {"extract.rules", "filter_text.rules", "download.rules", "download.fetch", "download.politeness", "dedup.rules"} <= sections


def test_unknown_keys_names_a_misspelt_key_and_ignores_tables_outside_the_run_config():
    text = '[download.fetch]\ntimeout = 3\ntimeout_s = 3.0\n[spark.conf]\n"spark.any.thing" = "1"\n[my-preset.where]\nwidth = { ge = 1 }\n[clip_vitb32]\narch = "x"\n'
    assert unknown_keys(text) == ["[download.fetch] timeout"]
    assert unknown_keys("[download]\nfetch.timeout_s = 3.0\nfetch.timeout = 3\n") == ["[download.fetch] timeout"]


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: p.name)
def test_every_key_a_shipped_run_config_names_exists(path):
    assert unknown_keys(path.read_text()) == []
    load_config(str(path))  # and the loader accepts it


@pytest.mark.parametrize("path", [p for p in MANUAL if p.exists()], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_key_in_the_manuals_toml_examples_exists(path):
    blocks = TOML_BLOCK.findall(path.read_text(encoding="utf-8"))
    assert [bad for block in blocks for bad in unknown_keys(block)] == []


def test_the_rendered_page_lists_every_key_under_its_table():
    page, arrays = render_configuration(), array_tables()
    for k in config_keys():
        assert (f"## `[[{k.section}]]`" if k.section in arrays else f"## `[{k.section}]`") in page
        assert f"| `{k.key}` | {k.kind} |" in page


def test_the_cli_reference_lists_every_command():
    from jobs.cli.reference import render_cli

    page = render_cli()
    for command in ("extract", "filter-text", "download", "dedup", "hash-index", "annotate", "semdedup", "select",
                    "report", "pipeline", "models fetch", "models check", "models init-random", "presets list"):
        assert f"## `curation {command}`" in page
    assert "| `-o, --output <str>` | Stage output folder (local or s3://). [required] |" in page
