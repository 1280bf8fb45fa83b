"""The dashboard without a browser: self-containment, figures, embedded JSON, escaping, CLI.

The datasets (tests/dashboard_data.py) are the bundled example trace, the
same trace with hostile task names and file name, and a four-point sweep of
the built-in model; each is built and its dashboard written once.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import polars as pl
import pytest

import queries
from dashboards import lanes, sweep, text
from dashboards.page import plotly_js
from dashboards.tables import Col, html_table
from dashboards.timeline import count_marks, timeline_figure
from tests import dashboard_data as D

SPEC = re.compile(r'<script type="application/json" id="([^"]+)">(.*?)</script>', re.S)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp() / "dashboards"


def page(kind: str, base: Path) -> str:
    return D.dashboard(kind, base).read_text()


def scripts(html: str) -> dict[str, object]:
    """The page's JSON script elements, parsed."""
    return {sid: json.loads(body) for sid, body in SPEC.findall(html)}


class Tags(HTMLParser):
    """Every start tag with its attributes (script and style bodies are not parsed as tags)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(html: str) -> Tags:
    tags = Tags()
    tags.feed(html)
    return tags


# -- self-contained ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["demo", "hostile", "sweep"])
def test_nothing_external(kind, base):
    html = page(kind, base)
    tags = parse(html)
    linking = {"src", "href", "action", "formaction", "srcset", "poster", "data", "xlink:href"}
    refs = [(t, k, v) for t, attrs in tags.tags for k, v in attrs.items() if k in linking]
    # Only the section links of the navigation bar, all in-page.
    assert refs and all(t == "a" and k == "href" and v.startswith("#") for t, k, v in refs), refs
    assert {t for t, _ in tags.tags} >= {"html", "head", "meta", "style", "script", "table"}
    assert not any(t in ("link", "img", "iframe", "object", "embed", "base") for t, _ in tags.tags)
    style = html.split("<style>", 1)[1].split("</style>", 1)[0]
    assert "url(" not in style and "@import" not in style
    # plotly.js once, and nothing else in a script without the page's nonce
    assert html.count(plotly_js()) == 1
    executable = [a for t, a in tags.tags if t == "script" and a.get("type") != "application/json"]
    assert len(executable) == 2 and len({a["nonce"] for a in executable}) == 1
    csp = next(
        a["content"] for _, a in tags.tags if a.get("http-equiv") == "Content-Security-Policy"
    )
    assert csp.startswith("default-src 'none'; script-src 'nonce-") and "connect-src 'none'" in csp


def test_demo_figures(base):
    html = page("demo", base)
    figures = re.findall(r'<div class="fig" id="([^"]+)" data-spec="spec-\1"></div>', html)
    # one source: no sweep figure; a replay that validated: the validation heatmap
    assert figures == [
        "policy-ops", "policy-cost", "policy-rate", "vcpu-bars", "timeline-0",
        "distributions", "quality", "validation",
    ]  # fmt: skip
    specs = scripts(html)
    for fig in figures:
        spec = specs[f"spec-{fig}"]
        assert spec["figure"]["data"], fig
        assert count_marks_json(spec["figure"]) <= lanes.MAX_MARKS
    timeline = specs["spec-timeline-0"]["figure"]
    menu = timeline["layout"]["updatemenus"][0]
    assert [b["label"] for b in menu["buttons"]] == ["legacy", "vcpu_run", "deferred"]
    assert specs["spec-timeline-0"]["config"] == {"scrollZoom": True}
    assert specs["plotly-config"] == {"responsive": True, "displaylogo": False, "showLink": False}


def decode(value):
    """JSON from plotly's encoder with its typed arrays (dtype, bdata, shape) as numpy arrays."""
    import base64

    import numpy as np

    if isinstance(value, dict) and set(value) >= {"dtype", "bdata"}:
        array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        if "shape" in value:
            array = array.reshape([int(n) for n in str(value["shape"]).split(",")])
        return array
    if isinstance(value, dict):
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def count_marks_json(figure: dict) -> int:
    import plotly.graph_objects as go

    return count_marks(go.Figure(decode(figure)))


