"""`curation ... --help` shows every help text as written (no markup eats "[download]" or "<stage>")."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from jobs.cli import app

runner = CliRunner()


def _leaf_commands(group, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    found = []
    for name, command in group.commands.items():
        if hasattr(command, "commands"):  # a sub-app (models, presets)
            found += _leaf_commands(command, (*path, name))
        else:
            found.append(((*path, name), command))
    return found


COMMANDS = _leaf_commands(typer.main.get_command(app))


def _words(text: str) -> str:
    return " ".join(text.split())


def test_every_command_is_covered():
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"extract", "download", "pipeline", "models check", "presets show"} <= names


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_help_shows_the_command_and_option_texts_as_written(path, command):
    result = runner.invoke(app, [*path, "--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    shown = _words(result.output)
    texts = [command.help or ""] + [p.help for p in command.params if getattr(p, "help", None)]
    for text in texts:
        assert _words(text) in shown


def test_download_help_names_its_config_table():
    result = runner.invoke(app, ["download", "--help"])
    assert "([download] in the config)" in _words(result.output)
