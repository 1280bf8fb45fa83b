-- ops_per_run: Distribution of FPU operations per KVM_RUN, per policy.
--
-- For each source and replayed policy, how many KVM_RUN calls performed
-- 0, 1, 2, ... FPU operations (one bucket per value).  An operation belongs
-- to a run when the replay gave it that run's run_idx; operations outside
-- any run (context switches of a vCPU thread between runs) are not counted.
-- Every run of the source counts under every policy, those without an
-- operation in bucket 0.  Runs the trace cut are left out by default, as in
-- run_histogram: their operations are only part of the run's.
--
-- Parameters:
--   include_incomplete (BOOLEAN, default false)  also count runs with complete = false
--
-- Columns:
--   source   trace source id
--   policy   replayed policy
--   ops      FPU operations in one run (the bucket)
--   runs     runs with exactly that many operations
--   pct      100 * runs / all runs counted for the source and policy
--   cum_pct  pct of this bucket and all the lower ones

WITH chosen AS (
  SELECT source, pid, run_idx
  FROM runs
  WHERE complete OR $include_incomplete
),
policies AS (
  SELECT DISTINCT source, policy FROM fpu_ops
),
per_run AS (
  SELECT source, policy, pid, run_idx, count(*) AS ops
  FROM fpu_ops
  WHERE run_idx IS NOT NULL
  GROUP BY source, policy, pid, run_idx
),
counted AS (
  SELECT p.source, p.policy, coalesce(o.ops, 0) AS ops, count(*) AS runs
  FROM policies AS p
  JOIN chosen AS r
    ON r.source = p.source
  LEFT JOIN per_run AS o
    ON o.source = p.source AND o.policy = p.policy AND o.pid = r.pid AND o.run_idx = r.run_idx
  GROUP BY p.source, p.policy, coalesce(o.ops, 0)
)
SELECT
  source,
  policy,
  ops,
  runs,
  100 * CAST(runs AS DOUBLE) / sum(runs) OVER (PARTITION BY source, policy) AS pct,
  100 * CAST(
    sum(runs) OVER (
      PARTITION BY source, policy ORDER BY ops ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
    ) AS DOUBLE
  ) / sum(runs) OVER (PARTITION BY source, policy) AS cum_pct
FROM counted
ORDER BY
  source,
  CASE policy WHEN 'legacy' THEN 0 WHEN 'vcpu_run' THEN 1 WHEN 'deferred' THEN 2 ELSE 3 END,
  policy,
  ops
