-- timeline: FPU operations and their cost per policy per time bucket.
--
-- Buckets are bucket_ms wide (rounded to whole nanoseconds, so that bucket
-- bounds are exact integers) and counted from the source's first event, so
-- the buckets of different policies line up.  Only buckets with operations
-- have a row (a dense series needs a table function, which would tie the
-- query to one engine): a gap in `bucket` is a quiet bucket.
--
-- Parameters:
--   bucket_ms (DOUBLE > 0, default 10)  width of a bucket, in milliseconds
--
-- Columns:
--   source         trace source id
--   policy         replayed policy
--   bucket         bucket number, 0 for the one holding the source's first event
--   start_ms       bucket start in milliseconds since the source's first event
--   ops            FPU operations in the bucket
--   saves          XSAVEs in the bucket
--   restores       XRSTORs in the bucket
--   redundant_ops  redundant operations
--   cost_us        cost of the operations, in microseconds
--   cpu_pct        cost as a share of one CPU's time over the bucket: 100 * cost / bucket width

WITH bucketed AS (
  SELECT
    o.source,
    o.policy,
    (o.ts_ns - s.first_ts_ns) // CAST(round($bucket_ms * 1000000) AS BIGINT) AS bucket,
    o.op,
    o.redundant,
    o.cost_ns
  FROM fpu_ops AS o
  JOIN sources AS s
    ON s.source = o.source
)
SELECT
  source,
  policy,
  bucket,
  bucket * $bucket_ms AS start_ms,
  count(*) AS ops,
  count(CASE WHEN op = 'save' THEN 1 END) AS saves,
  count(CASE WHEN op = 'restore' THEN 1 END) AS restores,
  count(CASE WHEN redundant THEN 1 END) AS redundant_ops,
  sum(cost_ns) / 1000 AS cost_us,
  100 * sum(cost_ns) / ($bucket_ms * 1000000) AS cpu_pct
FROM bucketed
GROUP BY source, policy, bucket
ORDER BY
  source,
  CASE policy WHEN 'legacy' THEN 0 WHEN 'vcpu_run' THEN 1 WHEN 'deferred' THEN 2 ELSE 3 END,
  policy,
  bucket
