"""Escaping of trace-derived text for the three places the page shows it.

A task name is whatever the traced program set with ``prctl(PR_SET_NAME)``:
``<img src=x onerror=alert(1)>`` is a valid one.  The page shows such text
in three ways, each with its own rules:

* **HTML** (tables, the header): :func:`html_text` escapes ``& < > " '``.
* **Plotly labels** (legend names, tick labels, hover text, cell text):
  plotly.js renders a subset of HTML in every label (``<b>``, ``<br>``,
  ``<a href>``, ``<span style>``) and decodes entities, so a name would turn
  bold or into a link.  :func:`plotly_text` escapes ``& < >`` as entities,
  which plotly decodes back into the literal characters as text.  Trace text
  is never put into a ``hovertemplate``, whose ``%{...}`` it would expand:
  templates are constant and take names from ``text`` or ``customdata``.
* **Control characters** (a name may hold ESC, a tab, a newline: the kernel
  copies the bytes a program sets as they are) are shown as escapes
  (``\\x1b``, ``\\t``, ``\\n``) in HTML and plotly labels, as the CLI's
  tables show them (:func:`pipeline.output.printable`): whitespace would be
  collapsed and other controls not shown at all.
* **JSON inside ``<script>``** (figures, the manifest):
  :func:`script_json` makes ``</script>`` and ``<!--`` impossible by
  writing ``< > &`` and the two JavaScript line separators as ``\\uXXXX``,
  which JSON.parse reads back exactly.
"""

from __future__ import annotations

import html
import json
from typing import Any

from pipeline.output import printable

_PLOTLY = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_SCRIPT = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def html_text(value: Any) -> str:
    """``value`` as HTML text (None is empty), quotes escaped too for attributes."""
    return "" if value is None else html.escape(printable(str(value)), quote=True)


def plotly_text(value: Any) -> str:
    """``value`` as plotly label text: shown literally, never as markup (None is empty)."""
    return "" if value is None else printable(str(value)).translate(_PLOTLY)


def script_json(text_or_obj: Any) -> str:
    """JSON safe to place between ``<script type="application/json">`` tags.

    A ``str`` is taken to be JSON already (plotly's encoder output); anything
    else is encoded first.  Only characters inside JSON strings can be ``<``,
    ``>``, ``&`` or a line separator, and ``\\uXXXX`` is their JSON spelling,
    so the value JSON.parse returns is unchanged.
    """
    text = text_or_obj if isinstance(text_or_obj, str) else json.dumps(text_or_obj)
    return text.translate(_SCRIPT)
