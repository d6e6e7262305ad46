package stats

import (
	"fmt"
	"time"
)

// Period is the half-open range [From, To) and the name it was asked by.
type Period struct {
	Name     string    `json:"name"`
	From     time.Time `json:"from"`
	To       time.Time `json:"to"`
	Timezone string    `json:"timezone"`
	Interval string    `json:"interval"`
	loc      *time.Location
}

// Intervals a time series can be bucketed by, in the site's timezone.
const (
	Hour  = "hour"
	Day   = "day"
	Week  = "week"
	Month = "month"
)

// maxBuckets bounds a time series: an hourly series over years is refused, not drawn.
const maxBuckets = 1500

// maxCustomDays bounds a custom range.
const maxCustomDays = 20 * 366

// ParsePeriod resolves a named period at now in loc. Days start at local midnight.
// from and to (YYYY-MM-DD, inclusive) are read for "custom"; first is the site's first
// day with data, the start of "all". interval "" picks the period's default.
func ParsePeriod(name, from, to, interval string, now, first time.Time, loc *time.Location) (Period, error) {
	now = now.In(loc)
	today := date(now.Year(), now.Month(), now.Day(), loc)
	month := date(now.Year(), now.Month(), 1, loc)
	p := Period{Name: name, Timezone: loc.String(), loc: loc}
	switch name {
	case "", "today":
		p.Name, p.From, p.To = "today", today, today.AddDate(0, 0, 1)
	case "yesterday":
		p.From, p.To = today.AddDate(0, 0, -1), today
	case "24h":
		p.From, p.To = now.Add(-24*time.Hour), now
	case "7d":
		p.From, p.To = today.AddDate(0, 0, -6), today.AddDate(0, 0, 1)
	case "30d":
		p.From, p.To = today.AddDate(0, 0, -29), today.AddDate(0, 0, 1)
	case "month":
		p.From, p.To = month, month.AddDate(0, 1, 0)
	case "last_month":
		p.From, p.To = month.AddDate(0, -1, 0), month
	case "year":
		p.From = date(now.Year(), 1, 1, loc)
		p.To = p.From.AddDate(1, 0, 0)
	case "12mo":
		p.From, p.To = month.AddDate(0, -11, 0), month.AddDate(0, 1, 0)
	case "all":
		first = first.In(loc)
		p.From = date(first.Year(), first.Month(), first.Day(), loc)
		if first.IsZero() || p.From.After(today) {
			p.From = today
		}
		p.To = today.AddDate(0, 0, 1)
	case "custom":
		f, err := parseDay("from", from, loc)
		if err != nil {
			return Period{}, err
		}
		t, err := parseDay("to", to, loc)
		if err != nil {
			return Period{}, err
		}
		if t.Before(f) {
			return Period{}, fieldErr("to", "to %s is before from %s", to, from)
		}
		if t.Sub(f) > maxCustomDays*24*time.Hour {
			return Period{}, fieldErr("to", "a custom range spans at most %d days", maxCustomDays)
		}
		p.From, p.To = f, t.AddDate(0, 0, 1)
	default:
		return Period{}, fieldErr("period", "unknown period %q: want today, yesterday, 24h, 7d, 30d, month, last_month, year, 12mo, all or custom", name)
	}
	if err := p.setInterval(interval); err != nil {
		return Period{}, err
	}
	return p, nil
}

func date(y int, m time.Month, d int, loc *time.Location) time.Time {
	return time.Date(y, m, d, 0, 0, 0, 0, loc)
}

func parseDay(field, s string, loc *time.Location) (time.Time, error) {
	if s == "" {
		return time.Time{}, fieldErr(field, "%s is required for period=custom (YYYY-MM-DD)", field)
	}
	t, err := time.ParseInLocation(time.DateOnly, s, loc)
	if err != nil || t.Year() < 2000 || t.Year() > 2200 {
		return time.Time{}, fieldErr(field, "%s %q: want a date YYYY-MM-DD", field, s)
	}
	return t, nil
}

