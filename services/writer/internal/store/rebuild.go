package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/haru-analytics/haru/pkg/event"
	"github.com/haru-analytics/haru/pkg/pgutil"
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

// visitWindow widens [$2 - 2 days, $3 + 2 days] to whole visits of the range's
// visitors, so no visit is rebuilt from part of its events.
const visitWindow = `
WITH w AS (SELECT $2::timestamptz - interval '2 days' AS lo, $3::timestamptz + interval '2 days' AS hi)
SELECT least(w.lo, min(v.started_at)), greatest(w.hi, max(v.ended_at) + interval '1 microsecond')
FROM w LEFT JOIN visits v
  ON v.site_id = $1 AND v.ended_at >= w.lo - interval '30 minutes' AND v.started_at <= w.hi + interval '30 minutes'
 AND v.visitor_id IN (SELECT visitor_id FROM events WHERE site_id = $1 AND ts >= $2 AND ts < $3)
GROUP BY w.lo, w.hi`

// visitsInMonth reports whether a stored visit of a visitor of the range [$4, $5) has
// time in the month [$2, $3).
const visitsInMonth = `
SELECT EXISTS (SELECT 1 FROM visits v
               WHERE v.site_id = $1 AND v.started_at < $3 AND v.ended_at >= $2
                 AND v.visitor_id IN (SELECT visitor_id FROM events WHERE site_id = $1 AND ts >= $4 AND ts < $5))`

// rangeVisitors are the visitors with an event in [$2, $4), the days and hours a rebuild
// recounts, each with whether one is in [$2, $3), the range's days: those visitors'
// visits are rebuilt.
const rangeVisitors = `SELECT visitor_id, bool_or(ts < $3) FROM events WHERE site_id = $1 AND ts >= $2 AND ts < $4 GROUP BY 1`

// takeRangeVisits takes out the stored visits the replayed events of the range's
// visitors ($4) can form; the replay merges them back from their events.
const takeRangeVisits = `
WITH span AS (
    SELECT visitor_id, min(ts) - interval '30 minutes' AS lo, max(ts) + interval '30 minutes' AS hi
    FROM events WHERE site_id = $1 AND ts >= $2 AND ts < $3 AND visitor_id = ANY($4)
    GROUP BY 1
)
DELETE FROM visits v USING span t
WHERE v.site_id = $1 AND v.visitor_id = t.visitor_id AND v.ended_at >= t.lo AND v.started_at <= t.hi
RETURNING v.site_id, v.visitor_id, v.started_at, v.ended_at, v.day, v.pageviews, v.events,
          v.engagement_ms, v.entry_page, v.entry_at, v.exit_page, v.exit_at, v.seen, true`

// forgetRangeSightings removes the sightings tagged with a day of the range (tags
// $3..$3+$4 modulo 2^16) from every visit of the visitors $2: the replay counts those
// days' first sightings anew.
const forgetRangeSightings = `
UPDATE visits v SET seen = ARRAY(SELECT h FROM unnest(v.seen) h WHERE ((h & 65535) - $3) & 65535 > $4)
WHERE v.site_id = $1 AND v.visitor_id = ANY($2)
  AND EXISTS (SELECT 1 FROM unnest(v.seen) h WHERE ((h & 65535) - $3) & 65535 <= $4)`

// keepTakenSightings appends the sightings taken visit i of visitor $2[i], starting at
// $3[i], held of days outside the range ($6[$4[i]:$5[i]]) to the rebuilt visit that
// holds its start (and so all of it), and returns how many taken visits found one.
const keepTakenSightings = `
WITH k AS (
    SELECT k.visitor_id, k.started_at, ($6::bigint[])[k.lo:k.hi] AS seen
    FROM unnest($2::bigint[], $3::timestamptz[], $4::int[], $5::int[]) AS k(visitor_id, started_at, lo, hi)
), held AS (
    SELECT v.visitor_id, v.started_at, count(*) AS taken, array_agg(h) AS seen
    FROM k JOIN visits v ON v.site_id = $1 AND v.visitor_id = k.visitor_id
                        AND v.started_at <= k.started_at AND v.ended_at >= k.started_at,
         unnest(k.seen) AS h
    GROUP BY 1, 2
), kept AS (
    UPDATE visits v SET seen = v.seen || held.seen
    FROM held WHERE v.site_id = $1 AND v.visitor_id = held.visitor_id AND v.started_at = held.started_at
)
SELECT count(*) FROM k
WHERE EXISTS (SELECT 1 FROM visits v WHERE v.site_id = $1 AND v.visitor_id = k.visitor_id
                                      AND v.started_at <= k.started_at AND v.ended_at >= k.started_at)`

