-- fpu_state_access: Each ioctl that read or wrote a vCPU's FPU state: its vCPU, its wait for KVM_RUN, the verdict.
--
-- The audit table `fpureplay audit` writes (pipeline.audit, docs/audit.md):
-- one row per KVM_GET_XSAVE, KVM_GET_XSAVE2, KVM_SET_XSAVE, KVM_GET_FPU or
-- KVM_SET_FPU, mapped to its vCPU by (process, fd) whichever thread issued
-- it.  Such a call takes the vCPU mutex, which KVM_RUN holds: one that
-- arrives while its vCPU is inside KVM_RUN (in_run_at_enter) must return
-- after that KVM_RUN does, and then every policy has the guest state in
-- memory.  inside_run marks calls that returned inside the KVM_RUN they
-- arrived in; violation also covers a stale copy under any policy.
--
-- Times are milliseconds since the source's first event, so the rows can be
-- drawn on the vCPU timeline; wait_us is a lower bound of the time the call
-- was held off (the longer of: until the KVM_RUN it arrived in returned,
-- and the time it slept in D on the mutex).
--
-- Parameters:
--   source (VARCHAR, default '')  only this source ('' for every source)
--   flagged (BOOLEAN, default false)  only the calls flagged as violations
--
-- Columns:
--   source           trace source id
--   call_idx         the call's number in its source, in trace order
--   enter_line       trace line of its sys_enter_ioctl
--   exit_line        trace line of its sys_exit_ioctl (NULL when the trace ends first)
--   pid              the thread that issued it
--   comm             that thread's name
--   cmd              the ioctl (KVM_GET_XSAVE, KVM_SET_XSAVE, ...)
--   fd               the file descriptor it was issued on
--   vcpu_pid         the vCPU thread that runs KVM_RUN on that fd in that process (NULL: unknown)
--   vcpu_comm        that vCPU thread's name
--   mapped_by        how the vCPU was found: tgid, own_fd, unique_fd, pid_cluster or unknown
--   issuer           vcpu_thread (the vCPU itself), other_vcpu or other_thread
--   enter_ms         entry time, milliseconds since the source's first event
--   exit_ms          return time, milliseconds since the source's first event
--   duration_us      from entry to return, in microseconds
--   wait_us          how long it was held off by its vCPU's KVM_RUN, in microseconds
--   in_run_at_enter  the vCPU was inside KVM_RUN when the call entered
--   run_end_line     trace line at which that KVM_RUN returned (kvm_userspace_exit)
--   inside_run       the call returned before that KVM_RUN did: it ignored the vCPU mutex
--   legacy_state     where legacy kept the guest state at the copy: memory, registers
--   vcpu_run_state   where vcpu_run kept it: memory, registers or task_fpstate
--   deferred_state   where deferred kept it: memory or registers
--   stale_under      the policies under which the copy was stale (comma-separated, NULL: none)
--   status           ok, violation, unknown_vcpu or incomplete
--   violation        the call broke the rule (inside_run or a stale copy)
--   reason           why, in words, with the trace lines

SELECT
  a.source,
  a.call_idx,
  a.enter_line,
  a.exit_line,
  a.pid,
  a.comm,
  a.cmd,
  a.fd,
  a.vcpu_pid,
  a.vcpu_comm,
  a.mapped_by,
  a.issuer,
  CAST(a.enter_ns - s.first_ts_ns AS DOUBLE) / 1000000 AS enter_ms,
  CAST(a.exit_ns - s.first_ts_ns AS DOUBLE) / 1000000 AS exit_ms,
  CAST(a.duration_ns AS DOUBLE) / 1000 AS duration_us,
  CAST(a.wait_ns AS DOUBLE) / 1000 AS wait_us,
  a.in_run_at_enter,
  a.run_end_line,
  a.inside_run,
  a.legacy_state,
  a.vcpu_run_state,
  a.deferred_state,
  a.stale_under,
  a.status,
  a.violation,
  a.reason
FROM audit AS a
JOIN sources AS s ON s.source = a.source
WHERE ($source = '' OR a.source = $source)
  AND (NOT $flagged OR a.violation)
ORDER BY a.source, a.call_idx