def test_demo_sections_and_tables(base):
    html = page("demo", base)
    assert re.findall(r'<section id="([^"]+)">', html) == [
        "policy", "vcpus", "timeline", "distributions", "sweep", "quality",
    ]  # fmt: skip
    assert "Not a sweep dataset" in html
    ds = D.dataset("demo", base)
    # the per-vCPU table: one row per vCPU thread and policy, as vcpu_summary
    table = html.split('id="vcpu-table"', 1)[1].split("</table>", 1)[0]
    assert table.count("<tr>") == queries.run(ds, "vcpu_summary").height + 1  # + header
    # the policy summary's legacy ops, formatted, with the exact value to sort by
    legacy = queries.run(ds, "policy_summary").row(0, named=True)
    assert legacy["policy"] == "legacy"
    assert f'<td class="num" data-v="{legacy["ops"]}">{legacy["ops"]:,}</td>' in html


def test_embedded_json_is_the_data(base):
    ds = D.dataset("hostile", base)
    specs = scripts(page("hostile", base))
    assert specs["manifest"] == json.loads((ds / "manifest.json").read_text())
    # every op of every policy is in the timeline, once (exact mode: few operations)
    ops = specs["spec-timeline-0"]["figure"]["data"]
    ops = [t for t in ops if t.get("legendgroup", "").startswith("ops-")]
    total = sum(count_marks_json({"data": [t]}) for t in ops)
    assert total == queries.run(ds, "policy_summary")["ops"].sum()


# -- escaping -------------------------------------------------------------------------


def test_hostile_names_never_appear_as_markup(base):
    html = page("hostile", base).replace(plotly_js(), "")
    for raw in (*D.HOSTILE, D.HOSTILE_HOG, "<svg onload", "<iframe", "alert(2)</script>"):
        assert raw not in html, raw
    tags = parse(html)
    assert not any(k.startswith("on") for _, attrs in tags.tags for k in attrs), (
        "an event-handler attribute"
    )
    assert [t for t, _ in tags.tags if t in ("img", "svg", "b", "iframe")] == []


def test_hostile_names_are_text_in_every_place(base):
    html = page("hostile", base)
    shown = "".join(parse(html.replace(plotly_js(), "")).text)
    specs = scripts(html)
    esc = text.plotly_text
    for name in D.HOSTILE:
        label = f"{esc(name)} · "  # vCPU labels of the figures: `name · tid`
        # HTML: the per-vCPU table and the validation table show the name as text
        vcpu_rows = html.split('id="vcpu-table"', 1)[1].split("</table>", 1)[0]
        assert f"<td>{text.html_text(name)}</td>" in vcpu_rows
        validation_rows = html.split('id="validation-table"', 1)[1].split("</table>", 1)[0]
        assert f"<td>{text.html_text(name)}</td>" in validation_rows
        assert shown.count(name) >= 6  # 3 policies in the vCPU table, checks in validation
        # plotly: tick labels of the vCPU bars and the validation heatmap, timeline trace names
        bars = specs["spec-vcpu-bars"]["figure"]["data"]
        assert any(x.startswith(label) for t in bars for x in t["x"])
        heat = specs["spec-validation"]["figure"]["data"][0]
        assert any(y.startswith(label) for y in heat["y"])
        lanes_ = specs["spec-timeline-0"]["figure"]["data"]
        assert any(t.get("meta", "").startswith(label) for t in lanes_)
        # and in the manifest as the exact name
        assert name in json.dumps(specs["manifest"], ensure_ascii=False)
    # the file name: the header's sources table (HTML) and the manifest's path
    assert D.HOSTILE_FILE in shown
    assert specs["manifest"]["sources"][0]["path"].endswith(D.HOSTILE_FILE)
    # a plotly label never carries raw markup or an unescaped ampersand
    for sid, spec in specs.items():
        if sid.startswith("spec-"):
            for trace in spec["figure"]["data"]:
                for key in ("name", "meta", "text", "x", "y"):
                    for value in _strings(trace.get(key)):
                        assert "<" not in value.replace("<br>", ""), (sid, key, value)
                        assert re.search(r"&(?!amp;|lt;|gt;)", value) is None, (sid, key, value)


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def test_plotly_text_and_script_json():
    assert text.plotly_text("<b>x</b> & y") == "&lt;b&gt;x&lt;/b&gt; &amp; y"
    assert text.plotly_text(None) == ""
    assert text.html_text("\"'<&>") == "&quot;&#x27;&lt;&amp;&gt;"
    # control characters (a comm may hold any byte but NUL) are shown as escapes
    assert text.html_text("a\tb\n\x1b[2J\x9b") == "a\\tb\\n\\x1b[2J\\x9b"
    assert text.plotly_text("<\x07>é") == "&lt;\\x07&gt;é"
    value = {"comm": "</script><!--\u2028&"}
    out = text.script_json(value)
    assert "<" not in out and ">" not in out and "&" not in out and "\u2028" not in out
    assert json.loads(out) == value


