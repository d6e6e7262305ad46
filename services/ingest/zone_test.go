package ingest

import (
	"testing"
	"time"

	"github.com/haru-analytics/haru/services/ingest/internal/visitor"
)

// TestZoneLocalDate holds the remembered local date to visitor.LocalDate across
// midnights, DST changes (some at midnight, some by 30 minutes), a skipped day, odd
// offsets and dates before 1970, walking forward and jumping back.
func TestZoneLocalDate(t *testing.T) {
	names := []string{"UTC", "Europe/Berlin", "America/Santiago", "Pacific/Apia", "Asia/Kathmandu",
		"Australia/Lord_Howe", "America/St_Johns", "Pacific/Kiritimati", "Unknown/Zone"}
	zones := newZoneCache()
	tests := []struct {
		name       string
		from, to   time.Time
		step, back time.Duration
	}{
		{"2011 around Apia's skipped day", time.Date(2011, 12, 25, 0, 0, 0, 0, time.UTC), time.Date(2012, 1, 5, 0, 0, 0, 0, time.UTC), 7 * time.Minute, 0},
		{"2025-2026 DST changes", time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 12, 31, 0, 0, 0, 0, time.UTC), 97 * time.Minute, 0},
		{"jumping back and forth", time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC), 11 * time.Hour, 30 * time.Hour},
		{"before 1970", time.Date(1969, 12, 30, 0, 0, 0, 0, time.UTC), time.Date(1970, 1, 2, 0, 0, 0, 0, time.UTC), 13 * time.Minute, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, name := range names {
				z := zones.get(name)
				for at := tt.from; at.Before(tt.to); at = at.Add(tt.step) {
					for _, ts := range []time.Time{at, at.Add(-tt.back)} {
						if got, want := z.localDate(ts), visitor.LocalDate(ts, z.loc); got != want {
							t.Fatalf("%s at %s: localDate = %s, want %s", name, ts, got, want)
						}
					}
				}
			}
		})
	}
}
