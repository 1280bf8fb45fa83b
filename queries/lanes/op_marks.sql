-- op_marks: Every FPU operation with its CPU and time since the trace began, for drawing it on a timeline.
--
-- The operations the dashboard overlays on the CPU lanes when there are few
-- enough to draw (it bins them with cpu_op_buckets otherwise): each with
-- its CPU, its time since the source's first event, what it was and why.
-- Without filters this is the whole fpu_ops table: pass a source and a
-- policy on large datasets.
--
-- Parameters:
--   source (VARCHAR, default '')  only this source ('' for every source)
--   policy (VARCHAR, default '')  only this policy ('' for every policy)
--
-- Columns:
--   source     trace source id
--   policy     replayed policy
--   pid        the vCPU thread
--   cpu        CPU the operation runs on
--   ts_ns      when (trace clock, ns)
--   t_ms       milliseconds since the source's first event
--   op         save or restore
--   context    user or guest
--   trigger    kernel path that performs it (ioctl_entry, sched_out, guest_entry, ...)
--   redundant  true when it was not needed
--   reason     why it was not needed (NULL when needed)
--   cost_ns    its cost, in nanoseconds

SELECT
  o.source,
  o.policy,
  o.pid,
  o.cpu,
  o.ts_ns,
  CAST(o.ts_ns - s.first_ts_ns AS DOUBLE) / 1000000 AS t_ms,
  o.op,
  o.context,
  o.trigger,
  o.redundant,
  o.reason,
  o.cost_ns
FROM fpu_ops AS o
JOIN sources AS s
  ON s.source = o.source
WHERE ($source = '' OR o.source = $source) AND ($policy = '' OR o.policy = $policy)
ORDER BY
  o.source,
  CASE o.policy WHEN 'legacy' THEN 0 WHEN 'vcpu_run' THEN 1 WHEN 'deferred' THEN 2 ELSE 3 END,
  o.policy,
  o.ts_ns,
  o.line_no,
  o.cpu,
  o.pid,
  o.op DESC,
  o.context
