package ingest

import (
	"net/http"
	"testing"
	"time"
)

// TestVisitorIDChangesWithTheSitesDay: the same address and User-Agent keep one visitor
// id through a site's local day and get another the next day, the day turning at the
// site's midnight (Europe/Berlin here), not UTC's.
func TestVisitorIDChangesWithTheSitesDay(t *testing.T) {
	h := newHarness(t, testSite, nil)
	visitorAt := func(at time.Time) int64 {
		t.Helper()
		h.clock.Set(at)
		before := h.stored(t)
		status, body, _ := h.send(t, beacon{body: `{"p":"/"}`, token: testToken, headers: map[string]string{"X-Forwarded-For": "198.51.100.7"}})
		if status != http.StatusAccepted || h.stored(t) != before+1 {
			t.Fatalf("beacon at %s: %d %v, want 202 and stored", at, status, body)
		}
		return h.last(t, testSite.ID).Visitor
	}
	utc := func(day, hour, minute int) time.Time { return time.Date(2026, 3, day, hour, minute, 0, 0, time.UTC) }

	morning := visitorAt(utc(2, 6, 0))
	if late := visitorAt(utc(2, 22, 59)); late != morning { // 23:59 in Berlin
		t.Errorf("same local day: visitor %d then %d, want one id", morning, late)
	}
	if next := visitorAt(utc(2, 23, 1)); next == morning { // 00:01 the next day in Berlin
		t.Errorf("past the site's midnight the visitor id is still %d", next)
	}
	if yesterday := visitorAt(utc(1, 12, 0)); yesterday == morning {
		t.Errorf("the day before gave the same visitor id %d", yesterday)
	}
}
