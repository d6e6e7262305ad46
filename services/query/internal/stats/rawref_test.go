package stats

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/haru-analytics/haru/pkg/pgtest"
)

// rawStatement is the reference the raw path is tested against: it answers pl from raw
// events (and the visits they form) in one statement:
// the filtered events are read once, then every section aggregates them. Visitors add
// each local day's uniques, as the rollups do; hourly series count each hour's.
func rawStatement(site int64, p Period, filters []Filter, pl plan) statement {
	a := args{}
	s, f, t, tz := a.add(site), a.add(p.From), a.add(p.To), a.add(p.Timezone)
	fd, td := a.add(p.fromDay()), a.add(p.toDay())
	var evConds, visitConds []string
	for _, fl := range filters {
		cond := filterSQL(&a, fl)
		if fl.dim.visit {
			visitConds = append(visitConds, cond)
		} else {
			evConds = append(evConds, cond)
		}
	}
	var sb strings.Builder
	sb.WriteString(`WITH ev AS MATERIALIZED (
	SELECT e.ts, e.name, e.visitor_id, e.hostname, e.path, e.ref_source, e.utm_source, e.utm_medium,
	       e.utm_campaign, e.utm_term, e.utm_content, e.country, e.region, e.browser, e.os, e.device,
	       e.screen_w, e.props, (e.ts AT TIME ZONE ` + tz + `)::date AS day, (e.name = 'pageview')::int AS pv,
	       (e.name NOT IN ('pageview', 'engagement'))::int AS ce
	FROM events e
	WHERE e.site_id = ` + s + ` AND e.ts >= ` + f + ` AND e.ts < ` + t)
	for _, c := range evConds {
		sb.WriteString("\n\t  AND " + c)
	}
	if len(visitConds) > 0 {
		sb.WriteString(`
	  AND EXISTS (SELECT 1 FROM visits v WHERE v.site_id = e.site_id AND v.visitor_id = e.visitor_id
	              AND v.started_at <= e.ts AND v.ended_at >= e.ts AND ` + strings.Join(visitConds, " AND ") + `)`)
	}
	sb.WriteString(`
), vs AS MATERIALIZED (
	SELECT v.* FROM visits v
	WHERE v.site_id = ` + s + ` AND v.day >= ` + fd + ` AND v.day <= ` + td + `
	  AND v.started_at >= ` + f + ` AND v.started_at < ` + t)
	for _, c := range visitConds {
		sb.WriteString("\n\t  AND " + c)
	}
	if len(evConds) > 0 {
		sb.WriteString(`
	  AND EXISTS (SELECT 1 FROM ev e WHERE e.visitor_id = v.visitor_id AND e.ts >= v.started_at AND e.ts <= v.ended_at)`)
	}
	// evd folds the events of one visitor and day that no section tells apart (a pageview
	// and its engagement), so every section below aggregates fewer rows.
	hour, keys := "", 18
	if p.Interval == Hour {
		hour, keys = "date_trunc('hour', e.ts, 'UTC') AS ts, ", 19
	}
	groupBy := make([]string, keys)
	for i := range groupBy {
		groupBy[i] = strconv.Itoa(i + 1)
	}
	sb.WriteString(`
), evd AS MATERIALIZED (
	SELECT e.day, e.visitor_id, ` + hour + `e.hostname, e.path, e.ref_source, e.utm_source, e.utm_medium,
	       e.utm_campaign, e.utm_term, e.utm_content, e.country, e.region, e.browser, e.os, e.device, e.screen_w,
	       CASE WHEN e.name IN ('pageview', 'engagement') THEN 'pageview' ELSE e.name END AS name, e.props,
	       sum(e.pv) AS pv, sum(e.ce) AS ce
	FROM ev e
	GROUP BY ` + strings.Join(groupBy, ", ") + `
)
`)

	var parts []string
	if pl.summary {
		parts = append(parts, `SELECT 'sum', '', coalesce(sum(pv), 0)::int8, coalesce(sum(ce), 0)::int8, count(*)::int8, 0::int8, 0::int8, 0::int8
	FROM (SELECT e.day, e.visitor_id, sum(e.pv) AS pv, sum(e.ce) AS ce FROM evd e GROUP BY 1, 2) x`,
			`SELECT 'vsum', '', 0::int8, 0::int8, 0::int8, `+visitSums+` FROM vs`)
	}
	if pl.series {
		if p.Interval == Hour {
			parts = append(parts, `SELECT 'ser', b, sum(pv)::int8, sum(ce)::int8, count(*)::int8, 0::int8, 0::int8, 0::int8
	FROM (SELECT `+hourBucket("e.ts")+` AS b, e.visitor_id, sum(e.pv) AS pv, sum(e.ce) AS ce FROM evd e GROUP BY 1, 2) x GROUP BY b`,
				`SELECT 'vser', `+hourBucket("started_at")+`, 0::int8, 0::int8, 0::int8, `+visitSums+` FROM vs GROUP BY 2`)
		} else {
			parts = append(parts, `SELECT 'ser', b, sum(pv)::int8, sum(ce)::int8, count(*)::int8, 0::int8, 0::int8, 0::int8
	FROM (SELECT `+dayBucket(p.Interval, "e.day")+` AS b, e.day, e.visitor_id, sum(e.pv) AS pv, sum(e.ce) AS ce FROM evd e GROUP BY 1, 2, 3) x GROUP BY b`,
				`SELECT 'vser', `+dayBucket(p.Interval, "day")+`, 0::int8, 0::int8, 0::int8, `+visitSums+` FROM vs GROUP BY 2`)
		}
	}
	for _, d := range pl.dims {
		name := a.add(d.name)
		switch {
		case d.visit:
			parts = append(parts, `(SELECT `+name+`::text, `+d.expr+`, 0::int8, 0::int8, 0::int8, `+visitSums+`
	FROM vs v WHERE `+d.expr+` IS NOT NULL GROUP BY 2 `+orderVisits(d.expr)+limitClause(pl.limit, pl.offset)+`)`)
		case d.props || d.prop != "":
			label, cond := "k", ""
			if d.prop != "" {
				label, cond = "val", " AND left(p.key, 200) = "+a.add(d.prop)
			}
			parts = append(parts, `(SELECT `+name+`::text, `+label+`, sum(pv)::int8, sum(ce)::int8, count(*)::int8, 0::int8, 0::int8, 0::int8
	FROM (SELECT left(p.key, 200) AS k, left(p.value, 1000) AS val, e.day, e.visitor_id, sum(e.pv) AS pv, sum(e.ce) AS ce
	      FROM evd e CROSS JOIN LATERAL jsonb_each_text(e.props) p
	      WHERE e.props IS NOT NULL AND jsonb_typeof(e.props) = 'object'`+cond+`
	      GROUP BY 1, 2, 3, 4) x
	GROUP BY 2 `+orderEvents(label)+limitClause(pl.limit, pl.offset)+`)`)
		default:
			keep := ""
			if d.keep != "" {
				keep = " WHERE " + d.keep
			}
			parts = append(parts, `(SELECT `+name+`::text, value, sum(pv)::int8, sum(ce)::int8, count(*)::int8, 0::int8, 0::int8, 0::int8
	FROM (SELECT `+d.expr+` AS value, e.day, e.visitor_id, sum(e.pv) AS pv, sum(e.ce) AS ce FROM evd e`+keep+` GROUP BY 1, 2, 3) x
	GROUP BY 2 `+orderEvents("value")+limitClause(pl.limit, pl.offset)+`)`)
		}
	}
	sb.WriteString(strings.Join(parts, "\nUNION ALL\n"))
	return statement{sb.String(), a}
}

