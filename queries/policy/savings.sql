-- savings: Operations and cost that legacy (or another baseline) spends beyond each other policy.
--
-- What the 2017 patch (vcpu_run) and today's deferred restore save over
-- legacy on each trace, absolute and per second of trace.  The per-second
-- figures divide by the trace's span (first to last event of the source),
-- so cost_saved_us_per_s is the CPU time saved per second of wall time,
-- summed over all CPUs.  A source the baseline was not replayed for has no
-- rows.
--
-- Parameters:
--   baseline (VARCHAR, default 'legacy')  policy the others are compared with
--
-- Columns:
--   source               trace source id
--   baseline             the baseline policy
--   policy               the policy compared with it
--   baseline_ops         FPU operations under the baseline
--   ops                  FPU operations under policy
--   ops_saved            baseline_ops - ops (negative: policy does more)
--   ops_saved_pct        100 * ops_saved / baseline_ops
--   ops_saved_per_s      ops_saved per second of trace
--   baseline_cost_us     cost under the baseline, in microseconds
--   cost_us              cost under policy, in microseconds
--   cost_saved_us        baseline_cost_us - cost_us
--   cost_saved_us_per_s  cost_saved_us per second of trace
--   span_s               the trace's span in seconds (last_ts_ns - first_ts_ns)

WITH per_policy AS (
  SELECT source, policy, count(*) AS ops, sum(cost_ns) AS cost_ns
  FROM fpu_ops
  GROUP BY source, policy
),
spans AS (
  SELECT source, CAST(last_ts_ns - first_ts_ns AS DOUBLE) / 1000000000 AS span_s
  FROM sources
)
SELECT
  p.source,
  b.policy AS baseline,
  p.policy,
  b.ops AS baseline_ops,
  p.ops,
  b.ops - p.ops AS ops_saved,
  100 * CAST(b.ops - p.ops AS DOUBLE) / b.ops AS ops_saved_pct,
  (b.ops - p.ops) / NULLIF(s.span_s, 0) AS ops_saved_per_s,
  b.cost_ns / 1000 AS baseline_cost_us,
  p.cost_ns / 1000 AS cost_us,
  (b.cost_ns - p.cost_ns) / 1000 AS cost_saved_us,
  (b.cost_ns - p.cost_ns) / 1000 / NULLIF(s.span_s, 0) AS cost_saved_us_per_s,
  s.span_s
FROM per_policy AS b
JOIN per_policy AS p
  ON p.source = b.source AND p.policy <> b.policy
JOIN spans AS s
  ON s.source = b.source
WHERE b.policy = $baseline
ORDER BY
  p.source,
  CASE p.policy WHEN 'legacy' THEN 0 WHEN 'vcpu_run' THEN 1 WHEN 'deferred' THEN 2 ELSE 3 END,
  p.policy
