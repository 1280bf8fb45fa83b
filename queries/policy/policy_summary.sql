-- policy_summary: FPU saves and restores per source and policy: how many were redundant, what they cost.
--
-- The headline table.  For each trace and each replayed policy: every FPU
-- operation the policy performs for the vCPU threads, split by direction
-- and context the way the reference's counts tables and the model's
-- truth.json (`ops`) split them.  Operations inside runs that the trace
-- cut (its start, its end, lost events) are counted like the others;
-- incomplete_run_ops says how many they are, so a reader can judge how much
-- of the total rests on partial runs.
--
-- Parameters: none
--
-- Columns:
--   source              trace source id
--   policy              replayed policy: legacy, vcpu_run or deferred
--   ops                 FPU operations (saves + restores)
--   saves               XSAVEs (saves of either context)
--   restores            XRSTORs (restores of either context)
--   save_user           saves of the VMM's (QEMU's) user context
--   restore_user        restores of the user context
--   save_guest          saves of the guest context
--   restore_guest       restores of the guest context
--   redundant_ops       operations that were not needed (fpu_ops.redundant)
--   redundant_pct       100 * redundant_ops / ops
--   bytes               xstate bytes moved by all the operations
--   cost_us             cost of all the operations, in microseconds (cost model: manifest replay.cost_model)
--   redundant_cost_us   cost of the redundant operations, in microseconds
--   incomplete_run_ops  operations inside runs with complete = false

WITH grouped AS (
  -- Few groups (policy x op x context x redundant): the CASEs below then
  -- run over them, not over every operation.
  SELECT source, policy, op, context, redundant,
    count(*) AS ops, sum(bytes) AS bytes, sum(cost_ns) AS cost_ns
  FROM fpu_ops
  GROUP BY source, policy, op, context, redundant
),
cut_ops AS (
  -- Few runs are incomplete, so this join reads little beyond pid and run_idx.
  SELECT o.source, o.policy, count(*) AS ops
  FROM fpu_ops AS o
  JOIN runs AS r
    ON r.source = o.source AND r.pid = o.pid AND r.run_idx = o.run_idx
  WHERE NOT r.complete
  GROUP BY o.source, o.policy
),
per_policy AS (
  SELECT
    source,
    policy,
    CAST(sum(ops) AS BIGINT) AS ops,
    CAST(sum(CASE WHEN op = 'save' THEN ops ELSE 0 END) AS BIGINT) AS saves,
    CAST(sum(CASE WHEN op = 'restore' THEN ops ELSE 0 END) AS BIGINT) AS restores,
    CAST(sum(CASE WHEN op = 'save' AND context = 'user' THEN ops ELSE 0 END) AS BIGINT) AS save_user,
    CAST(sum(CASE WHEN op = 'restore' AND context = 'user' THEN ops ELSE 0 END) AS BIGINT) AS restore_user,
    CAST(sum(CASE WHEN op = 'save' AND context = 'guest' THEN ops ELSE 0 END) AS BIGINT) AS save_guest,
    CAST(sum(CASE WHEN op = 'restore' AND context = 'guest' THEN ops ELSE 0 END) AS BIGINT) AS restore_guest,
    CAST(sum(CASE WHEN redundant THEN ops ELSE 0 END) AS BIGINT) AS redundant_ops,
    CAST(sum(bytes) AS BIGINT) AS bytes,
    sum(cost_ns) AS cost_ns,
    coalesce(sum(CASE WHEN redundant THEN cost_ns END), 0) AS redundant_cost_ns
  FROM grouped
  GROUP BY source, policy
)
SELECT
  p.source,
  p.policy,
  p.ops,
  p.saves,
  p.restores,
  p.save_user,
  p.restore_user,
  p.save_guest,
  p.restore_guest,
  p.redundant_ops,
  100 * CAST(p.redundant_ops AS DOUBLE) / p.ops AS redundant_pct,
  p.bytes,
  p.cost_ns / 1000 AS cost_us,
  p.redundant_cost_ns / 1000 AS redundant_cost_us,
  coalesce(c.ops, 0) AS incomplete_run_ops
FROM per_policy AS p
LEFT JOIN cut_ops AS c
  ON c.source = p.source AND c.policy = p.policy
ORDER BY
  p.source,
  CASE p.policy WHEN 'legacy' THEN 0 WHEN 'vcpu_run' THEN 1 WHEN 'deferred' THEN 2 ELSE 3 END,
  p.policy
