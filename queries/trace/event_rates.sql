-- event_rates: kvm_stat's view of a trace: Event, Total, %Total and rate per second.
--
-- The shape `kvm_stat` prints, over the whole trace instead of a refresh
-- interval, and over every traced event (sched_switch, x86_fpu_*, ...),
-- not only kvm's.  With exit_reasons, kvm_exit and kvm_userspace_exit are
-- followed by one row per exit reason, named as kvm_stat's drilldown names
-- them (`kvm_exit(hlt)`), whose pct_total is their share of the parent
-- event, as kvm_stat shows child events.  A last row per source, `Total`,
-- sums the events.  lost_events markers are not events and are left out
-- (see event_counts).
--
-- Parameters:
--   exit_reasons (BOOLEAN, default true)  add a row per exit reason under kvm_exit and kvm_userspace_exit
--
-- Columns:
--   source     trace source id
--   event      event name; `parent(reason)` for an exit reason; `Total` for the sum
--   total      events in the trace
--   pct_total  100 * total / all events of the source (of the parent event for an exit reason)
--   per_s      total per second of trace (last_ts_ns - first_ts_ns)

WITH parents AS (
  SELECT source, event, count(*) AS total
  FROM events
  WHERE event <> 'lost_events'
  GROUP BY source, event
),
children AS (
  SELECT source, event AS parent, coalesce(exit_reason, 'unknown') AS reason, count(*) AS total
  FROM events
  WHERE $exit_reasons AND event IN ('kvm_exit', 'kvm_userspace_exit')
  GROUP BY source, event, coalesce(exit_reason, 'unknown')
),
sums AS (
  SELECT source, CAST(sum(total) AS BIGINT) AS total
  FROM parents
  GROUP BY source
),
spans AS (
  SELECT source, CAST(last_ts_ns - first_ts_ns AS DOUBLE) / 1000000000 AS span_s
  FROM sources
),
listed AS (
  -- Sort keys put each exit reason under its parent and Total last.
  SELECT p.source, p.event, p.total, 100 * CAST(p.total AS DOUBLE) / s.total AS pct_total,
    0 AS section, p.total AS parent_total, p.event AS parent, 0 AS level
  FROM parents AS p
  JOIN sums AS s
    ON s.source = p.source
  UNION ALL
  SELECT c.source, c.parent || '(' || c.reason || ')' AS event, c.total,
    100 * CAST(c.total AS DOUBLE) / p.total AS pct_total,
    0 AS section, p.total AS parent_total, c.parent AS parent, 1 AS level
  FROM children AS c
  JOIN parents AS p
    ON p.source = c.source AND p.event = c.parent
  UNION ALL
  SELECT source, 'Total' AS event, total, CAST(NULL AS DOUBLE) AS pct_total,
    1 AS section, 0 AS parent_total, '' AS parent, 0 AS level
  FROM sums
)
SELECT
  l.source,
  l.event,
  l.total,
  l.pct_total,
  l.total / NULLIF(sp.span_s, 0) AS per_s
FROM listed AS l
JOIN spans AS sp
  ON sp.source = l.source
ORDER BY l.source, l.section, l.parent_total DESC, l.parent, l.level, l.total DESC, l.event
