"""Generated sections of Markdown docs (the CLI and query references).

A generated section sits between a start and an end marker; tests compare
the file with a fresh rendering so that docs cannot drift from the code.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path


def replace_section(text: str, start: str, end: str, render: Callable[[], str]) -> str:
    """``text`` with the section from ``start`` to ``end`` replaced by ``render()``."""
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise ValueError(f"no generated-section markers ({start!r})")
    return pattern.sub(lambda _: render(), text)


def main(render: Callable[[], str], replace_in: Callable[[str], str]) -> None:
    """``--write FILE`` regenerates FILE's section; otherwise print the rendering."""
    if len(sys.argv) == 3 and sys.argv[1] == "--write":
        doc = Path(sys.argv[2])
        doc.write_text(replace_in(doc.read_text()))
    else:
        print(render())
