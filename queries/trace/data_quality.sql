-- data_quality: How far to trust each source: rejected lines, lost events, inferred switches, incomplete runs.
--
-- One row per source.  Rejects and lost events come from ingest (the
-- manifest and the rejects table); inferred switch-ins and incomplete runs
-- from the replay: a switch-in is inferred when a task logs on a CPU its
-- timeline says another task holds (a sched_switch was not logged), and a
-- run is incomplete when the trace's start, its end or lost events cut it.
-- The counts of operations from incomplete runs are in policy_summary.
--
-- Parameters: none
--
-- Columns:
--   source               trace source id
--   format               input format: tracefs, trace-cmd, perf-script or simulated
--   lines                lines of the input
--   events               events parsed (lost-events markers included)
--   rejects              lines that did not parse
--   reject_pct           100 * rejects / lines
--   first_reject_line    line number of the first rejected line (NULL: none)
--   first_reject_reason  why that line did not parse
--   lost_markers         lost-events markers
--   lost_events          events the markers say were lost
--   ts_backwards         steps back in time between consecutive events of one CPU
--   invalid_utf8_lines   lines with bytes that are not UTF-8 (kept, with U+FFFD)
--   truncated            the input ended without a newline (its last line was cut)
--   inferred_switch_ins  switch-ins the replay inferred (manifest; NULL when the replay did not say)
--   runs                 KVM_RUN intervals
--   incomplete_runs      runs with complete = false
--   incomplete_pct       100 * incomplete_runs / runs
--   recorded_policy      the policy the recording kernel ran, as the replay detected it

WITH run_stats AS (
  SELECT
    source,
    count(*) AS runs,
    count(CASE WHEN NOT complete THEN 1 END) AS incomplete_runs
  FROM runs
  GROUP BY source
),
first_rejects AS (
  SELECT source, min(line_no) AS line_no
  FROM rejects
  GROUP BY source
),
first_reject_reasons AS (
  SELECT r.source, r.line_no, min(r.reason) AS reason
  FROM rejects AS r
  JOIN first_rejects AS f
    ON f.source = r.source AND f.line_no = r.line_no
  GROUP BY r.source, r.line_no
)
SELECT
  s.source,
  s.format,
  s.lines,
  s.events,
  s.rejects,
  100 * CAST(s.rejects AS DOUBLE) / NULLIF(s.lines, 0) AS reject_pct,
  f.line_no AS first_reject_line,
  f.reason AS first_reject_reason,
  s.lost_markers,
  s.lost_events,
  s.ts_backwards,
  s.invalid_utf8_lines,
  s.truncated,
  s.inferred_switch_ins,
  coalesce(r.runs, 0) AS runs,
  coalesce(r.incomplete_runs, 0) AS incomplete_runs,
  100 * CAST(r.incomplete_runs AS DOUBLE) / NULLIF(r.runs, 0) AS incomplete_pct,
  s.recorded_policy
FROM sources AS s
LEFT JOIN run_stats AS r
  ON r.source = s.source
LEFT JOIN first_reject_reasons AS f
  ON f.source = s.source
ORDER BY s.source
