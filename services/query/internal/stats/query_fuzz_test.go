package stats

import (
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// FuzzParseQuery feeds the stats API's query string, at any moment in a few zones, to
// ParseQuery and a breakdown's dimension. Whatever it holds, the answer is a query or an
// ErrBadQuery naming a field; an accepted query has a non-empty period, its limits hold,
// and its canonical form (the live streams' view key) parses back to the same query.
func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{
		"", "period=7d&filter=page:is:/pricing&filter=country:is_not:JP&metrics=visitors,pageviews",
		"period=custom&from=2026-01-01&to=2026-02-01&interval=week", "period=all&compare=none&limit=1000&page=3",
		"dimension=prop.plan&filter=prop.plan:is:a:b", "period=%ff&filter=page:is:%00", "filter=x&filter=y",
		"filter=prop.utm%253Asrc:is:x&filter=prop.100%2525:is_not:y", "filter=prop.a%25zz:is:x",
	} {
		f.Add(s, "page", int64(1772366400), uint8(0))
		f.Add(s, "prop.a\x00", int64(0), uint8(3))
	}
	zones := []*time.Location{time.UTC}
	for _, name := range []string{"Europe/Berlin", "America/St_Johns", "Pacific/Kiritimati", "Australia/Lord_Howe"} {
		if loc, err := time.LoadLocation(name); err == nil {
			zones = append(zones, loc)
		}
	}
	first := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, raw, dimension string, unix int64, zone uint8) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return // fasthttp hands the handler what it could decode; so does this
		}
		now := time.Unix(946684800+unix%(200*365*86400), 0) // within 2000..2200
		loc := zones[int(zone)%len(zones)]
		q, err := ParseQuery(v, now, first, loc, 10, true)
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) || !errors.Is(err, ErrBadQuery) || fe.Field == "" {
				t.Fatalf("ParseQuery(%q) = %v: not a FieldError naming its field", raw, err)
			}
			return
		}
		if !q.Period.From.Before(q.Period.To) || q.Limit < 1 || q.Limit > maxLimit || q.Page < 1 || len(q.Filters) > maxFilters {
			t.Fatalf("ParseQuery(%q) = %+v", raw, q)
		}
		for _, fl := range q.Filters {
			// Postgres refuses other text as a parameter: that would be a 500.
			if !utf8.ValidString(fl.Value) || strings.ContainsRune(fl.Value, 0) || !utf8.ValidString(fl.dim.prop) || strings.ContainsRune(fl.dim.prop, 0) {
				t.Fatalf("ParseQuery(%q) accepted filter %+v: not storable text", raw, fl)
			}
		}
		canon := q.Canonical()
		back, err := url.ParseQuery(canon)
		if err != nil {
			t.Fatalf("canonical %q of %q does not parse: %v", canon, raw, err)
		}
		q2, err := ParseQuery(back, now, first, loc, 10, true)
		if err != nil {
			t.Fatalf("canonical %q of %q refused: %v", canon, raw, err)
		}
		if q2.Canonical() != canon {
			t.Fatalf("canonical form of %q not stable: %q then %q", raw, canon, q2.Canonical())
		}
		if diff := cmp.Diff(q, q2, cmpopts.IgnoreUnexported(Query{}, Period{}, Filter{})); diff != "" {
			t.Fatalf("canonical %q of %q parses back different (-want +got):\n%s", canon, raw, diff)
		}
		b, err := q.WithDimension(dimension)
		if err != nil && !errors.Is(err, ErrBadQuery) {
			t.Fatalf("WithDimension(%q) = %v", dimension, err)
		}
		if err == nil && (!utf8.ValidString(b.dim.prop) || strings.ContainsRune(b.dim.prop, 0)) {
			t.Fatalf("WithDimension(%q) accepted a property key Postgres cannot take", dimension)
		}
	})
}

// TestFilterTextPostgresCannotTake: NUL and invalid UTF-8 in a filter value or a
// property key are a 400 naming the field, not a query Postgres fails.
func TestFilterTextPostgresCannotTake(t *testing.T) {
	for _, raw := range []string{"filter=page:is:%00", "filter=page:is:%ff", "filter=prop.a%00:is:x", "filter=prop.%c3:is:x"} {
		v, _ := url.ParseQuery(raw)
		_, err := ParseQuery(v, time.Now(), time.Time{}, time.UTC, 10, true)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != "filter" {
			t.Errorf("ParseQuery(%s) = %v, want a filter FieldError", raw, err)
		}
	}
	q, err := ParseQuery(url.Values{}, time.Now(), time.Time{}, time.UTC, 10, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := q.WithDimension("prop.a\x00"); !errors.Is(err, ErrBadQuery) {
		t.Errorf("WithDimension(prop.a NUL) = %v, want ErrBadQuery", err)
	}
}