// replayFrom reads the site's events before $2 that follow ($3, $4) in key order. The
// row comparison alone would start each index scan at the site's first event (Postgres 15
// positions a btree scan by the equality on site_id and filters the rest), so every page
// would read every earlier month's index whole; ts >= $3, which the comparison implies,
// starts the scan at the page and prunes the earlier months.
const replayFrom = `
SELECT site_id, ts, id, name, visitor_id, hostname, path, referrer, ref_source,
       utm_source, utm_medium, utm_campaign, utm_term, utm_content,
       country, region, browser, os, device, screen_w, screen_h, duration_ms, props
FROM events
WHERE site_id = $1 AND ts < $2 AND ts >= $3 AND (site_id, ts, id) > ($1, $3, $4)`

// replayChunk is a page of replayFrom.
const replayChunk = replayFrom + `
ORDER BY site_id, ts, id
LIMIT $5`

// replayVisitorsChunk is replayChunk for the days around the range, whose events only
// matter for the visits of the range's visitors ($6): reading only theirs made a 1-day
// rebuild about a quarter faster.
const replayVisitorsChunk = replayFrom + `
  AND visitor_id = ANY($6)
ORDER BY site_id, ts, id
LIMIT $5`

// customPlans has the rebuild's statements planned with their parameters, so a list of
// visitors in visitor_id = ANY($n) is a constant Postgres hashes. Past five runs on a
// connection (rebuild-rollups' sixth day) Postgres may switch a prepared statement to a
// generic plan, which tests each row against the whole list: a week of 1-day chunks at
// 140,000 events a day took 171-213 s that way, 35-45 s with custom plans.
const customPlans = `SET LOCAL plan_cache_mode = force_custom_plan`

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

// afterRebuildChecks, for tests, runs once a rebuild has checked its months' raw events.
// Retention cannot drop one of them after that: dropping a partition takes its parent's
// lock, which the rebuild's reads of events (visitWindow) hold until it commits.
var afterRebuildChecks func()

// ZoneShiftDays bounds how many days apart two timezones' dates of one instant can be
// (UTC offsets run from -12 to +14 hours).
const ZoneShiftDays = 2

// RawEventDays returns the local days, in site's timezone now, of its first and last
// stored raw events; ok is false when it has none.
func RawEventDays(ctx context.Context, pool *pgxpool.Pool, siteID int64) (first, last time.Time, ok bool, err error) {
	var tz string
	var lo, hi *time.Time
	err = pool.QueryRow(ctx, `SELECT s.timezone,
		(SELECT min(ts) FROM events WHERE site_id = s.id), (SELECT max(ts) FROM events WHERE site_id = s.id)
		FROM sites s WHERE s.id = $1`, siteID).Scan(&tz, &lo, &hi)
	if errors.Is(err, pgx.ErrNoRows) {
		return first, last, false, fmt.Errorf("site %d: %w", siteID, ErrUnknownSite)
	}
	if err != nil || lo == nil {
		return first, last, false, err
	}
	loc, err := newZones().load(tz)
	if err != nil {
		return first, last, false, fmt.Errorf("site %d: %w", siteID, err)
	}
	return dateOf(dayOf(*lo, loc)), dateOf(dayOf(*hi, loc)), true, nil
}

// Rebuild recomputes site's rollups for the local days from..to (inclusive; only their
// dates count) from raw events. Writers of other sites go on; writers of this site wait
// for the rebuild's commit, so no event is counted twice or missed.
func Rebuild(ctx context.Context, pool *pgxpool.Pool, siteID int64, from, to time.Time) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		_, err := rebuild(ctx, pool, tx, siteID, from, to)
		return err
	})
}

