package stats

import (
	"errors"
	"testing"
	"time"
)

// FuzzParsePeriod: the stats API's period parameter, at any moment in a few zones, is a
// known name with a non-empty range of at most 30 local days, or ErrBadPeriod.
func FuzzParsePeriod(f *testing.F) {
	for _, s := range []string{"", "today", "yesterday", "24h", "7d", "30d", "31d", "TODAY", "\xff", "7d\x00"} {
		f.Add(s, int64(1772366400), uint8(0))
	}
	zones := []*time.Location{time.UTC}
	for _, name := range []string{"Europe/Berlin", "America/St_Johns", "Pacific/Kiritimati", "Australia/Lord_Howe"} {
		if loc, err := time.LoadLocation(name); err == nil {
			zones = append(zones, loc)
		}
	}
	f.Fuzz(func(t *testing.T, name string, unix int64, zone uint8) {
		now := time.Unix(unix%(1<<36), 0) // within years 0..4000
		loc := zones[int(zone)%len(zones)]
		p, err := ParsePeriod(name, now, loc)
		if err != nil {
			if !errors.Is(err, ErrBadPeriod) {
				t.Fatalf("ParsePeriod(%q) = %v: not ErrBadPeriod", name, err)
			}
			return
		}
		if !p.From.Before(p.To) || p.To.Sub(p.From) > 30*25*time.Hour {
			t.Fatalf("ParsePeriod(%q, %s, %s) = [%s, %s)", name, now, loc, p.From, p.To)
		}
	})
}