func (p *Period) setInterval(interval string) error {
	switch interval {
	case "":
		switch {
		case p.To.Sub(p.From) <= 25*time.Hour:
			interval = Hour
		case p.To.Sub(p.From) <= 92*24*time.Hour:
			interval = Day
		default:
			interval = Month
		}
	case Hour, Day, Week, Month:
	default:
		return fieldErr("interval", "unknown interval %q: want hour, day, week or month", interval)
	}
	p.Interval = interval
	if n := len(p.Buckets()); n > maxBuckets {
		return fieldErr("interval", "interval %s gives %d points for this period, at most %d", interval, n, maxBuckets)
	}
	return nil
}

// Location is the timezone the period's days are in.
func (p Period) Location() *time.Location {
	if p.loc == nil {
		return time.UTC
	}
	return p.loc
}

// DayAligned reports whether p covers whole local days, so daily rollups answer it.
func (p Period) DayAligned() bool {
	return isMidnight(p.From, p.Location()) && isMidnight(p.To, p.Location())
}

// today is the start of the local day of now in p's timezone.
func (p Period) today(now time.Time) time.Time {
	t := now.In(p.Location())
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, p.Location())
}

func isMidnight(t time.Time, loc *time.Location) bool {
	t = t.In(loc)
	return t.Hour() == 0 && t.Minute() == 0 && t.Second() == 0 && t.Nanosecond() == 0
}

// Days are the local dates of From and To, as the rollups key them: [FromDay, ToDay) for
// a day-aligned period. ToDay of a period ending inside a day is that day.
func (p Period) fromDay() string { return p.From.In(p.Location()).Format(time.DateOnly) }
func (p Period) toDay() string   { return p.To.In(p.Location()).Format(time.DateOnly) }

// Previous is the period of equal length just before p: as many local days for
// day-aligned periods, else as much time.
func (p Period) Previous() Period {
	q := p
	q.Name = "previous"
	if p.DayAligned() {
		days := 0
		for d := p.From; d.Before(p.To); d = d.In(p.Location()).AddDate(0, 0, 1) {
			days++
		}
		q.From, q.To = p.From.In(p.Location()).AddDate(0, 0, -days), p.From
		return q
	}
	q.From, q.To = p.From.Add(-p.To.Sub(p.From)), p.From
	return q
}

// Buckets are the starts of the series' points: UTC hour instants for "hour" (a local
// day with a DST change has 23 or 25), else local midnights starting a day, a Monday
// week or a month.
func (p Period) Buckets() []time.Time {
	loc := p.Location()
	var out []time.Time
	if p.Interval == Hour {
		for t := p.From.UTC().Truncate(time.Hour); t.Before(p.To); t = t.Add(time.Hour) {
			out = append(out, t.In(loc))
			if len(out) > maxBuckets {
				break
			}
		}
		return out
	}
	for t := p.bucketOf(p.From); t.Before(p.To); t = p.next(t) {
		out = append(out, t)
		if len(out) > maxBuckets {
			break
		}
	}
	return out
}

// bucketOf is the start of the day, week or month holding t.
func (p Period) bucketOf(t time.Time) time.Time {
	t = t.In(p.Location())
	d := date(t.Year(), t.Month(), t.Day(), p.Location())
	switch p.Interval {
	case Week:
		return d.AddDate(0, 0, -((int(d.Weekday()) + 6) % 7))
	case Month:
		return date(t.Year(), t.Month(), 1, p.Location())
	}
	return d
}

func (p Period) next(t time.Time) time.Time {
	switch p.Interval {
	case Week:
		return t.AddDate(0, 0, 7)
	case Month:
		return t.AddDate(0, 1, 0)
	}
	return t.AddDate(0, 0, 1)
}

// bucketKey names a bucket as the SQL of the series does: a Unix time for hours, a
// local date otherwise.
func (p Period) bucketKey(t time.Time) string {
	if p.Interval == Hour {
		return fmt.Sprint(t.Unix())
	}
	return t.In(p.Location()).Format(time.DateOnly)
}