def test_html_table_escapes_and_sorts_numbers():
    frame = pl.DataFrame({"comm": ["<i>a</i>", None], "n": [1234567, None], "p": [12.5, 0.0]})
    html = html_table(
        frame,
        [Col("comm", "task <name>"), Col("n", "n", "int"), Col("p", "p", "pct")],
        table_id='t"x',
        row_class=lambda r: "bad" if r["n"] else None,
    )
    assert 'id="t&quot;x"' in html and "task &lt;name&gt;" in html
    assert '<tr class="bad"><td>&lt;i&gt;a&lt;/i&gt;</td>' in html
    assert '<td class="num" data-v="1234567">1,234,567</td>' in html
    assert '<td class="num" data-v="12.5">12.50 %</td>' in html
    assert '<tr><td></td><td class="num"></td><td class="num" data-v="0.0">0.00 %</td>' in html


# -- timeline budget and binning ------------------------------------------------------


def test_bucket_widths_are_round_and_within_the_budget():
    assert [lanes.nice_width(w) for w in (0.3, 1, 1.01, 7, 0.00012)] == [0.5, 1, 2, 10, 0.0002]
    for span, n in ((1172_000.0, 2000), (0.712, 500), (999.0, 1000)):
        width = lanes.bucket_width(span, n)
        assert span // width + 1 <= n and width == lanes.nice_width(width)
    assert lanes.bucket_width(1000.0, 1000) == 2  # 1 ms would need 1001 buckets


def test_bin_states_splits_stretches_over_buckets():
    # CPU 0, width 10 ms: a KVM_RUN stretch 5 -> 25 ms (half of bucket 0, all of
    # 1, half of 2); two threads preempted over 0 -> 10 and 0 -> 5 (1.5 threads
    # on average in bucket 0); a stretch ending on a bound does not reach the next.
    states = pl.DataFrame(
        {
            "cpu": [0, 0, 0, 1],
            "state": ["kvm_run", "preempted", "preempted", "user"],
            "start_ms": [5.0, 0.0, 0.0, 10.0],
            "end_ms": [25.0, 10.0, 5.0, 20.0],
        }
    )
    assert lanes.bin_states(states, 10.0).rows() == [
        (0, "kvm_run", 0, 0.0, 0.5),
        (0, "kvm_run", 1, 10.0, 1.0),
        (0, "kvm_run", 2, 20.0, 0.5),
        (0, "preempted", 0, 0.0, 1.5),
        (1, "user", 1, 10.0, 1.0),
    ]


