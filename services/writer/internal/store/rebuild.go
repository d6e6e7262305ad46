package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ErrNoRawEvents is returned by Rebuild when retention has dropped raw events of the
// range: rebuilding would erase rollups that can no longer be recomputed.
var ErrNoRawEvents = errors.New("raw events of the range were dropped by retention")

// ErrUnknownSite is returned by Rebuild for a site that does not exist.
var ErrUnknownSite = errors.New("unknown site")

const rebuildBounds = `
SELECT timezone,
       ($2::date)::timestamp AT TIME ZONE timezone,
       ($3::date + 1)::timestamp AT TIME ZONE timezone
FROM sites WHERE id = $1`

const rebuildLock = `SELECT pg_advisory_xact_lock(1751220853, ($1::bigint % 2147483647)::int)`

const rebuildPrepare = `
CREATE TEMP TABLE new_events (LIKE events) ON COMMIT DROP;
ALTER TABLE new_events ADD COLUMN day date NOT NULL;
CREATE TEMP TABLE old_visits (LIKE visits) ON COMMIT DROP`

const loadEvents = `
INSERT INTO new_events
SELECT e.*, (e.ts AT TIME ZONE $4::text)::date FROM events e
WHERE e.site_id = $1 AND e.ts >= $2 AND e.ts < $3`

// visitWindow widens [$2 - 2 days, $3 + 2 days] to whole visits of the range's
// visitors, so no visit is rebuilt from part of its events.
const visitWindow = `
WITH w AS (SELECT $2::timestamptz - interval '2 days' AS lo, $3::timestamptz + interval '2 days' AS hi)
SELECT least(w.lo, min(v.started_at)), greatest(w.hi, max(v.ended_at) + interval '1 microsecond')
FROM w LEFT JOIN visits v
  ON v.site_id = $1 AND v.ended_at >= w.lo - interval '30 minutes' AND v.started_at <= w.hi + interval '30 minutes'
 AND v.visitor_id IN (SELECT visitor_id FROM events WHERE site_id = $1 AND ts >= $2 AND ts < $3)
GROUP BY w.lo, w.hi`

const loadVisitorEvents = `
INSERT INTO new_events
SELECT e.*, (e.ts AT TIME ZONE $4::text)::date FROM events e
WHERE e.site_id = $1 AND e.ts >= $5 AND e.ts < $6
  AND e.visitor_id IN (SELECT visitor_id FROM events WHERE site_id = $1 AND ts >= $2 AND ts < $3)`

const rebuildVisitRollups = `
INSERT INTO rollup_visits (site_id, day, dim, value, visits, bounces, duration_ms)
SELECT v.site_id, v.day, d.dim, d.value, count(*),
       count(*) FILTER (WHERE v.pageviews = 1 AND v.events = 0),
       sum(floor(extract(epoch FROM v.ended_at - v.started_at) * 1000)::bigint + v.engagement_ms)
FROM visits v
CROSS JOIN LATERAL (VALUES (0::smallint, ''::text), (1, v.entry_page), (2, v.exit_page)) AS d(dim, value)
WHERE v.site_id = $1 AND v.day BETWEEN $2 AND $3 AND d.value IS NOT NULL
GROUP BY 1, 2, 3, 4`

const rollupsExist = `SELECT EXISTS (SELECT 1 FROM rollup_dims WHERE site_id = $1 AND day BETWEEN $2 AND $3)`

const partitionExists = `SELECT to_regclass($1) IS NOT NULL`