// referenceRun answers pl for p from raw events with rawStatement, merged as run merges.
func (q *Querier) referenceRun(ctx context.Context, site int64, qu Query, p Period, pl plan) (result, error) {
	rs, err := q.query(ctx, rawStatement(site, p, qu.Filters, pl), true)
	if err != nil {
		return result{}, err
	}
	res := result{series: map[string]totals{}, dims: map[string][]row{}}
	res.merge(rs)
	for _, d := range pl.dims {
		sortRows(res.dims[d.name], d.visit)
		if res.dims[d.name] == nil {
			res.dims[d.name] = []row{}
		}
	}
	return res, nil
}

// matchReference answers pl for qu through run and fails the test unless the reference
// answers the same.
func matchReference(t *testing.T, q *Querier, site int64, qu Query, pl plan, name string) result {
	t.Helper()
	ctx := context.Background()
	got, err := q.run(ctx, site, qu, qu.Period, pl)
	if err != nil {
		t.Fatal(err)
	}
	want, err := q.referenceRun(ctx, site, qu, qu.Period, pl)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(result{}, row{}, totals{})); diff != "" {
		t.Errorf("%s: raw path differs from the reference (-reference +raw path):\n%s", name, diff)
	}
	return got
}

// TestRawPathMatchesReference: for random data in several timezones, filtered views and
// views of part days answer from the raw path exactly what the single reference
// statement answers: summary, series and every breakdown, paged.
func TestRawPathMatchesReference(t *testing.T) {
	q := newTestQuerier(t)
	var dims []dimension
	for _, name := range append(append([]string{}, dimensionNames...), "props", "prop.plan", "prop.variant") {
		d, err := lookupDimension("dimension", name, true)
		if err != nil {
			t.Fatal(err)
		}
		dims = append(dims, d)
	}
	views := []string{"period=30d&filter=page:is:/pricing", "period=7d&interval=hour&filter=country:is_not:US",
		"period=24h", "period=today&filter=entry_page:is:/", "period=30d&interval=week&filter=browser:is:Firefox&filter=exit_page:is_not:/",
		"period=custom&from=2026-10-01&to=2026-11-27&interval=month&filter=prop.plan:is:pro",
		"period=30d&filter=screen:is:mobile&limit=3&page=2", "period=7d&filter=event:is:Signup", "period=30d&filter=source:is:Google"}
	for i, tz := range []string{"Europe/Paris", "America/New_York", "Asia/Kolkata"} {
		t.Run(tz, func(t *testing.T) {
			loc, _ := time.LoadLocation(tz)
			now := time.Date(2026, 11, 27, 15, 4, 0, 0, loc)
			site := seedSite(t, q, tz, now, 6000, uint64(i+11))
			for _, raw := range views {
				qu := parse(t, raw, now, loc)
				qu.Raw = true
				for _, pl := range []plan{
					{summary: true, series: true, dims: dims, limit: qu.Limit, offset: (qu.Page - 1) * qu.Limit},
					{summary: true},
					{dims: dims[:3], limit: 0},
				} {
					got := matchReference(t, q, site, qu, pl, raw)
					if pl.summary && got.sum.Visits == 0 && !strings.Contains(raw, "prop.plan") {
						t.Errorf("%s: no visits", raw)
					}
				}
			}
		})
	}
}

