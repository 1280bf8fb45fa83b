"""The README's CLI reference is the commands' own --help."""

from __future__ import annotations

from pipeline.cli_reference import replace_in
from tests.conftest import ROOT


def test_readme_cli_reference_is_current():
    readme = (ROOT / "README.md").read_text()
    assert replace_in(readme) == readme, (
        "README CLI reference is stale: run `python -m pipeline.cli_reference --write README.md`"
    )


def test_every_command_has_help_text():
    import typer.main

    from pipeline.cli import app

    group = typer.main.get_command(app)
    for name in group.list_commands(None):
        assert group.get_command(None, name).help, name
