-- fleet_summary: Per host and policy: ops and cost per traced second, fleet totals, hosts ranked by saving.
--
-- The fleet's headline table.  One row per host and policy (scope 'host'),
-- then one per policy for the whole dataset (scope 'fleet', host NULL).
-- Rates divide by the host's traced time: the sum of its traces' spans
-- (first to last event of each source), so a host traced for longer does
-- not look busier.  The saving is the baseline's cost minus the policy's,
-- per traced second: CPU time saved per second of wall time, summed over
-- the host's CPUs.  savings_rank orders the hosts by that saving within
-- each policy (1 = saves most); host rows come in the order of their
-- vcpu_run rank, the 2017 patch's.  A host (or the fleet) the baseline
-- was not replayed for has no rows.  Run with `--host` to see a few hosts
-- only; the fleet rows then total those hosts.
--
-- Parameters:
--   baseline (VARCHAR, default 'legacy')  policy the savings are measured against
--
-- Columns:
--   scope                'host' for a host's rows, 'fleet' for the totals
--   host                 host name (NULL on fleet rows)
--   policy               replayed policy: legacy, vcpu_run or deferred
--   sources              traces of the host (of the fleet)
--   traced_s             seconds of trace: the sum of the traces' spans
--   ops                  FPU operations (saves + restores)
--   redundant_ops        operations that were not needed
--   redundant_pct        100 * redundant_ops / ops
--   cost_us              cost of all the operations, in microseconds
--   ops_per_s            ops per traced second
--   cost_us_per_s        cost_us per traced second
--   ops_saved_per_s      (baseline ops - ops) per traced second (negative: more than the baseline)
--   cost_saved_us_per_s  (baseline cost - cost) per traced second, in microseconds
--   savings_rank         rank of the host by cost_saved_us_per_s within the policy (NULL on fleet rows and for the baseline)

WITH spans AS (
  SELECT host, CAST(last_ts_ns - first_ts_ns AS DOUBLE) / 1000000000 AS span_s
  FROM sources
),
host_spans AS (
  SELECT host, count(*) AS sources, sum(span_s) AS traced_s
  FROM spans
  GROUP BY host
),
per_host AS (
  SELECT host, policy, count(*) AS ops, count(*) FILTER (WHERE redundant) AS redundant_ops,
         sum(cost_ns) AS cost_ns
  FROM fpu_ops
  GROUP BY host, policy
),
all_rows AS (
  SELECT 'host' AS scope, p.host, p.policy, s.sources, s.traced_s, p.ops, p.redundant_ops,
         p.cost_ns
  FROM per_host AS p
  JOIN host_spans AS s ON s.host = p.host
  UNION ALL
  SELECT 'fleet', NULL, policy, (SELECT count(*) FROM spans), (SELECT sum(span_s) FROM spans),
         CAST(sum(ops) AS BIGINT), CAST(sum(redundant_ops) AS BIGINT), sum(cost_ns)
  FROM per_host
  GROUP BY policy
),
rated AS (
  SELECT
    r.scope, r.host, r.policy, r.sources, r.traced_s, r.ops, r.redundant_ops, r.cost_ns,
    (b.ops - r.ops) / NULLIF(r.traced_s, 0) AS ops_saved_per_s,
    (b.cost_ns - r.cost_ns) / 1000 / NULLIF(r.traced_s, 0) AS cost_saved_us_per_s
  FROM all_rows AS r
  JOIN all_rows AS b
    ON b.scope = r.scope AND b.host IS NOT DISTINCT FROM r.host AND b.policy = $baseline
),
ranked AS (
  SELECT
    scope, host, policy, sources, traced_s, ops, redundant_ops, cost_ns, ops_saved_per_s,
    cost_saved_us_per_s,
    CASE WHEN scope = 'host' AND policy <> $baseline THEN
      rank() OVER (PARTITION BY scope, policy ORDER BY cost_saved_us_per_s DESC NULLS LAST)
    END AS savings_rank
  FROM rated
),
host_order AS (
  SELECT host, min(CASE WHEN policy = 'vcpu_run' THEN savings_rank END) AS vcpu_run_rank
  FROM ranked
  GROUP BY host
)
SELECT
  r.scope,
  r.host,
  r.policy,
  r.sources,
  r.traced_s,
  r.ops,
  r.redundant_ops,
  100 * CAST(r.redundant_ops AS DOUBLE) / NULLIF(r.ops, 0) AS redundant_pct,
  r.cost_ns / 1000 AS cost_us,
  r.ops / NULLIF(r.traced_s, 0) AS ops_per_s,
  r.cost_ns / 1000 / NULLIF(r.traced_s, 0) AS cost_us_per_s,
  r.ops_saved_per_s,
  r.cost_saved_us_per_s,
  r.savings_rank
FROM ranked AS r
LEFT JOIN host_order AS o ON o.host IS NOT DISTINCT FROM r.host
ORDER BY
  r.scope = 'host',
  o.vcpu_run_rank NULLS LAST,
  r.host,
  CASE r.policy WHEN 'legacy' THEN 0 WHEN 'vcpu_run' THEN 1 WHEN 'deferred' THEN 2 ELSE 3 END,
  r.policy
