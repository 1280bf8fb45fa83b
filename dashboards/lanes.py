"""Binning for timelines too long to draw mark by mark (compute: DataFrame -> DataFrame).

A figure carries at most :data:`MAX_MARKS` marks (a line segment, a marker,
a heatmap cell), so that it stays small and renders fast whatever the trace's
length.  The CPU lanes get :data:`LANE_MARKS` of them and the operations
the rest, shared by the policies (the dropdown shows one at a time, but all
are in the file).  Past those budgets a lane shows, per time bucket, the
share of the bucket each state took, and operations are counted per
bucket (``cpu_op_buckets``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import polars as pl

#: Marks per figure, all traces and dropdown alternatives included.
MAX_MARKS = 50_000
#: Of which the CPU lanes' (thread-state segments or heatmap cells).
LANE_MARKS = 20_000
#: Of which the FPU operations', all policies together.
OP_MARKS = MAX_MARKS - LANE_MARKS
#: Most buckets across a timeline: more would be finer than a screen's pixels.
MAX_BUCKETS = 2_000


def nice_width(raw_ms: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten (ms) that is at least ``raw_ms``."""
    if raw_ms <= 0 or not math.isfinite(raw_ms):
        raise ValueError(f"bucket width must be positive, not {raw_ms}")
    exp = math.floor(math.log10(raw_ms))
    for mantissa in (1, 2, 5, 10):
        width = mantissa * 10.0**exp
        # Rounding to 12 significant digits: 0.1 * 3 and the like.
        width = float(f"{width:.12g}")
        if width >= raw_ms * (1 - 1e-12):
            return width
    raise AssertionError("unreachable")


def bucket_width(span_ms: float, buckets: int) -> float:
    """A round bucket width that cuts ``span_ms`` into at most ``buckets`` buckets."""
    buckets = max(1, min(buckets, MAX_BUCKETS))
    width = nice_width(max(span_ms, 1e-6) / buckets)
    while math.floor(span_ms / width) + 1 > buckets:  # the last bucket holds the end
        width = nice_width(width * 1.0000001)
    return width


def bin_states(states: pl.DataFrame, width_ms: float) -> pl.DataFrame:
    """thread_states rows -> per ``cpu``, ``state`` and ``bucket``: ``share`` of the bucket.

    ``share`` is the time the lane's vCPU threads spent in the state during
    the bucket over the bucket's width: at most 1 for the on-CPU states (one
    thread runs at a time), the average number of threads waiting for the
    off-CPU ones.  A stretch over several buckets counts in each for its
    overlap.  Columns: cpu, state, bucket, start_ms, share.
    """
    import polars as pl

    lo = (pl.col("start_ms") / width_ms).floor().cast(pl.Int64)
    # A stretch ending exactly on a bucket bound does not reach into the next.
    hi = ((pl.col("end_ms") / width_ms).ceil().cast(pl.Int64) - 1).clip(lower_bound=lo)
    spread = (
        states.select("cpu", "state", "start_ms", "end_ms")
        .with_columns(bucket=pl.int_ranges(lo, hi + 1))
        .explode("bucket")
    )
    start = pl.col("bucket").cast(pl.Float64) * width_ms
    overlap = pl.min_horizontal(pl.col("end_ms"), start + width_ms) - pl.max_horizontal(
        pl.col("start_ms"), start
    )
    return (
        spread.with_columns(overlap=overlap.clip(lower_bound=0.0))
        .group_by("cpu", "state", "bucket")
        .agg(share=pl.col("overlap").sum() / width_ms)
        .with_columns(start_ms=pl.col("bucket").cast(pl.Float64) * width_ms)
        .select("cpu", "state", "bucket", "start_ms", "share")
        .sort("cpu", "state", "bucket")
    )


def op_rate(
    ops: pl.DataFrame, *, source: str, span_ms: float, bucket_ms: float | None
) -> tuple[pl.DataFrame, float]:
    """Operations per second of each policy over one source's trace, every bucket present.

    ``ops``: op_marks rows (``bucket_ms`` None: binned here into about 1000
    buckets) or cpu_op_buckets rows of ``bucket_ms`` (summed over the CPUs).
    Returns (frame with source, policy, start_ms, ops_per_s; bucket width).
    """
    import polars as pl

    if bucket_ms is None:
        width = bucket_width(span_ms, 1000)
        per = ops.group_by("policy", bucket=(pl.col("t_ms") / width).floor().cast(pl.Int64)).agg(
            ops=pl.len()
        )
    else:
        width = bucket_ms
        per = ops.group_by("policy", "bucket").agg(ops=pl.col("ops").sum())
    last = max(int(span_ms // width), int(per["bucket"].max()) if per.height else 0)
    policies = per.select("policy").unique()
    dense = policies.join(
        pl.DataFrame({"bucket": pl.int_range(0, last + 1, eager=True)}), how="cross"
    )
    frame = (
        dense.join(per, on=["policy", "bucket"], how="left")
        .with_columns(
            source=pl.lit(source),
            start_ms=pl.col("bucket").cast(pl.Float64) * width,
            ops_per_s=pl.col("ops").fill_null(0).cast(pl.Float64) / (width / 1000.0),
        )
        .select("source", "policy", "start_ms", "ops_per_s")
        .sort("policy", "start_ms")
    )
    return frame, width