// rebuild is Rebuild within tx; it returns how many events it replayed.
func rebuild(ctx context.Context, pool *pgxpool.Pool, tx pgx.Tx, siteID int64, from, to time.Time) (int, error) {
	fromDay := time.Date(from.Year(), from.Month(), from.Day(), 0, 0, 0, 0, time.UTC)
	toDay := time.Date(to.Year(), to.Month(), to.Day(), 0, 0, 0, 0, time.UTC)
	if toDay.Before(fromDay) {
		return 0, fmt.Errorf("rebuild rollups: range ends before it starts")
	}
	if toDay.Sub(fromDay) >= (dayTagMask+1)*24*time.Hour {
		return 0, fmt.Errorf("rebuild rollups: a range of at most %d days", dayTagMask+1)
	}
	if _, err := tx.Exec(ctx, pgutil.LockSite, siteID); err != nil {
		return 0, fmt.Errorf("lock site: %w", err)
	}
	if _, err := tx.Exec(ctx, customPlans); err != nil {
		return 0, fmt.Errorf("plan settings: %w", err)
	}
	var tz string
	var lo, hi time.Time
	err := tx.QueryRow(ctx, rebuildBounds, siteID, fromDay, toDay).Scan(&tz, &lo, &hi)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("rebuild rollups of site %d: %w", siteID, ErrUnknownSite)
	}
	if err != nil {
		return 0, fmt.Errorf("read site: %w", err)
	}
	// The UTC hours that start within the local days: a visitor's sighting of an hour
	// is tagged with the day the hour starts on (zones with half-hour offsets have hours
	// straddling a day edge), so exactly these hours are recomputed with those days.
	hlo, hhi := ceilHour(lo), ceilHour(hi)
	var wlo, whi time.Time
	if err := tx.QueryRow(ctx, visitWindow, siteID, lo, hi).Scan(&wlo, &whi); err != nil {
		return 0, fmt.Errorf("find visits to rebuild: %w", err)
	}
	// Every month the replay reads must still have its raw events. The window [wlo, whi)
	// holds the range's hours and reaches beyond them, to whole visits.
	for m := monthOf(wlo); m.Before(whi); m = m.AddDate(0, 1, 0) {
		var ok bool
		name := fmt.Sprintf("events_y%04dm%02d", m.Year(), int(m.Month()))
		if err := tx.QueryRow(ctx, partitionExists, name).Scan(&ok); err != nil {
			return 0, fmt.Errorf("check partition: %w", err)
		}
		if ok {
			continue
		}
		// A month never stored is fine to rebuild (to nothing). A month of the range
		// dropped by retention while its rollups remain is not; nor is one beyond the
		// range that one of the range's visits reaches into: that visit cannot be
		// rebuilt from its events, and taking it out would change the rollups of days
		// outside the range.
		lost, check, args := false, rollupsExist, []any{siteID, fromDay, toDay}
		if m.Before(monthOf(hlo)) || !m.Before(hhi) {
			check, args = visitsInMonth, []any{siteID, m, m.AddDate(0, 1, 0), lo, hi}
		}
		if err := tx.QueryRow(ctx, check, args...).Scan(&lost); err != nil {
			return 0, fmt.Errorf("check what month %s held: %w", m.Format("2006-01"), err)
		}
		if lost {
			return 0, fmt.Errorf("rebuild rollups: raw events of %s: %w", m.Format("2006-01"), ErrNoRawEvents)
		}
	}
	if afterRebuildChecks != nil {
		afterRebuildChecks()
	}
	st, err := New(pool)
	if err != nil {
		return 0, err
	}
	steps := []struct {
		what string
		sql  string
		args []any
	}{
		{"clear daily rollups", `DELETE FROM rollup_dims WHERE site_id = $1 AND day BETWEEN $2 AND $3`, []any{siteID, fromDay, toDay}},
		{"clear hourly rollups", `DELETE FROM rollup_hourly WHERE site_id = $1 AND hour >= $2 AND hour < $3`, []any{siteID, hlo, hhi}},
	}
	for _, st := range steps {
		if _, err := tx.Exec(ctx, st.sql, st.args...); err != nil {
			return 0, fmt.Errorf("%s: %w", st.what, err)
		}
	}
	loc, err := st.zones.load(tz)
	if err != nil {
		return 0, err
	}
	r := replay{st: st, tx: tx, site: siteID, zones: map[int64]*time.Location{siteID: loc},
		lo: lo, hi: hi, hlo: hlo, hhi: hhi, wlo: wlo, whi: whi,
		fromDay: int32(fromDay.Unix() / 86400), toDay: int32(toDay.Unix() / 86400)}
	if err := r.run(ctx); err != nil {
		return 0, err
	}
	for _, step := range []struct {
		what string
		sql  string
	}{
		{"clear visit rollups", `DELETE FROM rollup_visits WHERE site_id = $1 AND dim IN (0, 1, 2) AND day BETWEEN $2 AND $3`},
		{"rebuild visit rollups", rebuildVisitRollups},
	} {
		if _, err := tx.Exec(ctx, step.sql, siteID, fromDay, toDay); err != nil {
			return 0, fmt.Errorf("%s: %w", step.what, err)
		}
	}
	return r.replayed, nil
}

