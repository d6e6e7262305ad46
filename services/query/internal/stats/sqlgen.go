package stats

import (
	"fmt"
	"strconv"
)

// Every section query answers rows of one shape: (section, label, pageviews, events,
// visitors, visits, bounces, duration_ms). A section is "sum", "vsum" (visit totals),
// "ser", "vser" (series by bucket) or a breakdown dimension's name.

// args collects a statement's positional parameters.
type args []any

func (a *args) add(v any) string {
	*a = append(*a, v)
	return "$" + strconv.Itoa(len(*a))
}

// plan is what one statement computes.
type plan struct {
	summary bool
	series  bool
	dims    []dimension
	limit   int
	offset  int
}

const visitSums = `count(*)::int8, (count(*) FILTER (WHERE pageviews = 1 AND events = 0))::int8,
	coalesce(sum(floor(extract(epoch FROM ended_at - started_at) * 1000)::bigint + engagement_ms), 0)::int8`

// order ranks breakdown rows; value COLLATE "C" makes ties break as Go's sort does.
func orderEvents(label string) string {
	return `ORDER BY 5 DESC, 3 DESC, 4 DESC, ` + label + ` COLLATE "C"`
}

func orderVisits(label string) string { return `ORDER BY 6 DESC, ` + label + ` COLLATE "C"` }

// limitClause limits a breakdown to one page; limit 0 keeps every row.
func limitClause(limit, offset int) string {
	if limit == 0 {
		return ""
	}
	return fmt.Sprintf(" LIMIT %d OFFSET %d", limit, offset)
}

// dayBucket is the local date starting the day, week or month of date column col.
func dayBucket(interval, col string) string {
	if interval == Day {
		return col + "::text"
	}
	return fmt.Sprintf("date_trunc('%s', %s::timestamp)::date::text", interval, col)
}

// hourBucket is the Unix time of the UTC hour holding timestamptz expression col.
func hourBucket(col string) string {
	return fmt.Sprintf("extract(epoch FROM date_trunc('hour', %s, 'UTC'))::bigint::text", col)
}

// rollupStatements are the statements answering pl from the rollups for a day-aligned
// period: one per section, run side by side.
func rollupStatements(site int64, p Period, pl plan) []statement {
	var out []statement
	base := func() (args, string) {
		a := args{}
		where := fmt.Sprintf("site_id = %s AND day >= %s AND day < %s", a.add(site), a.add(p.fromDay()), a.add(p.toDay()))
		return a, where
	}
	if pl.summary {
		a, w := base()
		out = append(out, statement{`SELECT 'sum', '', coalesce(sum(pageviews), 0)::int8, coalesce(sum(events), 0)::int8,
			coalesce(sum(visitors), 0)::int8, 0::int8, 0::int8, 0::int8
			FROM rollup_dims WHERE ` + w + ` AND dim = 0 AND key = '' AND value = ''`, a})
		a, w = base()
		out = append(out, statement{`SELECT 'vsum', '', 0::int8, 0::int8, 0::int8, coalesce(sum(visits), 0)::int8,
			coalesce(sum(bounces), 0)::int8, coalesce(sum(duration_ms), 0)::int8
			FROM rollup_visits WHERE ` + w + ` AND dim = 0 AND value = ''`, a})
	}
	if pl.series {
		if p.Interval == Hour {
			a := args{}
			s, f, t := a.add(site), a.add(p.From), a.add(p.To)
			out = append(out, statement{`SELECT 'ser', ` + hourBucket("hour") + `, pageviews, events, visitors, 0::int8, 0::int8, 0::int8
				FROM rollup_hourly WHERE site_id = ` + s + ` AND hour >= ` + f + ` AND hour < ` + t, a})
			a = args{}
			s, f, t = a.add(site), a.add(p.From), a.add(p.To)
			fd, td := a.add(p.fromDay()), a.add(p.toDay())
			out = append(out, statement{`SELECT 'vser', ` + hourBucket("started_at") + `, 0::int8, 0::int8, 0::int8, ` + visitSums + `
				FROM visits WHERE site_id = ` + s + ` AND day >= ` + fd + ` AND day <= ` + td +
				` AND started_at >= ` + f + ` AND started_at < ` + t + ` GROUP BY 2`, a})
		} else {
			b := dayBucket(p.Interval, "day")
			a, w := base()
			out = append(out, statement{`SELECT 'ser', ` + b + `, sum(pageviews)::int8, sum(events)::int8, sum(visitors)::int8, 0::int8, 0::int8, 0::int8
				FROM rollup_dims WHERE ` + w + ` AND dim = 0 AND key = '' AND value = '' GROUP BY 2`, a})
			a, w = base()
			out = append(out, statement{`SELECT 'vser', ` + b + `, 0::int8, 0::int8, 0::int8, sum(visits)::int8, sum(bounces)::int8, sum(duration_ms)::int8
				FROM rollup_visits WHERE ` + w + ` AND dim = 0 AND value = '' GROUP BY 2`, a})
		}
	}
	for _, d := range pl.dims {
		out = append(out, rollupPanel(site, p.fromDay(), p.toDay(), d, pl.limit, pl.offset))
	}
	return out
}

// rollupPanel is the statement of one breakdown over the local days [fromDay, toDay)
// from the rollups; limit 0 answers every row.
func rollupPanel(site int64, fromDay, toDay string, d dimension, limit, offset int) statement {
	a := args{}
	w := fmt.Sprintf("site_id = %s AND day >= %s AND day < %s", a.add(site), a.add(fromDay), a.add(toDay))
	name := a.add(d.name)
	switch {
	case d.visit:
		return statement{`SELECT ` + name + `::text, value, 0::int8, 0::int8, 0::int8, sum(visits)::int8, sum(bounces)::int8, sum(duration_ms)::int8
			FROM rollup_visits WHERE ` + w + fmt.Sprintf(" AND dim = %d", d.rollup) + ` GROUP BY 2 ` + orderVisits("value") + limitClause(limit, offset), a}
	case d.props:
		return statement{`SELECT ` + name + `::text, key, sum(pageviews)::int8, sum(events)::int8, sum(visitors)::int8, 0::int8, 0::int8, 0::int8
			FROM rollup_dims WHERE ` + w + ` AND dim = 16 GROUP BY 2 ` + orderEvents("key") + limitClause(limit, offset), a}
	}
	return statement{`SELECT ` + name + `::text, value, sum(pageviews)::int8, sum(events)::int8, sum(visitors)::int8, 0::int8, 0::int8, 0::int8
		FROM rollup_dims WHERE ` + w + fmt.Sprintf(" AND dim = %d AND key = %s", d.rollup, a.add(d.prop)) +
		` GROUP BY 2 ` + orderEvents("value") + limitClause(limit, offset), a}
}

// filterSQL is the condition of one filter over events e (or visits v for entry and
// exit pages), its value a parameter.
func filterSQL(a *args, f Filter) string {
	col := filterColumn[f.Dimension]
	if f.dim.prop != "" {
		col = "(e.props ->> " + a.add(f.dim.prop) + ")"
	}
	v := a.add(f.Value)
	if f.Op == "is" {
		return col + " = " + v
	}
	return col + " IS DISTINCT FROM " + v
}

// onlineSQL counts distinct visitors seen in (now - 5 minutes, now].
const onlineSQL = `SELECT count(DISTINCT visitor_id) FROM events WHERE site_id = $1 AND ts > $2 AND ts <= $3`

// firstDaySQL is the site's first local day with data.
const firstDaySQL = `SELECT min(day)::text FROM rollup_dims WHERE site_id = $1`