// Rebuild recomputes site's rollups for the local days from..to (inclusive; only their
// dates count) from raw events. Writers of other sites go on; writers of this site wait
// for the rebuild's commit, so no event is counted twice or missed.
func Rebuild(ctx context.Context, pool *pgxpool.Pool, siteID int64, from, to time.Time) error {
	fromDay := time.Date(from.Year(), from.Month(), from.Day(), 0, 0, 0, 0, time.UTC)
	toDay := time.Date(to.Year(), to.Month(), to.Day(), 0, 0, 0, 0, time.UTC)
	if toDay.Before(fromDay) {
		return fmt.Errorf("rebuild rollups: range ends before it starts")
	}
	q := loadQueries()
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, rebuildLock, siteID); err != nil {
			return fmt.Errorf("lock site: %w", err)
		}
		var tz string
		var lo, hi time.Time
		err := tx.QueryRow(ctx, rebuildBounds, siteID, fromDay, toDay).Scan(&tz, &lo, &hi)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("rebuild rollups of site %d: %w", siteID, ErrUnknownSite)
		}
		if err != nil {
			return fmt.Errorf("read site: %w", err)
		}
		// Whole UTC hours around the local days: hours straddling a day edge (zones with
		// half-hour offsets) are recomputed whole.
		hlo := lo.UTC().Truncate(time.Hour)
		hhi := hi.UTC().Add(-time.Microsecond).Truncate(time.Hour).Add(time.Hour)
		for m := monthOf(hlo); m.Before(hhi); m = m.AddDate(0, 1, 0) {
			var ok bool
			name := fmt.Sprintf("events_y%04dm%02d", m.Year(), int(m.Month()))
			if err := tx.QueryRow(ctx, partitionExists, name).Scan(&ok); err != nil {
				return fmt.Errorf("check partition: %w", err)
			}
			if ok {
				continue
			}
			// A month never stored is fine to rebuild (to nothing); a month dropped by
			// retention while its rollups remain is not.
			var kept bool
			if err := tx.QueryRow(ctx, rollupsExist, siteID, fromDay, toDay).Scan(&kept); err != nil {
				return fmt.Errorf("check rollups: %w", err)
			}
			if kept {
				return fmt.Errorf("rebuild rollups of %s: %w", m.Format("2006-01"), ErrNoRawEvents)
			}
		}
		var wlo, whi time.Time
		if err := tx.QueryRow(ctx, visitWindow, siteID, lo, hi).Scan(&wlo, &whi); err != nil {
			return fmt.Errorf("find visits to rebuild: %w", err)
		}
		if _, err := tx.Exec(ctx, rebuildPrepare); err != nil {
			return fmt.Errorf("prepare rebuild: %w", err)
		}
		steps := []struct {
			what string
			sql  string
			args []any
		}{
			{"clear daily rollups", `DELETE FROM rollup_dims WHERE site_id = $1 AND day BETWEEN $2 AND $3`, []any{siteID, fromDay, toDay}},
			{"clear daily visitors", `DELETE FROM visitor_days WHERE site_id = $1 AND day BETWEEN $2 AND $3`, []any{siteID, fromDay, toDay}},
			{"load events", loadEvents, []any{siteID, lo, hi, tz}},
			{"rebuild daily rollups", q.rollupDims, nil},
			{"clear hourly rollups", `DELETE FROM rollup_hourly WHERE site_id = $1 AND hour >= $2 AND hour < $3`, []any{siteID, hlo, hhi}},
			{"clear hourly visitors", `DELETE FROM hour_visitors WHERE site_id = $1 AND hour >= $2 AND hour < $3`, []any{siteID, hlo, hhi}},
			{"reload events", `TRUNCATE new_events`, nil},
			{"load events", loadEvents, []any{siteID, hlo, hhi, tz}},
			{"rebuild hourly rollups", q.rollupHourly, nil},
			// Visits: every visitor with an event in the range is merged again from its
			// events; visitor ids change daily, so two days either side, widened to whole
			// visits, hold them all.
			{"reload events", `TRUNCATE new_events`, nil},
			{"load visitors' events", loadVisitorEvents, []any{siteID, lo, hi, tz, wlo, whi}},
			{"take visits", q.visitsTake, nil},
			{"forget taken visits", `TRUNCATE old_visits`, nil},
			{"rebuild visits", q.visitsMerge, nil},
			{"clear visit rollups", `DELETE FROM rollup_visits WHERE site_id = $1 AND day BETWEEN $2 AND $3`, []any{siteID, fromDay, toDay}},
			{"rebuild visit rollups", rebuildVisitRollups, []any{siteID, fromDay, toDay}},
		}
		for _, st := range steps {
			if _, err := tx.Exec(ctx, st.sql, st.args...); err != nil {
				return fmt.Errorf("%s: %w", st.what, err)
			}
		}
		return nil
	})
}
