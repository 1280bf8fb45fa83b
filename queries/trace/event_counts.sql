-- event_counts: Events per source and event name, with each source's rejected lines and lost-event markers.
--
-- What a trace contains, before or after a replay.  `lost_events` rows are
-- the markers ingest keeps on the timeline (one per `[LOST n EVENTS]`
-- line); how many events they stand for is lost_events.  A source with no
-- event at all still has one row, with a NULL event.
--
-- Parameters: none
--
-- Columns:
--   source        trace source id
--   event         bare event name (kvm_fpu, sched_switch, ..., lost_events)
--   count         rows of that event in the source
--   pct           100 * count / all rows of the source
--   rejects       lines of the source that did not parse (manifest)
--   lost_markers  lost-events markers in the source (manifest)
--   lost_events   events those markers say were lost (manifest; a lower bound when one does not say)

WITH counted AS (
  SELECT source, event, count(*) AS n
  FROM events
  GROUP BY source, event
),
totals AS (
  SELECT source, CAST(sum(n) AS BIGINT) AS total
  FROM counted
  GROUP BY source
)
SELECT
  s.source,
  c.event,
  coalesce(c.n, 0) AS count,
  100 * CAST(c.n AS DOUBLE) / t.total AS pct,
  s.rejects,
  s.lost_markers,
  s.lost_events
FROM sources AS s
LEFT JOIN counted AS c
  ON c.source = s.source
LEFT JOIN totals AS t
  ON t.source = s.source
ORDER BY s.source, coalesce(c.n, 0) DESC, c.event
