-- run_histogram: Distributions of KVM_RUN length (log2 microsecond buckets) and of sched-outs per run.
--
-- Two histograms per source, told apart by `measure`: `run_us`, the length
-- of each KVM_RUN in power-of-two microsecond buckets ([0, 1), [1, 2),
-- [2, 4), ... as bpftrace's hist() draws them), and `sched_outs`, the
-- number of sched-outs inside each run (preemptions + blocks + other
-- states), one bucket per value.  Runs the trace cut are left out by
-- default: their length is only a lower bound.
--
-- Parameters:
--   include_incomplete (BOOLEAN, default false)  also count runs with complete = false
--
-- Columns:
--   source     trace source id
--   measure    run_us (run length) or sched_outs (sched-outs per run)
--   bucket_lo  inclusive lower bound of the bucket (microseconds or sched-outs)
--   bucket_hi  exclusive upper bound of the bucket
--   runs       runs in the bucket
--   pct        100 * runs / all runs of the source in this histogram
--   cum_pct    pct of this bucket and all the lower ones

WITH chosen AS (
  SELECT
    source,
    -- Whole microseconds first: bucket bounds are integers, so flooring
    -- loses nothing and log2 of an exact power of two is exact.
    (end_ns - start_ns) // 1000 AS us,
    preemptions + blocks + coalesce(other_sched_outs, 0) AS sched_outs
  FROM runs
  WHERE complete OR $include_incomplete
),
bucketed AS (
  SELECT
    source,
    'run_us' AS measure,
    CASE WHEN us < 1 THEN 0 ELSE CAST(power(2, floor(log2(us))) AS BIGINT) END AS bucket_lo,
    CASE WHEN us < 1 THEN 1 ELSE 2 * CAST(power(2, floor(log2(us))) AS BIGINT) END AS bucket_hi
  FROM chosen
  UNION ALL
  SELECT source, 'sched_outs' AS measure, sched_outs AS bucket_lo, sched_outs + 1 AS bucket_hi
  FROM chosen
),
counted AS (
  SELECT source, measure, bucket_lo, bucket_hi, count(*) AS runs
  FROM bucketed
  GROUP BY source, measure, bucket_lo, bucket_hi
)
SELECT
  source,
  measure,
  bucket_lo,
  bucket_hi,
  runs,
  100 * CAST(runs AS DOUBLE) / sum(runs) OVER (PARTITION BY source, measure) AS pct,
  100 * CAST(
    sum(runs) OVER (
      PARTITION BY source, measure ORDER BY bucket_lo ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
    ) AS DOUBLE
  ) / sum(runs) OVER (PARTITION BY source, measure) AS cum_pct
FROM counted
ORDER BY source, measure, bucket_lo
