"""The bundled example trace (a real 6.18 capture) against its ground truth."""

from __future__ import annotations

from ingest import parse_file
from tests.conftest import EXAMPLES
from tests.groundtruth import check


def test_bundled_example_matches_its_ground_truth():
    events = parse_file(str(EXAMPLES / "mixed-small.tracefs.txt.zst"))
    truth = check(events, EXAMPLES / "mixed-small.tracefs.groundtruth.json")
    assert events.height == truth["event_lines"] == 1910
