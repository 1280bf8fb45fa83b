"""Page assembly: sections of figures, tables and notes into one self-contained HTML file.

The page needs nothing but itself: plotly.js is inlined once, every figure
is a JSON document in a ``<script type="application/json">`` element that a
small inline script hands to ``Plotly.newPlot``, and a Content-Security-Policy
forbids every network fetch (``default-src 'none'``) and every script
without the page's nonce, so even a name that escaped escaping could not run
an inline event handler.  No ``src`` or external ``href`` appears anywhere.

The builders upstream produce :class:`Figure` (a ``go.Figure``),
:class:`Html` (markup built by this package from escaped parts: tables, the
provenance header) and :class:`Note` (plain text, escaped here).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

from dashboards.text import html_text, script_json

if TYPE_CHECKING:
    import plotly.graph_objects as go


@dataclass
class Figure:
    """A figure to place, with a caption (plain text) and plotly config overrides."""

    id: str
    figure: go.Figure
    caption: str = ""
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Html:
    """Markup made by this package from escaped parts (tables, the header)."""

    html: str


@dataclass(frozen=True)
class Note:
    """A paragraph of plain text."""

    text: str


Block = Figure | Html | Note


@dataclass
class Section:
    """One titled part of the page."""

    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)
    intro: str = ""


#: Plotly config for every figure (a figure's own ``config`` is merged over it).
BASE_CONFIG = {"responsive": True, "displaylogo": False, "showLink": False}

_CSS = """
:root { --fg: #1d1d1f; --muted: #5f6368; --line: #dadce0; --bad: #fde7e9; --head: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: var(--fg); background: #fff; }
header.top { padding: 16px 24px 8px; border-bottom: 1px solid var(--line);
  background: var(--head); }
header.top h1 { margin: 0 0 4px; font-size: 20px; }
header.top .sub { color: var(--muted); margin: 0 0 8px; }
nav { position: sticky; top: 0; z-index: 10; background: #fff; border-bottom: 1px solid var(--line);
  padding: 6px 24px; }
nav a { margin-right: 16px; color: #1a73e8; text-decoration: none; }
main { padding: 0 24px 48px; }
section { margin-top: 28px; }
section h2 { font-size: 18px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
p.intro, p.note, p.caption { color: var(--muted); max-width: 110ch; }
p.caption { margin-top: 2px; font-size: 13px; }
div.fig { width: 100%; min-height: 200px; }
.table-wrap { max-height: 480px; overflow: auto; border: 1px solid var(--line);
  margin: 8px 0 16px; }
table { border-collapse: collapse; font-size: 13px; white-space: nowrap; }
caption { text-align: left; font-weight: 600; padding: 6px 8px; }
th, td { padding: 3px 10px; border-bottom: 1px solid var(--line); text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
thead th { position: sticky; top: 0; background: var(--head); cursor: pointer; user-select: none; }
thead th[aria-sort="ascending"]::after { content: " \\25B2"; }
thead th[aria-sort="descending"]::after { content: " \\25BC"; }
tr.bad td { background: var(--bad); }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; margin: 8px 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; }
details pre { max-height: 480px; overflow: auto; background: var(--head); padding: 8px;
  border: 1px solid var(--line); font-size: 12px; }
"""

# Renders every figure, then marks the page ready (benchmarks and browser
# tests wait for it), and makes the tables sortable.  It only reads the
# page's own JSON script elements.
_JS = """
(function () {
  "use strict";
  var divs = Array.prototype.slice.call(document.querySelectorAll("div.fig[data-spec]"));
  var base = JSON.parse(document.getElementById("plotly-config").textContent);
  var plots = divs.map(function (div) {
    var spec = JSON.parse(document.getElementById(div.getAttribute("data-spec")).textContent);
    var config = Object.assign({}, base, spec.config || {});
    return Plotly.newPlot(div, spec.figure.data, spec.figure.layout, config);
  });
  var pre = document.getElementById("manifest-text");
  if (pre) {  // textContent: the manifest is shown as text, never parsed as markup
    var manifest = JSON.parse(document.getElementById("manifest").textContent);
    pre.textContent = JSON.stringify(manifest, null, 1);
  }
  Promise.all(plots).then(function () {
    // Two animation frames: the figures are painted, not only laid out.
    requestAnimationFrame(function () {
      requestAnimationFrame(function () {
        window.fpureplayDashboard = {figures: plots.length, readyMs: performance.now()};
        document.documentElement.setAttribute("data-rendered", String(plots.length));
      });
    });
  }, function (err) { console.error("dashboard: a figure failed to render", err); });

  function key(td) {
    var v = td.getAttribute("data-v");
    return v === null ? td.textContent : Number(v);
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, col) {
      function sort() {
        var asc = th.getAttribute("aria-sort") !== "ascending";
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", asc ? "ascending" : "descending");
        var numeric = th.getAttribute("data-type") === "num";
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = key(a.cells[col]), y = key(b.cells[col]);
          var blankX = numeric ? typeof x !== "number" : x === "";
          var blankY = numeric ? typeof y !== "number" : y === "";
          if (blankX || blankY) { return blankX === blankY ? 0 : (blankX ? 1 : -1); }
          var c = numeric ? x - y : String(x).localeCompare(String(y));
          return asc ? c : -c;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      }
      th.addEventListener("click", sort);
      th.addEventListener("keydown", function (e) { if (e.key === "Enter") { sort(); } });
    });
  });
})();
"""


@cache
def plotly_js() -> str:
    """The plotly.js bundle that ships with plotly.py (inlined once per page)."""
    from plotly.offline import get_plotlyjs

    js = get_plotlyjs()
    # The bundle goes between <script> tags as is; it must not close them.
    if "</script" in js.lower():
        raise RuntimeError("plotly.js contains '</script': it cannot be inlined")
    return js


def figure_json(fig: Figure) -> str:
    """The figure (and its config) as JSON safe to embed; plotly's encoder (typed arrays)."""
    import plotly.io as pio

    spec = '{"figure": ' + pio.to_json(fig.figure, validate=False)
    return script_json(spec + ', "config": ' + json.dumps(fig.config) + "}")


