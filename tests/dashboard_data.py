"""Datasets and dashboards shared by the dashboard tests, built once per session.

* ``demo``: the bundled example trace (examples/mixed-small.tracefs.txt.zst,
  six vCPU threads on 2 CPUs), ingested and replayed under the three
  policies: the dashboard the docs show.
* ``hostile``: the same trace with task names and the file name an attacker
  could choose (:data:`HOSTILE`), one line that does not parse and a
  lost-events marker, so that every place a name appears and the data-quality
  section have something to show.
* ``sweep``: four simulated points of the built-in model (overcommit 1, 2 x
  xstate sse, avx512; 20 ms each), replayed.
"""

from __future__ import annotations

from pathlib import Path

import zstandard

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "mixed-small.tracefs.txt.zst"

#: Task names that are markup, a script end, template syntax and entities.
HOSTILE_VCPU = "<img src=x onerror=alert(1)>"  # replaces `CPU 1/KVM` (a vCPU thread)
HOSTILE_TEMPLATE = "\"'&amp;%{y}<b>x</b>"  # replaces `CPU 2/KVM`
HOSTILE_HOG = "</script><script>alert(2)</script>"  # replaces `fpu-hog` (not a vCPU)
#: The trace's file name (becomes the manifest's path; the source id is made path-safe).
HOSTILE_FILE = "<svg onload=alert(3)>.tracefs.txt"
HOSTILE = (HOSTILE_VCPU, HOSTILE_TEMPLATE)

_BUILT: dict[str, Path] = {}


def example_text() -> str:
    """The bundled example trace as text."""
    return zstandard.ZstdDecompressor().decompress(EXAMPLE.read_bytes()).decode()


def hostile_text() -> str:
    """The example with hostile names, a rejected line and a lost-events marker."""
    text = example_text()
    text = text.replace("CPU 1/KVM", HOSTILE_VCPU).replace("CPU 2/KVM", HOSTILE_TEMPLATE)
    text = text.replace("fpu-hog", HOSTILE_HOG)
    lines = text.splitlines()
    # After the header: a line that is not an event, and lost events on CPU 1.
    lines.insert(400, "<iframe src=javascript:alert(5)> is not an event line")
    lines.insert(800, "CPU:1 [LOST 7 EVENTS]")
    return "\n".join(lines) + "\n"


def _run(trace: Path, dataset: Path) -> Path:
    from ingest import ingest_traces
    from pipeline.orchestrate import replay_dataset

    ingest_traces([str(trace)], dataset, force=True)
    replay_dataset(dataset)
    return dataset


def dataset(kind: str, base: Path) -> Path:
    """The ``kind`` dataset (demo, hostile, sweep, ingested), built under ``base`` once."""
    if kind in _BUILT:
        return _BUILT[kind]
    root = base / kind
    root.mkdir(parents=True, exist_ok=True)
    if kind == "demo":
        out = _run(EXAMPLE, root / "ds")
    elif kind == "hostile":
        trace = root / HOSTILE_FILE
        trace.write_text(hostile_text())
        out = _run(trace, root / "ds")
    elif kind == "ingested":  # not replayed
        from ingest import ingest_traces

        out = root / "ds"
        ingest_traces([str(EXAMPLE)], out, force=True)
    elif kind == "sweep":
        out = _sweep(root / "ds")
    else:
        raise ValueError(kind)
    _BUILT[kind] = out
    return out


def _sweep(out: Path) -> Path:
    from pipeline.model.api import generate
    from pipeline.orchestrate import replay_dataset
    from pipeline.sweep import grid_points

    grid = {"overcommit": ["1", "2"], "xstate": ["sse", "avx512"]}
    for point in grid_points("mixed", grid, ("cpus=2", "vcpus_per_vm=1")):
        generate(point.preset, seed=1, duration_ms=20, values=point.values()).write(out, "dataset")
    replay_dataset(out)
    return out


def dashboard(kind: str, base: Path) -> Path:
    """The ``kind`` dataset's dashboard HTML, written once."""
    key = f"{kind}.html"
    if key not in _BUILT:
        from dashboards.build import write_dashboard

        html = base / f"{kind}.html"
        write_dashboard(dataset(kind, base), html)
        _BUILT[key] = html
    return _BUILT[key]
