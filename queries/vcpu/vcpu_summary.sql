-- vcpu_summary: Per vCPU thread and policy: KVM_RUN calls, sched-outs, FPU operations and their cost.
--
-- One row per vCPU thread (a pid with runs or FPU operations) and replayed
-- policy.  kvm_runs, preemptions, blocks and migrations describe the trace
-- and repeat across the policies; ops, redundant_ops and cost_us are the
-- policy's.  comm is the thread's task name on the last line it logged
-- about KVM_RUN (QEMU names vCPU threads `CPU n/KVM`).
--
-- Parameters: none
--
-- Columns:
--   source           trace source id
--   policy           replayed policy
--   pid              the vCPU thread
--   comm             its task name on its last kvm_fpu, kvm_userspace_exit or ioctl line
--   kvm_runs         KVM_RUN intervals (runs rows)
--   incomplete_runs  of which cut by the trace's start, end or lost events
--   preemptions      sched-outs in R state inside KVM_RUN
--   blocks           sched-outs in S or D state inside KVM_RUN
--   migrations       switch-ins on another CPU inside KVM_RUN
--   ops              FPU operations the policy performs for the thread
--   redundant_ops    of which redundant
--   redundant_pct    100 * redundant_ops / ops
--   cost_us          cost of the operations, in microseconds

WITH run_stats AS (
  SELECT
    source,
    pid,
    count(*) AS kvm_runs,
    count(CASE WHEN NOT complete THEN 1 END) AS incomplete_runs,
    CAST(sum(preemptions) AS BIGINT) AS preemptions,
    CAST(sum(blocks) AS BIGINT) AS blocks,
    CAST(sum(migrations) AS BIGINT) AS migrations
  FROM runs
  GROUP BY source, pid
),
op_stats AS (
  SELECT
    source,
    policy,
    pid,
    count(*) AS ops,
    count(CASE WHEN redundant THEN 1 END) AS redundant_ops,
    sum(cost_ns) AS cost_ns
  FROM fpu_ops
  GROUP BY source, policy, pid
),
policies AS (
  SELECT DISTINCT source, policy FROM op_stats
),
threads AS (
  -- Every vCPU thread under every policy of its source, even one that
  -- performed no operation under some policy.
  SELECT p.source, p.policy, r.pid
  FROM policies AS p
  JOIN run_stats AS r
    ON r.source = p.source
  UNION
  SELECT source, policy, pid FROM op_stats
),
names AS (
  -- Lines a vCPU thread logs itself, about one per KVM_RUN: far fewer to
  -- scan than all of its events.
  SELECT source, pid, max_by(comm, line_no) AS comm
  FROM events
  WHERE event IN ('kvm_fpu', 'kvm_userspace_exit', 'sys_enter_ioctl') AND comm <> '<...>'
  GROUP BY source, pid
)
SELECT
  t.source,
  t.policy,
  t.pid,
  n.comm,
  coalesce(r.kvm_runs, 0) AS kvm_runs,
  coalesce(r.incomplete_runs, 0) AS incomplete_runs,
  coalesce(r.preemptions, 0) AS preemptions,
  coalesce(r.blocks, 0) AS blocks,
  coalesce(r.migrations, 0) AS migrations,
  coalesce(o.ops, 0) AS ops,
  coalesce(o.redundant_ops, 0) AS redundant_ops,
  100 * CAST(o.redundant_ops AS DOUBLE) / o.ops AS redundant_pct,
  coalesce(o.cost_ns, 0) / 1000 AS cost_us
FROM threads AS t
LEFT JOIN run_stats AS r
  ON r.source = t.source AND r.pid = t.pid
LEFT JOIN op_stats AS o
  ON o.source = t.source AND o.policy = t.policy AND o.pid = t.pid
LEFT JOIN names AS n
  ON n.source = t.source AND n.pid = t.pid
ORDER BY
  t.source,
  CASE t.policy WHEN 'legacy' THEN 0 WHEN 'vcpu_run' THEN 1 WHEN 'deferred' THEN 2 ELSE 3 END,
  t.policy,
  t.pid
