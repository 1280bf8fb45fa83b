-- thread_states: vCPU thread states over time per CPU lane: in KVM_RUN, in userspace, preempted, blocked.
--
-- The per-CPU timeline of the dashboard.  A vCPU thread (a pid with runs) is
-- on a CPU from a sched_switch that switches it in until the next one that
-- switches it out; while on the CPU it is in KVM_RUN (state kvm_run) when a
-- run of its runs table covers the moment, else in userspace (state user:
-- the VMM's own code, or the kernel outside the ioctl).  Off the CPU its
-- state is the prev_state of the sched_switch that took it off: R or R+
-- preempted, S or D blocked, X or Z (the thread exited) no stretch, anything
-- else other; an off-CPU stretch is drawn on
-- the lane of the CPU it left (a preempted thread waits on that CPU's run
-- queue).  Stretches are cut at every sched_switch and at every start and
-- end of a run.
--
-- Before a thread's first logged sched_switch it is taken to be on the CPU
-- of that switch when the switch takes it off, and is left out when the
-- switch brings it in (its state before is unknown); a thread that never
-- switches is on the CPU its first run started on (runs.cpu_start) for the
-- whole trace.  Switch-ins the replay had to infer (a sched_switch was not
-- logged) are not inferred here: data_quality counts them.  The last
-- stretch of a thread ends at the source's last event.
--
-- A thread's latest switch is found in file order (line_no), which is time
-- order within a thread for tracefs, trace-cmd and perf script output.
--
-- Performance: one window pass over the vCPU threads' sched_switch lines and
-- run bounds: 3.3M stretches from 10M events in about 3.5 s on a shared
-- 2-CPU machine, the slowest query the dashboard runs; it bins the rows
-- when there are too many to draw.
--
-- Parameters:
--   source (VARCHAR, default '')  only this source ('' for every source)
--
-- Columns:
--   source    trace source id
--   cpu       the lane: the CPU the thread runs on, or the CPU it left when off CPU
--   pid       the vCPU thread
--   comm      the thread's task name on its last run (runs.comm; QEMU: `CPU n/KVM`)
--   state     kvm_run, user, preempted, blocked or other (see above)
--   start_ns  start of the stretch (trace clock, ns)
--   end_ns    end of the stretch (exclusive)
--   start_ms  start in milliseconds since the source's first event
--   end_ms    end in milliseconds since the source's first event

WITH vcpus AS (
  SELECT source, pid, min_by(cpu_start, run_idx) AS run_cpu, max_by(comm, run_idx) AS run_comm
  FROM runs
  WHERE $source = '' OR source = $source
  GROUP BY source, pid
),
switches AS (
  SELECT source, line_no, ts_ns, cpu, prev_pid, prev_state, next_pid
  FROM events
  WHERE event = 'sched_switch' AND ($source = '' OR source = $source)
),
edges AS (
  -- One row per moment a thread's state can change.  rank orders the rows
  -- of one instant: a run ends before the thread is switched out, and is
  -- switched in before its next run starts.  A switch row packs what it
  -- says into one number, line_no first, so that a running max() over the
  -- rows so far is the latest switch's (one window pass instead of a
  -- second pass per switch group): bit 19 on CPU, bits 16-18 the
  -- off-CPU state (1 preempted, 2 blocked, 3 exited, 4 other), bits 0-15
  -- the CPU.
  SELECT s.source, s.prev_pid AS pid, s.ts_ns, 1 AS rank, s.line_no,
    s.line_no * 16777216
      + 65536 * CASE
        WHEN s.prev_state LIKE 'R%' THEN 1
        WHEN s.prev_state LIKE 'S%' OR s.prev_state LIKE 'D%' THEN 2
        WHEN s.prev_state LIKE 'X%' OR s.prev_state LIKE 'Z%' THEN 3
        ELSE 4
      END
      + s.cpu AS switch_code,
    0 AS run_step
  FROM switches AS s
  JOIN vcpus AS v
    ON v.source = s.source AND v.pid = s.prev_pid
  UNION ALL
  SELECT s.source, s.next_pid, s.ts_ns, 2, s.line_no, s.line_no * 16777216 + 524288 + s.cpu, 0
  FROM switches AS s
  JOIN vcpus AS v
    ON v.source = s.source AND v.pid = s.next_pid
  UNION ALL
  SELECT source, pid, start_ns, 3, 0, NULL, 1
  FROM runs
  WHERE $source = '' OR source = $source
  UNION ALL
  SELECT source, pid, end_ns, 0, 0, NULL, -1
  FROM runs
  WHERE $source = '' OR source = $source
  UNION ALL
  -- The trace's first instant, so that a thread on a CPU from the start
  -- has a stretch from there.
  SELECT v.source, v.pid, s.first_ts_ns, -1, 0, NULL, 0
  FROM vcpus AS v
  JOIN sources AS s
    ON s.source = v.source
),
ordered AS (
  SELECT
    source,
    pid,
    ts_ns,
    max(switch_code) OVER (
      PARTITION BY source, pid ORDER BY ts_ns, rank, line_no
      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
    ) AS code,
    sum(run_step) OVER (
      PARTITION BY source, pid ORDER BY ts_ns, rank, line_no
      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
    ) AS in_run,
    lead(ts_ns) OVER (PARTITION BY source, pid ORDER BY ts_ns, rank, line_no) AS next_ts
  FROM edges
),
first_codes AS (
  SELECT source, pid, min(switch_code) AS first_code
  FROM edges
  GROUP BY source, pid
),
decoded AS (
  SELECT
    o.source,
    o.pid,
    o.ts_ns,
    o.next_ts,
    o.in_run,
    -- Before the first switch: on the first switch's CPU when it takes the
    -- thread off, unknown when it brings it in; no switch at all: on the
    -- CPU of the first run.
    CASE
      WHEN o.code IS NOT NULL THEN (o.code // 524288) % 2
      WHEN f.first_code IS NULL THEN 1
      ELSE 1 - (f.first_code // 524288) % 2
    END AS on_cpu,
    CASE WHEN o.code IS NOT NULL THEN (o.code // 65536) % 8 ELSE 0 END AS off_state,
    CASE
      WHEN o.code IS NOT NULL THEN o.code % 65536
      WHEN f.first_code IS NOT NULL THEN f.first_code % 65536
      ELSE v.run_cpu
    END AS cpu,
    v.run_comm
  FROM ordered AS o
  JOIN first_codes AS f
    ON f.source = o.source AND f.pid = o.pid
  JOIN vcpus AS v
    ON v.source = o.source AND v.pid = o.pid
),
stretches AS (
  SELECT
    d.source,
    d.cpu,
    d.pid,
    d.run_comm AS comm,
    CASE
      WHEN d.on_cpu = 1 AND d.in_run > 0 THEN 'kvm_run'
      WHEN d.on_cpu = 1 THEN 'user'
      WHEN d.off_state = 1 THEN 'preempted'
      WHEN d.off_state = 2 THEN 'blocked'
      WHEN d.off_state = 4 THEN 'other'
    END AS state,
    d.ts_ns AS start_ns,
    coalesce(d.next_ts, s.last_ts_ns) AS end_ns,
    s.first_ts_ns
  FROM decoded AS d
  JOIN sources AS s
    ON s.source = d.source
)
SELECT
  source,
  cpu,
  pid,
  comm,
  state,
  start_ns,
  end_ns,
  CAST(start_ns - first_ts_ns AS DOUBLE) / 1000000 AS start_ms,
  CAST(end_ns - first_ts_ns AS DOUBLE) / 1000000 AS end_ms
FROM stretches
WHERE state IS NOT NULL AND cpu IS NOT NULL AND end_ns > start_ns
ORDER BY source, cpu, start_ns, pid