// replayChunkSize bounds the events a rebuild holds in memory at once.
const replayChunkSize = 10000

// replay feeds a site's stored events back through apply, chunk by chunk, as if written
// anew: events of the local days [lo, hi) to rollup_dims, of the hours starting in
// [hlo, hhi) (their whole hours, up to hhi + 1h) to rollup_hourly, and every event in
// [wlo, whi) of a visitor seen in [lo, hi) to visits. First sightings and visits merge
// across chunks as they do across batches, so the replay's order does not matter.
type replay struct {
	st                         *Store
	tx                         pgx.Tx
	site                       int64
	zones                      map[int64]*time.Location
	lo, hi, hlo, hhi, wlo, whi time.Time
	fromDay, toDay             int32              // the range's local days
	ids                        []int64            // the visitors with an event in [lo, hi)
	visitors                   map[int64]struct{} // ids as a set
	replayed                   int                // events read back
}

func (r *replay) run(ctx context.Context) error {
	// Every event of the days and hours rebuilt counts; around them, up to the window,
	// only the range's visitors' events do, so only those are read.
	lo, hi := minTime(r.lo, r.hlo), maxTime(r.hi, r.hhi.Add(time.Hour))
	rows, err := r.tx.Query(ctx, rangeVisitors, r.site, lo, r.hi, hi)
	if err != nil {
		return fmt.Errorf("read visitors: %w", err)
	}
	var counted []int64 // every visitor whose sightings the replay recounts
	r.visitors = map[int64]struct{}{}
	var id int64
	var inRange bool
	_, err = pgx.ForEachRow(rows, []any{&id, &inRange}, func() error {
		counted = append(counted, id)
		if inRange {
			r.ids = append(r.ids, id)
			r.visitors[id] = struct{}{}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("read visitors: %w", err)
	}
	if _, err := r.tx.Exec(ctx, forgetRangeSightings, r.site, counted, int32(uint16(r.fromDay)), r.toDay-r.fromDay); err != nil {
		return fmt.Errorf("forget the range's sightings: %w", err)
	}
	rows, err = r.tx.Query(ctx, takeRangeVisits, r.site, r.wlo, r.whi, r.ids)
	if err != nil {
		return fmt.Errorf("take visits: %w", err)
	}
	taken, err := scanVisits(rows)
	if err != nil {
		return fmt.Errorf("take visits: %w", err)
	}
	// Their share leaves rollup_visits; the replay adds the merged visits back.
	if d := visitDeltas(taken, nil); len(d.site) > 0 {
		b := &pgx.Batch{}
		b.Queue(r.st.q.writeVisitRollups, d.args()...)
		drop := d.decreased()
		b.Queue(r.st.q.dropEmptyVisitRollups, drop.keyArgs()...)
		if err := r.st.run(ctx, r.tx, "forget taken visits", b); err != nil {
			return err
		}
	}
	for _, seg := range []struct {
		from, to     time.Time
		visitorsOnly bool
	}{{r.wlo, lo, true}, {lo, hi, false}, {hi, r.whi, true}} {
		if !seg.from.Before(seg.to) || seg.visitorsOnly && len(r.ids) == 0 {
			continue
		}
		if err := r.segment(ctx, seg.from, seg.to, seg.visitorsOnly); err != nil {
			return err
		}
	}
	return r.keepSightings(ctx, taken)
}

// keepSightings puts back the sightings the taken visits held of days outside the range
// (those of the range were forgotten before), each on the rebuilt visit that holds its
// taken one: the replay rebuilt the visits, but counted only the range's first sightings.
func (r *replay) keepSightings(ctx context.Context, taken []visit) error {
	var visitors []int64
	var starts []time.Time
	var lo, hi []int32
	hashes := []int64{}
	for _, v := range taken {
		if len(v.seen) == 0 {
			continue
		}
		visitors, starts = append(visitors, v.visitor), append(starts, v.start)
		lo = append(lo, int32(len(hashes)+1))
		hashes = append(hashes, v.seen...)
		hi = append(hi, int32(len(hashes)))
	}
	if len(visitors) == 0 {
		return nil
	}
	var held int
	if err := r.tx.QueryRow(ctx, keepTakenSightings, r.site, visitors, starts, lo, hi, hashes).Scan(&held); err != nil {
		return fmt.Errorf("keep sightings: %w", err)
	}
	if held != len(visitors) {
		return fmt.Errorf("keep sightings: %d of %d taken visits are within a rebuilt one", held, len(visitors))
	}
	return nil
}

// segment replays the events in [from, to), or only the range's visitors' if
// visitorsOnly. Its first page starts after (from, the zero id), so at from itself: the
// segment before ends there, and no event is read twice.
func (r *replay) segment(ctx context.Context, from, to time.Time, visitorsOnly bool) error {
	afterTS, afterID := from, uuid.UUID{}
	for {
		chunk, err := r.read(ctx, afterTS, afterID, to, visitorsOnly)
		if err != nil {
			return err
		}
		if len(chunk) == 0 {
			return nil
		}
		r.replayed += len(chunk)
		w := work{zones: r.zones}
		for i := range chunk {
			e := &chunk[i]
			if !e.Time.Before(r.lo) && e.Time.Before(r.hi) {
				w.dims = append(w.dims, e)
			}
			if h := e.Time.Truncate(time.Hour); !h.Before(r.hlo) && h.Before(r.hhi) {
				w.hours = append(w.hours, e)
			}
			if _, ok := r.visitors[e.Visitor]; ok && !e.Time.Before(r.wlo) && e.Time.Before(r.whi) {
				w.visits = append(w.visits, e)
			}
		}
		if err := r.st.apply(ctx, r.tx, w); err != nil {
			return err
		}
		last := chunk[len(chunk)-1]
		afterTS, afterID = last.Time, last.ID
	}
}

func (r *replay) read(ctx context.Context, afterTS time.Time, afterID uuid.UUID, to time.Time, visitorsOnly bool) ([]event.Event, error) {
	sql, args := replayChunk, []any{r.site, to, afterTS, afterID, replayChunkSize}
	if visitorsOnly {
		sql, args = replayVisitorsChunk, append(args, r.ids)
	}
	rows, err := r.tx.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	var out []event.Event
	var e event.Event
	_, err = pgx.ForEachRow(rows, []any{&e.SiteID, &e.Time, &e.ID, &e.Name, &e.Visitor, &e.Hostname, &e.Path,
		&e.Referrer, &e.RefSource, &e.UTMSource, &e.UTMMedium, &e.UTMCampaign, &e.UTMTerm, &e.UTMContent,
		&e.Country, &e.Region, &e.Browser, &e.OS, &e.Device, &e.ScreenW, &e.ScreenH, &e.DurationMS, &e.Props}, func() error {
		out = append(out, e)
		e.Props = nil
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	return out, nil
}

// ceilHour is the first UTC hour boundary at or after t.
func ceilHour(t time.Time) time.Time {
	h := t.UTC().Truncate(time.Hour)
	if h.Before(t) {
		h = h.Add(time.Hour)
	}
	return h
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