def render_page(
    *,
    title: str,
    header: Html,
    sections: Sequence[Section],
    manifest: dict[str, Any],
) -> str:
    """The whole page as one HTML string."""
    nonce = secrets.token_urlsafe(18)
    csp = (
        "default-src 'none'; "
        f"script-src 'nonce-{nonce}' 'unsafe-eval'; "  # regl (WebGL traces) compiles with Function
        "style-src 'unsafe-inline'; img-src data: blob:; font-src data:; "
        "connect-src 'none'; base-uri 'none'; form-action 'none'"
    )
    nav = "".join(f'<a href="#{html_text(s.id)}">{html_text(s.title)}</a>' for s in sections)
    body: list[str] = []
    specs: list[str] = []
    for section in sections:
        parts = [f'<section id="{html_text(section.id)}"><h2>{html_text(section.title)}</h2>']
        if section.intro:
            parts.append(f'<p class="intro">{html_text(section.intro)}</p>')
        for block in section.blocks:
            if isinstance(block, Figure):
                spec_id = f"spec-{block.id}"
                parts.append(
                    f'<div class="fig" id="{html_text(block.id)}" data-spec="{html_text(spec_id)}">'
                    "</div>"
                )
                if block.caption:
                    parts.append(f'<p class="caption">{html_text(block.caption)}</p>')
                specs.append(
                    f'<script type="application/json" id="{html_text(spec_id)}">'
                    f"{figure_json(block)}</script>"
                )
            elif isinstance(block, Html):
                parts.append(block.html)
            else:
                parts.append(f'<p class="note">{html_text(block.text)}</p>')
        parts.append("</section>")
        body.append("".join(parts))
    return "".join(
        [
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{html_text(csp)}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            '<meta name="generator" content="fpureplay dashboard">',
            f"<title>{html_text(title)}</title><style>{_CSS}</style></head><body>",
            header.html,
            f"<nav>{nav}</nav><main>",
            *body,
            "</main>",
            '<script type="application/json" id="manifest">',
            script_json(manifest),
            "</script>",
            '<script type="application/json" id="plotly-config">',
            script_json(BASE_CONFIG),
            "</script>",
            *specs,
            f'<script nonce="{nonce}">{plotly_js()}</script>',
            f'<script nonce="{nonce}">{_JS}</script>',
            "</body></html>\n",
        ]
    )