// TestRawPastDaysCached: a filtered view's past days are computed once and kept, today's
// events are read at every view, and the two add up to what the reference answers.
func TestRawPastDaysCached(t *testing.T) {
	ctx := context.Background()
	q := newTestQuerier(t)
	loc, _ := time.LoadLocation("Europe/Paris")
	now := time.Now().In(loc)
	if now.Hour() == 0 && now.Minute() < 5 {
		now = now.Add(5 * time.Minute) // today holds a few minutes at least
	}
	site := seedSite(t, q, "Europe/Paris", now, 4000, 21)
	qu := parse(t, "period=7d&filter=page:is:/pricing", time.Now(), loc)
	pl := plan{summary: true, series: true, dims: []dimension{dimensions["source"], dimensions["entry_page"]}, limit: 10}
	pl.dims[0].name, pl.dims[1].name = "source", "entry_page"
	first := matchReference(t, q, site, qu, pl, "7d filtered")
	if len(q.rawPast.entries) != 1 {
		t.Fatalf("%d past results kept, want 1", len(q.rawPast.entries))
	}
	// A pageview of /pricing lands today: the next view shows it.
	if _, err := q.pool.Exec(ctx, `INSERT INTO events (site_id, ts, id, name, visitor_id, path)
		VALUES ($1, $2, gen_random_uuid(), 'pageview', 424242, '/pricing')`, site, time.Now().Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	second := matchReference(t, q, site, qu, pl, "7d filtered, one more pageview")
	if second.sum.Pageviews != first.sum.Pageviews+1 || second.sum.Visitors != first.sum.Visitors+1 {
		t.Errorf("after one more pageview today: %+v, before %+v", second.sum, first.sum)
	}
	// The previous period lies wholly in the past: computed once, then kept.
	prev := qu.Period.Previous()
	for range 2 {
		if _, err := q.run(ctx, site, qu, prev, plan{summary: true}); err != nil {
			t.Fatal(err)
		}
	}
	if len(q.rawPast.entries) != 2 {
		t.Errorf("%d past results kept after the previous period twice, want 2", len(q.rawPast.entries))
	}
}

// TestRawStatementsPlannedEachTime checks that no statement over raw events is kept as a
// prepared statement, which Postgres may switch to a generic plan after five runs on a
// connection (blind to the range and the filter's value), while rollup statements are.
func TestRawStatementsPlannedEachTime(t *testing.T) {
	ctx := context.Background()
	db := pgtest.New(t)
	loc, _ := time.LoadLocation("Europe/Paris")
	now := time.Now().In(loc)
	seeder, err := New(db.Pool)
	if err != nil {
		t.Fatal(err)
	}
	site := seedSite(t, seeder, "Europe/Paris", now, 2000, 22)
	cfg := db.Pool.Config()
	cfg.MaxConns = 1 // one session: its prepared statements are all the querier's
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	q, err := New(pool)
	if err != nil {
		t.Fatal(err)
	}
	info := SiteInfo{ID: site, Timezone: "Europe/Paris"}
	for _, view := range []string{"period=30d&filter=page:is:/pricing", "period=24h", "period=30d"} {
		qu := parse(t, view, time.Now(), loc)
		for range 7 {
			q.rawPast = newPastCache[rawKey, result](0, 0) // every view reads its raw events
			if _, err := q.Dashboard(ctx, info, qu, time.Now()); err != nil {
				t.Fatalf("%s: %v", view, err)
			}
		}
	}
	var events, rollups int
	// By the simple protocol, so this statement is not among them.
	err = pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE statement ~ 'FROM events\M'),
		count(*) FILTER (WHERE statement ~ 'FROM rollup_') FROM pg_prepared_statements`,
		pgx.QueryExecModeSimpleProtocol).Scan(&events, &rollups)
	if err != nil {
		t.Fatal(err)
	}
	if events != 0 {
		t.Errorf("%d statements over raw events kept prepared, want none", events)
	}
	if rollups == 0 {
		t.Error("no rollup statement kept prepared: the check sees nothing")
	}
}
