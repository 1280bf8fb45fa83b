-- cpu_op_buckets: FPU operations per policy, CPU and time bucket, for timelines too dense to draw one by one.
--
-- As the timeline query, with the CPU kept apart: the dashboard draws one
-- mark per bucket of a CPU lane when a source has more operations than it
-- draws one by one (op_marks).  Buckets are bucket_ms wide, counted from
-- the source's first event; only buckets with operations have a row.
--
-- Parameters:
--   bucket_ms (DOUBLE > 0, default 10)  width of a bucket, in milliseconds
--   source (VARCHAR, default '')        only this source ('' for every source)
--
-- Columns:
--   source         trace source id
--   policy         replayed policy
--   cpu            CPU the operations ran on
--   bucket         bucket number, 0 for the one holding the source's first event
--   start_ms       bucket start in milliseconds since the source's first event
--   ops            FPU operations in the bucket
--   saves          XSAVEs in the bucket
--   redundant_ops  operations that were not needed
--   cost_us        cost of the operations, in microseconds

WITH bucketed AS (
  SELECT
    o.source,
    o.policy,
    o.cpu,
    (o.ts_ns - s.first_ts_ns) // CAST(round($bucket_ms * 1000000) AS BIGINT) AS bucket,
    o.op,
    o.redundant,
    o.cost_ns
  FROM fpu_ops AS o
  JOIN sources AS s
    ON s.source = o.source
  WHERE $source = '' OR o.source = $source
)
SELECT
  source,
  policy,
  cpu,
  bucket,
  bucket * $bucket_ms AS start_ms,
  count(*) AS ops,
  count(CASE WHEN op = 'save' THEN 1 END) AS saves,
  count(CASE WHEN redundant THEN 1 END) AS redundant_ops,
  sum(cost_ns) / 1000 AS cost_us
FROM bucketed
GROUP BY source, policy, cpu, bucket
ORDER BY
  source,
  CASE policy WHEN 'legacy' THEN 0 WHEN 'vcpu_run' THEN 1 WHEN 'deferred' THEN 2 ELSE 3 END,
  policy,
  cpu,
  bucket
