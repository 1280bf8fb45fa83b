-- redundant_by_trigger: Which kernel path wastes most: redundant operations per policy by trigger and reason.
--
-- One row per (trigger, op, context, reason) that has redundant operations,
-- most costly first within each source and policy.  Under legacy the top
-- rows are the preempt notifier's put at sched_out (QEMU's state restored
-- only to be saved at the context switch) and the re-entry's save of that
-- same user state; vcpu_run and deferred should have few or none.
--
-- Parameters: none
--
-- Columns:
--   source             trace source id
--   policy             replayed policy
--   trigger            what caused the operations (fpu_ops.trigger: sched_out, guest_entry, ...)
--   op                 save or restore
--   context            user or guest
--   reason             why they are redundant, in the replay's words
--   redundant_ops      redundant operations of this path and reason
--   path_ops           all operations of this trigger, op and context, redundant or not
--   pct_of_path        100 * redundant_ops / path_ops
--   pct_of_redundant   100 * redundant_ops / all redundant operations of the source and policy
--   redundant_cost_us  cost of these redundant operations, in microseconds

WITH paths AS (
  SELECT source, policy, trigger, op, context, count(*) AS path_ops
  FROM fpu_ops
  GROUP BY source, policy, trigger, op, context
),
wasted AS (
  SELECT source, policy, trigger, op, context, reason,
    count(*) AS redundant_ops,
    sum(cost_ns) AS cost_ns
  FROM fpu_ops
  WHERE redundant
  GROUP BY source, policy, trigger, op, context, reason
),
totals AS (
  SELECT source, policy, CAST(sum(redundant_ops) AS BIGINT) AS all_redundant
  FROM wasted
  GROUP BY source, policy
)
SELECT
  w.source,
  w.policy,
  w.trigger,
  w.op,
  w.context,
  w.reason,
  w.redundant_ops,
  p.path_ops,
  100 * CAST(w.redundant_ops AS DOUBLE) / p.path_ops AS pct_of_path,
  100 * CAST(w.redundant_ops AS DOUBLE) / t.all_redundant AS pct_of_redundant,
  w.cost_ns / 1000 AS redundant_cost_us
FROM wasted AS w
JOIN paths AS p
  ON p.source = w.source AND p.policy = w.policy AND p.trigger = w.trigger
  AND p.op = w.op AND p.context = w.context
JOIN totals AS t
  ON t.source = w.source AND t.policy = w.policy
ORDER BY
  w.source,
  CASE w.policy WHEN 'legacy' THEN 0 WHEN 'vcpu_run' THEN 1 WHEN 'deferred' THEN 2 ELSE 3 END,
  w.policy,
  redundant_cost_us DESC,
  w.redundant_ops DESC,
  w.trigger,
  w.op,
  w.context,
  w.reason
