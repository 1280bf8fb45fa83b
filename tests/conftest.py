"""Shared test fixtures: where the real captures are, and a CLI runner."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REAL = SHARED / "fixtures" / "real"
EXAMPLES = ROOT / "examples"

WORKLOADS = ("pio", "overcommit", "halt", "mixed", "xsave")
#: (file suffix, ground-truth name, detected format)
REAL_FORMATS = (
    ("tracefs.txt", "tracefs", "tracefs"),
    ("trace-cmd.txt", "trace-cmd", "trace-cmd"),
    ("perf-script.txt", "perf", "perf-script"),
)

needs_shared = pytest.mark.skipif(
    not REAL.is_dir(),
    reason=f"real captures not found at {REAL} (the project's ../shared/fixtures/real)",
)


@pytest.fixture
def runner():
    """Invoke the CLI in-process; stdout and stderr kept apart."""
    from typer.testing import CliRunner

    from pipeline.cli import app

    cli = CliRunner()

    def invoke(*args: str, input: bytes | str | None = None):
        return cli.invoke(app, list(args), input=input, env={"COLUMNS": "200"})

    return invoke