def test_a_long_trace_is_binned_within_the_mark_budget():
    # 60k stretches on 4 CPUs and 200k operations per policy: both binned.
    n = 60_000
    states = pl.DataFrame(
        {
            "cpu": [i % 4 for i in range(n)],
            "pid": [100 + i % 8 for i in range(n)],
            "comm": ["CPU x/KVM"] * n,
            "state": [("kvm_run", "user", "preempted", "blocked")[i // 4 % 4] for i in range(n)],
            "start_ms": [i * 0.5 for i in range(n)],
            "end_ms": [i * 0.5 + 0.4 for i in range(n)],
        }
    )
    span = n * 0.5
    width = lanes.bucket_width(span, lanes.LANE_MARKS // (4 * 5))
    binned = lanes.bin_states(states, width)
    ops_width = lanes.bucket_width(span, lanes.OP_MARKS // 3 // (2 * 4))
    buckets = int(span // ops_width) + 1
    ops = pl.DataFrame(
        {
            "policy": [p for p in ("legacy", "vcpu_run", "deferred") for _ in range(4 * buckets)],
            "cpu": [c for _ in range(3) for c in range(4) for _ in range(buckets)],
            "bucket": [b for _ in range(12) for b in range(buckets)],
            "start_ms": [b * ops_width for _ in range(12) for b in range(buckets)],
            "ops": [50] * (12 * buckets),
            "redundant_ops": [10] * (12 * buckets),
        }
    )
    fig = timeline_figure(
        binned, ops, cpus=[0, 1, 2, 3], policies=["legacy", "vcpu_run", "deferred"],
        span_ms=span, lanes_bucket_ms=width, ops_bucket_ms=ops_width,
    )  # fmt: skip
    # every CPU and state has a cell in every bucket (each has stretches in all)
    cells = 4 * 4 * (int(binned["bucket"].max()) + 1)
    assert (len(binned), binned["share"].min() > 0) == (cells, True)
    # a needed and a redundant mark per CPU, bucket and policy
    assert count_marks(fig) == cells + 3 * 4 * buckets * 2 <= lanes.MAX_MARKS
    kinds = {t.type for t in fig.data}
    assert kinds == {"heatmap", "scattergl", "scatter"}  # lanes, operations, legend entries


# -- sweeps ---------------------------------------------------------------------------


def test_swept_keys_leave_out_derived_parameters():
    points = [
        {"overcommit": o, "vms": 2 * o, "xstate": x, "cpus": 4}
        for o in (1, 2, 4)
        for x in ("sse", "amx")
    ]
    assert sweep.swept_keys(points) == ["xstate", "overcommit"]


def test_sweep_points_from_explicit_sweep_entries():
    manifest = {
        "sources": [
            {"id": "a", "sweep": {"hz": 250, "ratio": 1.0}},
            {"id": "b", "sweep": {"hz": 1000, "ratio": 1.0}},
            {"id": "c", "sweep": {"hz": 250, "ratio": 2.0}},
        ]
    }
    savings = pl.DataFrame(
        {
            "source": ["a", "b", "c", "c"],
            "policy": ["vcpu_run", "vcpu_run", "vcpu_run", "deferred"],
            "ops_saved_pct": [10.0, 20.0, 30.0, 31.0],
            "ops_saved_per_s": [1.0, 2.0, 3.0, 3.1],
            "cost_saved_us_per_s": [0.1, 0.2, 0.3, 0.31],
        }
    )
    points, params = sweep.sweep_points(manifest, savings)
    assert params == ["hz", "ratio"]
    assert points.select("source", "hz", "ratio", "policy").rows() == [
        ("a", "250", "1", "vcpu_run"),
        ("b", "1000", "1", "vcpu_run"),
        ("c", "250", "2", "vcpu_run"),
        ("c", "250", "2", "deferred"),
    ]
    fig = sweep.sweep_heatmap(points, params)
    # policies x metrics heatmaps (one panel), the first shown; hz sorted as numbers
    assert len(fig.data) == 2 * 3 and [t.visible for t in fig.data].count(True) == 1
    first = fig.data[0]
    assert (list(first.x), list(first.y)) == (["250", "1000"], ["1", "2"])
    z = first.z.tolist()
    assert z[0][:2] == [10.0, 20.0] and z[1][0] == 30.0 and z[1][1] != z[1][1]  # NaN: no point
    assert len(fig.layout.updatemenus[0].buttons) == 6
    assert sweep.sweep_points({"sources": manifest["sources"][:1]}, savings) is None


def test_sweep_dashboard(base):
    html = page("sweep", base)
    specs = scripts(html)
    heat = specs["spec-sweep"]["figure"]
    assert [t["x"] for t in heat["data"][:1]] == [["1", "2"]]
    assert heat["data"][0]["y"] == ["sse", "avx512"]
    assert "overcommit=1, xstate=sse" in "".join(parse(html).text)  # the header's swept values
    assert len(re.findall(r'id="timeline-\d"', html)) == 4  # one per point (4 <= the default)


# -- the command ----------------------------------------------------------------------


@pytest.fixture
def cli():
    import typer
    from typer.testing import CliRunner

    from dashboards.cli import dashboard

    app = typer.Typer()
    app.command("dashboard")(dashboard)
    app.command("other")(lambda: None)  # two commands: `dashboard` is then a subcommand

    def invoke(*args: str):
        return CliRunner().invoke(app, ["dashboard", *args])

    return invoke


def test_cli_writes_the_dashboard(cli, base, tmp_path):
    ds = D.dataset("demo", base)
    source = queries.manifest(ds)["sources"][0]["id"]
    out = tmp_path / "report.html"
    result = cli(str(ds), "-o", str(out), "--timeline-source", source, "--title", "<t>")
    assert result.exit_code == 0, result.stderr
    assert re.fullmatch(rf"wrote {re.escape(str(out))}: 8 figures, \d+\.\d MB, \d+\.\d s\n",
                        result.stdout)  # fmt: skip
    assert "<title>&lt;t&gt;</title>" in out.read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{missing}"], "error: {missing}: is not an fpureplay dataset (no manifest.json)\n"),
        (["{demo}", "-s", "nope"], "error: no source 'nope' in the dataset (its sources: "),
        (["{ingested}"], "error: query 'policy_summary' reads the runs table, but {ingested}"
                         " has no runs table yet (`fpureplay replay {ingested}` writes it)\n"),
    ],
)  # fmt: skip
def test_cli_errors(cli, base, tmp_path, args, message):
    paths = {
        "missing": str(tmp_path / "none"),
        "demo": str(D.dataset("demo", base)),
        "ingested": str(D.dataset("ingested", base)),
    }
    out = tmp_path / "x.html"
    result = cli(*[a.format(**paths) for a in args], "-o", str(out))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and message.format(**paths) in result.stderr
    assert not out.exists()


def test_cli_refuses_an_output_it_cannot_write(cli, base, tmp_path):
    ds = str(D.dataset("demo", base))
    result = cli(ds, "-o", str(tmp_path))
    assert (result.exit_code, result.stderr) == (2, f"error: {tmp_path}: is a directory;"
                                                 " give the HTML file to write\n")  # fmt: skip
    result = cli(ds, "-o", str(tmp_path / "no" / "x.html"))
    missing = tmp_path / "no"
    assert (result.exit_code, result.stderr) == (2, f"error: {missing}: no such directory\n")


def test_queries_draw_no_progress_bar(base):
    # DuckDB draws its progress bar on stdout, even into a pipe: it would land
    # in front of the command's line (and in `fpureplay query -f csv` output).
    con = queries.connect(D.dataset("demo", base))
    assert con.execute("SELECT current_setting('enable_progress_bar')").fetchall() == [(False,)]
