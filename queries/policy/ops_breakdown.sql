-- ops_breakdown: FPU operations per source and policy by direction, context and need.
--
-- The policy comparison drawn as stacked bars: for each trace and replayed
-- policy, the operations split by op (save or restore), context (the VMM's
-- user state or the guest's) and whether they were needed.  The cells sum to
-- policy_summary's ops, bytes and cost_us for the source and policy.
--
-- Parameters: none
--
-- Columns:
--   source         trace source id
--   policy         replayed policy
--   op             save (XSAVE) or restore (XRSTOR)
--   context        user (the VMM's own FPU state) or guest
--   redundant      true when the operation was not needed (fpu_ops.redundant)
--   ops            operations in this cell
--   bytes          xstate bytes they move
--   cost_us        their cost, in microseconds
--   pct_of_policy  100 * ops / all operations of the source and policy

WITH cells AS (
  SELECT
    source,
    policy,
    op,
    context,
    redundant,
    count(*) AS ops,
    CAST(sum(bytes) AS BIGINT) AS bytes,
    sum(cost_ns) AS cost_ns
  FROM fpu_ops
  GROUP BY source, policy, op, context, redundant
)
SELECT
  source,
  policy,
  op,
  context,
  redundant,
  ops,
  bytes,
  cost_ns / 1000 AS cost_us,
  100 * CAST(ops AS DOUBLE) / sum(ops) OVER (PARTITION BY source, policy) AS pct_of_policy
FROM cells
ORDER BY
  source,
  CASE policy WHEN 'legacy' THEN 0 WHEN 'vcpu_run' THEN 1 WHEN 'deferred' THEN 2 ELSE 3 END,
  policy,
  op DESC,
  context DESC,
  redundant
