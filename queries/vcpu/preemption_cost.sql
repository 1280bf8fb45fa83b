-- preemption_cost: FPU operations and cost per sched-out inside KVM_RUN, preempted vs blocked.
--
-- A sched-out inside KVM_RUN is a context switch away from a vCPU thread
-- between the start and the end of one of its runs, as the replay counts
-- them in runs: preemptions (prev_state R or R+), blocks (S or D) and
-- other_sched_outs (any other state, a thread exiting included, and the
-- switches the replay had to infer because no sched_switch line shows
-- them, whose state is unknown).  The operations a sched-out causes are
-- those triggered at it (trigger sched_out) and those triggered later at
-- the switch-in and at the guest entry or emulation that reloads the guest
-- (trigger sched_in, guest_entry, emulation) in the same run, before the
-- next sched-out: the fpu_ops rows of a run whose sched_out_state (the
-- kind of the thread's latest sched-out since the KVM_RUN entry) is set.
-- The swaps at the start and end of KVM_RUN belong to no sched-out.  The
-- closed forms of the model: legacy pays 5 operations per sched-out (6
-- when the registers were lost meanwhile), vcpu_run and deferred 1 (2).
--
-- Inferred sched-outs count as other, with the operations they cause.
-- Until fpu_ops named each operation's sched-out, this query placed
-- operations by sorting and counted logged sched-outs only: it left an
-- inferred sched-out and the operations at it out, and charged those
-- after it (at the switch-in and the re-entry) to the logged sched-out
-- before it in the run, which had not caused them.  Otherwise the rows
-- are the same (on the 15 real captures and the benchmark, to the last
-- operation).
--
-- Needs fpu_ops.sched_out_state: in a dataset replayed before the replay
-- wrote it the column is null, and the query fails with a conversion
-- error whose text says to replay the dataset again.  It reads fpu_ops
-- once, grouped by policy, sched_out_state, trigger and redundant (a few
-- dozen groups per source), and sums runs' counters.
--
-- Parameters: none
--
-- Columns:
--   source                 trace source id
--   policy                 replayed policy
--   kind                   preempted, blocked or other (prev_state of the sched_switch;
--                          other includes the inferred sched-outs)
--   sched_outs             sched-outs of this kind inside KVM_RUN
--   ops                    FPU operations they cause under the policy
--   redundant_ops          of which redundant
--   cost_us                cost of those operations, in microseconds
--   ops_per_sched_out      ops / sched_outs
--   cost_ns_per_sched_out  cost per sched-out, in nanoseconds

WITH run_outs AS (
  SELECT source,
    CAST(sum(preemptions) AS BIGINT) AS preempted,
    CAST(sum(blocks) AS BIGINT) AS blocked,
    CAST(sum(other_sched_outs) AS BIGINT) AS other
  FROM runs
  GROUP BY source
),
sched_outs AS (
  SELECT source, 'preempted' AS kind, preempted AS sched_outs FROM run_outs
  UNION ALL
  SELECT source, 'blocked' AS kind, blocked AS sched_outs FROM run_outs
  UNION ALL
  SELECT source, 'other' AS kind, other AS sched_outs FROM run_outs
),
-- Every operation, grouped by the few (state, trigger, redundant, in a run)
-- values first and folded after: cheaper than a CASE on every row.
cells AS (
  SELECT source, policy, sched_out_state, trigger, redundant, run_idx IS NOT NULL AS in_run,
    count(*) AS ops, sum(cost_ns) AS cost_ns
  FROM fpu_ops
  GROUP BY source, policy, sched_out_state, trigger, redundant, run_idx IS NOT NULL
),
-- An operation at a sched-out always names it; one that does not comes from
-- a dataset replayed before fpu_ops had sched_out_line and sched_out_state.
stale AS (
  SELECT DISTINCT source FROM cells WHERE trigger = 'sched_out' AND sched_out_state IS NULL
),
op_kinds AS (
  SELECT source, policy,
    CASE sched_out_state
      WHEN 'preempted' THEN 'preempted'
      WHEN 'blocked' THEN 'blocked'
      ELSE 'other'
    END AS kind,
    CAST(sum(ops) AS BIGINT) AS ops,
    CAST(sum(CASE WHEN redundant THEN ops ELSE 0 END) AS BIGINT) AS redundant_ops,
    sum(cost_ns) AS cost_ns
  FROM cells
  WHERE in_run AND sched_out_state IS NOT NULL
    AND trigger IN ('sched_out', 'sched_in', 'guest_entry', 'emulation')
  GROUP BY source, policy,
    CASE sched_out_state
      WHEN 'preempted' THEN 'preempted'
      WHEN 'blocked' THEN 'blocked'
      ELSE 'other'
    END
),
policies AS (
  SELECT DISTINCT source, policy FROM cells
)
SELECT
  s.source,
  p.policy,
  s.kind,
  CASE
    WHEN t.source IS NULL THEN s.sched_outs
    ELSE CAST(
      'fpu_ops has no sched_out_state (an older replay wrote it): run fpureplay replay again' AS BIGINT
    )
  END AS sched_outs,
  coalesce(o.ops, 0) AS ops,
  coalesce(o.redundant_ops, 0) AS redundant_ops,
  coalesce(o.cost_ns, 0) / 1000 AS cost_us,
  CAST(coalesce(o.ops, 0) AS DOUBLE) / s.sched_outs AS ops_per_sched_out,
  coalesce(o.cost_ns, 0) / s.sched_outs AS cost_ns_per_sched_out
FROM sched_outs AS s
JOIN policies AS p
  ON p.source = s.source
LEFT JOIN op_kinds AS o
  ON o.source = s.source AND o.policy = p.policy AND o.kind = s.kind
LEFT JOIN stale AS t
  ON t.source = s.source
WHERE s.sched_outs > 0
ORDER BY
  s.source,
  CASE p.policy WHEN 'legacy' THEN 0 WHEN 'vcpu_run' THEN 1 WHEN 'deferred' THEN 2 ELSE 3 END,
  p.policy,
  CASE s.kind WHEN 'preempted' THEN 0 WHEN 'blocked' THEN 1 ELSE 2 END
