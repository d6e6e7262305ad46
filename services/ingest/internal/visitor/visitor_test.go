package visitor

import (
	"testing"
	"time"

	"github.com/haru-analytics/haru/services/ingest/internal/salt"
)

func TestID(t *testing.T) {
	var s1, s2 salt.Salt
	s1[0], s2[0] = 1, 2
	base := ID(s1, 7, "81.2.69.160", "Firefox")
	tests := []struct {
		name string
		id   int64
		same bool
	}{
		{"same inputs", ID(s1, 7, "81.2.69.160", "Firefox"), true},
		{"other salt (day)", ID(s2, 7, "81.2.69.160", "Firefox"), false},
		{"other site", ID(s1, 8, "81.2.69.160", "Firefox"), false},
		{"other ip", ID(s1, 7, "81.2.69.161", "Firefox"), false},
		{"other agent", ID(s1, 7, "81.2.69.160", "Chrome"), false},
		{"field boundary", ID(s1, 7, "81.2.69.160F", "irefox"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.id == base; got != tt.same {
				t.Fatalf("equal to base = %v, want %v", got, tt.same)
			}
		})
	}
}

func TestLocalDate(t *testing.T) {
	tokyo, err := time.LoadLocation("Asia/Tokyo")
	if err != nil {
		t.Skipf("no tz database: %v", err)
	}
	tests := []struct {
		t    time.Time
		loc  *time.Location
		want string
	}{
		{time.Date(2026, 3, 1, 23, 30, 0, 0, time.UTC), time.UTC, "2026-03-01"},
		{time.Date(2026, 3, 1, 23, 30, 0, 0, time.UTC), tokyo, "2026-03-02"},
		{time.Date(2026, 3, 1, 14, 59, 0, 0, time.UTC), tokyo, "2026-03-01"},
	}
	for _, tt := range tests {
		if got := LocalDate(tt.t, tt.loc); got != tt.want {
			t.Fatalf("LocalDate(%s, %s) = %s, want %s", tt.t, tt.loc, got, tt.want)
		}
	}
}

func BenchmarkID(b *testing.B) {
	var s salt.Salt
	b.ReportAllocs()
	for b.Loop() {
		ID(s, 7, "81.2.69.160", "Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0")
	}
}
