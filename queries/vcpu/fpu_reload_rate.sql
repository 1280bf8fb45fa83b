-- fpu_reload_rate: The kernel's fpu_reload statistic per vCPU thread, as each policy and the recording count it.
--
-- KVM increments vcpu->stat.fpu_reload in kvm_put_guest_fpu(), once per
-- put of the guest FPU, right before logging `kvm_fpu: unload`.  Every put
-- restores the VMM's user context, so a policy's count is its user
-- restores at a put: trigger ioctl_exit (the end of KVM_RUN, and
-- KVM_GET_MP_STATE's put), sched_out (legacy's preempt-notifier put at
-- every sched-out of a loaded vCPU) and init_reset.  recorded_fpu_reload
-- counts the thread's `kvm_fpu: unload` lines, which is what the recording
-- kernel's counter advanced by (less any lost events), so the row of the
-- recorded policy should match it.  Rates divide by the trace's span, as
-- kvm_stat divides by its interval; to compare with debugfs
-- (/sys/kernel/debug/kvm/*/fpu_reload), sum the pids of one VM and compare
-- with the counter's increase over the recording.
--
-- Parameters: none
--
-- Columns:
--   source               trace source id
--   policy               replayed policy
--   pid                  the vCPU thread
--   comm                 its task name on its last kvm_fpu, kvm_userspace_exit or ioctl line
--   fpu_reload           puts of the guest FPU under the policy
--   fpu_reload_per_s     fpu_reload per second of trace
--   recorded_fpu_reload  kvm_fpu unload lines of the thread in the trace
--   recorded_per_s       recorded_fpu_reload per second of trace
--   span_s               the trace's span in seconds (last_ts_ns - first_ts_ns)

WITH replayed AS (
  SELECT
    source,
    policy,
    pid,
    count(
      CASE
        WHEN op = 'restore' AND context = 'user'
          AND trigger IN ('ioctl_exit', 'sched_out', 'init_reset') THEN 1
      END
    ) AS fpu_reload
  FROM fpu_ops
  GROUP BY source, policy, pid
),
recorded AS (
  SELECT source, pid, count(*) AS unloads
  FROM events
  WHERE event = 'kvm_fpu' AND NOT fpu_load
  GROUP BY source, pid
),
names AS (
  -- Lines a vCPU thread logs itself, about one per KVM_RUN: far fewer to
  -- scan than all of its events.
  SELECT source, pid, max_by(comm, line_no) AS comm
  FROM events
  WHERE event IN ('kvm_fpu', 'kvm_userspace_exit', 'sys_enter_ioctl') AND comm <> '<...>'
  GROUP BY source, pid
),
spans AS (
  SELECT source, CAST(last_ts_ns - first_ts_ns AS DOUBLE) / 1000000000 AS span_s
  FROM sources
)
SELECT
  r.source,
  r.policy,
  r.pid,
  n.comm,
  r.fpu_reload,
  r.fpu_reload / NULLIF(s.span_s, 0) AS fpu_reload_per_s,
  coalesce(k.unloads, 0) AS recorded_fpu_reload,
  coalesce(k.unloads, 0) / NULLIF(s.span_s, 0) AS recorded_per_s,
  s.span_s
FROM replayed AS r
JOIN spans AS s
  ON s.source = r.source
LEFT JOIN recorded AS k
  ON k.source = r.source AND k.pid = r.pid
LEFT JOIN names AS n
  ON n.source = r.source AND n.pid = r.pid
ORDER BY
  r.source,
  CASE r.policy WHEN 'legacy' THEN 0 WHEN 'vcpu_run' THEN 1 WHEN 'deferred' THEN 2 ELSE 3 END,
  r.policy,
  r.pid
