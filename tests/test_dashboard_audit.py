"""The dashboard's migration-safety section (issue 10): present exactly when there are calls."""

from __future__ import annotations

from dashboards.build import write_dashboard
from ingest import ingest_traces
from pipeline.orchestrate import replay_dataset
from tests.conftest import EXAMPLES, REAL, needs_shared


@needs_shared
def test_xsave_capture_gets_a_migration_section(tmp_path):
    ingest_traces([str(REAL / "xsave.tracefs.txt")], tmp_path / "ds")
    replay_dataset(tmp_path / "ds")
    write_dashboard(tmp_path / "ds", tmp_path / "d.html")
    page = (tmp_path / "d.html").read_text()
    assert 'id="fpu-calls"' in page and 'id="fpu-waits"' in page
    # 366 KVM_GET_XSAVE calls in this capture's ground truth (300 by the vCPU
    # threads, 66 by live_migration), none completing inside KVM_RUN.
    assert "366 FPU-state ioctls" in page
    assert " 0 completed while the vCPU was inside KVM_RUN" in page


def test_a_trace_without_fpu_state_ioctls_has_no_migration_section(tmp_path):
    ingest_traces([str(EXAMPLES / "mixed-small.tracefs.txt.zst")], tmp_path / "ds")
    replay_dataset(tmp_path / "ds")
    write_dashboard(tmp_path / "ds", tmp_path / "d.html")
    page = (tmp_path / "d.html").read_text()
    assert 'id="fpu-calls"' not in page and "Migration safety" not in page
