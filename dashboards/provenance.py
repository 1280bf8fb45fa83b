"""The page header: what the dashboard is of (sources, replay parameters, tool versions).

Built from the manifest alone, every value escaped; the manifest itself is
embedded whole as JSON by :mod:`dashboards.page` and shown here on demand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dashboards.page import Html
from dashboards.tables import Col, html_table
from dashboards.text import html_text

SOURCE_COLUMNS = (
    Col("id", "source", title="stable id: file stem and sha256 prefix"),
    Col("path", "path", title="the input as given to ingest"),
    Col("format", "format"),
    Col("kernel", "kernel", title="when the trace says it"),
    Col("recorded_policy", "recorded policy", title="as the replay detected it"),
    Col("events", "events", "int"),
    Col("rejects", "rejects", "int"),
    Col("lost_events", "lost events", "int"),
    Col("span_s", "span (s)", "float3", "last event - first event"),
    Col("n_cpus", "CPUs", "int"),
    Col("n_vcpus", "vCPU threads", "int"),
)


def _sources_frame(manifest: dict[str, Any], swept: dict[str, dict[str, str]]):
    import polars as pl

    rows = []
    for s in manifest.get("sources", []):
        first, last = s.get("first_ts_ns"), s.get("last_ts_ns")
        rows.append(
            {
                "id": s.get("id"),
                "path": s.get("path"),
                "format": s.get("format"),
                "kernel": s.get("kernel"),
                "recorded_policy": s.get("recorded_policy"),
                "events": s.get("events"),
                "rejects": s.get("rejects"),
                "lost_events": s.get("lost_events"),
                "span_s": (last - first) / 1e9 if first is not None and last is not None else None,
                "n_cpus": len(s.get("cpus") or []),
                "n_vcpus": len(s.get("vcpu_threads") or []),
                "swept": ", ".join(f"{k}={v}" for k, v in swept.get(s.get("id"), {}).items()),
            }
        )
    schema = {
        "id": pl.String, "path": pl.String, "format": pl.String, "kernel": pl.String,
        "recorded_policy": pl.String, "events": pl.Int64, "rejects": pl.Int64,
        "lost_events": pl.Int64, "span_s": pl.Float64, "n_cpus": pl.Int64, "n_vcpus": pl.Int64,
        "swept": pl.String,
    }  # fmt: skip
    return pl.DataFrame(rows, schema=schema)


def _facts(pairs: list[tuple[str, Any]]) -> str:
    items = "".join(
        f"<dt>{html_text(k)}</dt><dd>{html_text(v)}</dd>" for k, v in pairs if v not in (None, "")
    )
    return f'<dl class="facts">{items}</dl>'


def provenance_header(
    manifest: dict[str, Any],
    dataset: Path,
    title: str,
    swept: dict[str, dict[str, str]] | None = None,
) -> Html:
    """The header: title, dataset, tool, replay parameters, the sources; ``swept``:
    per source id the swept parameters and their values (a sweep dataset)."""
    swept = swept or {}
    replay = manifest.get("replay") or {}
    cost = replay.get("cost_model") or {}
    sources = manifest.get("sources", [])
    cost_text = ", ".join(
        f"{k}={cost[k]}" for k in ("fixed_ns", "ns_per_byte", "cpu_profile") if k in cost
    )
    facts = _facts(
        [
            ("policies replayed", ", ".join(replay.get("policies") or [])),
            ("guest run rule", replay.get("guest_run_rule")),
            ("cost model", f"{cost.get('formula', '')} ({cost_text})" if cost else None),
            ("bytes per operation", cost.get("bytes_source")),
            ("recorded policy override", replay.get("recorded_policy_override")),
            ("tool version", manifest.get("tool_version")),
            ("dataset schema", manifest.get("schema_version")),
        ]
    )
    columns = list(SOURCE_COLUMNS)
    if swept:
        columns.insert(1, Col("swept", "swept parameters"))
    table = html_table(
        _sources_frame(manifest, swept), columns, table_id="sources", caption="sources"
    )
    sub = (
        f"dataset {html_text(dataset)} · {len(sources)} source{'s' if len(sources) != 1 else ''}"
        f" · fpureplay {html_text(manifest.get('tool_version'))}"
    )
    return Html(
        '<header class="top">'
        f'<h1>{html_text(title)}</h1><p class="sub">{sub}</p>{facts}{table}'
        "<details><summary>manifest.json (embedded in this file)</summary>"
        '<pre id="manifest-text"></pre></details></header>'
    )
