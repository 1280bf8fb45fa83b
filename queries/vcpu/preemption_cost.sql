-- preemption_cost: FPU operations and cost per sched-out inside KVM_RUN, preempted vs blocked.
--
-- A sched-out inside KVM_RUN is a logged sched_switch whose prev is a vCPU
-- thread, between the start and the end of one of its runs.  Its kind
-- comes from prev_state: R or R+ preempted, S or D blocked, anything else
-- other.  The operations it causes are those triggered at the sched-out
-- itself (trigger sched_out, on its line), and those triggered later at
-- the switch-in and at the guest entry or emulation that reloads the guest
-- (trigger sched_in, guest_entry, emulation) in the same run, before the
-- next sched-out.  The closed forms of the model: legacy pays 5 operations
-- per sched-out (6 when the registers were lost meanwhile), vcpu_run and
-- deferred 1 (2).  Sched-outs the replay had to infer (no sched_switch
-- line) are not counted, nor the operations at them; operations after them
-- go to the logged sched-out before.
--
-- Performance: the one query of the library over 1 s at 10M events and
-- 17M operations: 6.4 s of CPU (bench/RESULTS.md), where the others take
-- under 0.7 s.  It reads the ~12M operations at sched-outs, switch-ins and
-- re-entries, joins those at a sched-out with its sched_switch line, and
-- places the later ones after their sched-out, which portable SQL (no ASOF
-- join) can only do by sorting them per thread.  Needs fpu_ops.run_idx and
-- line_no.
--
-- Parameters: none
--
-- Columns:
--   source                 trace source id
--   policy                 replayed policy
--   kind                   preempted, blocked or other (prev_state of the sched_switch)
--   sched_outs             sched-outs of this kind inside KVM_RUN
--   ops                    FPU operations they cause under the policy
--   redundant_ops          of which redundant
--   cost_us                cost of those operations, in microseconds
--   ops_per_sched_out      ops / sched_outs
--   cost_ns_per_sched_out  cost per sched-out, in nanoseconds

WITH vcpus AS (
  SELECT DISTINCT source, pid FROM runs
),
ordered_runs AS (
  SELECT source, pid, run_idx, end_ns,
    row_number() OVER (PARTITION BY source, pid ORDER BY start_ns, run_idx) AS run_seq
  FROM runs
),
switch_outs AS (
  SELECT
    e.source,
    e.prev_pid AS pid,
    e.ts_ns,
    e.line_no,
    CASE
      WHEN substr(e.prev_state, 1, 1) = 'R' THEN 'preempted'
      WHEN substr(e.prev_state, 1, 1) IN ('S', 'D') THEN 'blocked'
      ELSE 'other'
    END AS kind
  FROM events AS e
  JOIN vcpus AS v
    ON v.source = e.source AND v.pid = e.prev_pid
  WHERE e.event = 'sched_switch'
),
later_ops AS (
  SELECT source, policy, pid, run_idx, ts_ns, line_no,
    count(*) AS ops,
    count(CASE WHEN redundant THEN 1 END) AS redundant_ops,
    sum(cost_ns) AS cost_ns
  FROM fpu_ops
  WHERE run_idx IS NOT NULL AND trigger IN ('sched_in', 'guest_entry', 'emulation')
  GROUP BY source, policy, pid, run_idx, ts_ns, line_no
),
merged AS (
  SELECT source, pid, start_ns AS ts_ns, 0 AS phase, CAST(NULL AS BIGINT) AS line_no, 0 AS ord,
    CAST(NULL AS VARCHAR) AS kind, CAST(NULL AS VARCHAR) AS policy, CAST(NULL AS INTEGER) AS run_idx,
    0 AS ops, 0 AS redundant_ops, CAST(0 AS DOUBLE) AS cost_ns
  FROM runs
  UNION ALL
  SELECT source, pid, ts_ns, 1 AS phase, line_no, 1 AS ord, kind, NULL, NULL, 0, 0, 0
  FROM switch_outs
  UNION ALL
  SELECT source, pid, ts_ns, 1 AS phase, line_no, 2 AS ord, NULL, policy, run_idx, ops,
    redundant_ops, cost_ns
  FROM later_ops
),
counted AS (
  SELECT source, pid, ts_ns, line_no, ord, kind, policy, run_idx, ops, redundant_ops, cost_ns,
    sum(CASE WHEN ord = 0 THEN 1 ELSE 0 END) OVER w AS run_seq,
    sum(CASE WHEN ord = 1 THEN 1 ELSE 0 END) OVER w AS out_seq
  FROM merged
  WINDOW w AS (
    PARTITION BY source, pid ORDER BY ts_ns, phase, line_no, ord
    ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
  )
),
in_run AS (
  SELECT c.source, c.pid, c.line_no, c.out_seq, c.kind, r.run_idx
  FROM counted AS c
  JOIN ordered_runs AS r
    ON r.source = c.source AND r.pid = c.pid AND r.run_seq = c.run_seq
  WHERE c.ord = 1 AND c.ts_ns <= r.end_ns
),
caused AS (
  -- Operations at the sched-out itself carry its line.
  SELECT o.source, o.policy, s.kind, count(*) AS ops,
    count(CASE WHEN o.redundant THEN 1 END) AS redundant_ops, sum(o.cost_ns) AS cost_ns
  FROM fpu_ops AS o
  JOIN in_run AS s
    ON s.source = o.source AND s.pid = o.pid AND s.line_no = o.line_no
  WHERE o.trigger = 'sched_out' AND o.run_idx IS NOT NULL
  GROUP BY o.source, o.policy, s.kind
  UNION ALL
  -- Later ones go to the last sched-out before them, if it is in their run.
  SELECT c.source, c.policy, s.kind, sum(c.ops), sum(c.redundant_ops), sum(c.cost_ns)
  FROM counted AS c
  JOIN in_run AS s
    ON s.source = c.source AND s.pid = c.pid AND s.out_seq = c.out_seq AND s.run_idx = c.run_idx
  WHERE c.ord = 2
  GROUP BY c.source, c.policy, s.kind
),
op_kinds AS (
  SELECT source, policy, kind, CAST(sum(ops) AS BIGINT) AS ops,
    CAST(sum(redundant_ops) AS BIGINT) AS redundant_ops, sum(cost_ns) AS cost_ns
  FROM caused
  GROUP BY source, policy, kind
),
sched_outs AS (
  SELECT source, kind, count(*) AS sched_outs FROM in_run GROUP BY source, kind
),
policies AS (
  SELECT DISTINCT source, policy FROM fpu_ops
)
SELECT
  s.source,
  p.policy,
  s.kind,
  s.sched_outs,
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
ORDER BY
  s.source,
  CASE p.policy WHEN 'legacy' THEN 0 WHEN 'vcpu_run' THEN 1 WHEN 'deferred' THEN 2 ELSE 3 END,
  p.policy,
  CASE s.kind WHEN 'preempted' THEN 0 WHEN 'blocked' THEN 1 ELSE 2 END
