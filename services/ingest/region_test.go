package ingest

import (
	"testing"

	"github.com/haru-analytics/haru/services/ingest/internal/enrich/enrichtest"
)

// TestRegionFromDatabase: with HARU_REGION_DB, a beacon without a trusted CDN region gets
// its region from the database, on both endpoints; a trusted CDN header still wins.
func TestRegionFromDatabase(t *testing.T) {
	path := enrichtest.WriteCityDB(t)
	// The test connection's peer, 0.0.0.0, plays a trusted proxy here.
	h := newHarness(t, testSite, func(c *Config) { c.TrustedProxies = []string{"0.0.0.0/32"}; c.RegionDB = path })
	h.withSecret(t, testSite)

	send := func(headers map[string]string) (country, region string) {
		t.Helper()
		if status, answer, _ := h.send(t, beacon{body: `{"p":"/r"}`, token: testToken, headers: headers}); status != 202 {
			t.Fatalf("status %d %v", status, answer)
		}
		ev := h.last(t, testSite.ID)
		return ev.Country, ev.Region
	}
	if c, r := send(map[string]string{"X-Forwarded-For": "81.2.69.160"}); c != "GB" || r != "GB-ENG" {
		t.Errorf("from the database: country %q region %q, want GB GB-ENG", c, r)
	}
	if c, r := send(map[string]string{"X-Forwarded-For": "81.2.69.160", "CF-IPCountry": "DE", "CF-Region-Code": "BE"}); c != "DE" || r != "DE-BE" {
		t.Errorf("CDN headers: country %q region %q, want DE DE-BE", c, r)
	}
	if c, r := send(map[string]string{"X-Forwarded-For": "8.8.8.8"}); r != "" {
		t.Errorf("address not in the database: country %q region %q, want no region", c, r)
	}

	if status, _, raw, _ := h.batch(t, testSecret, `{"events":[{"p":"/b","ip":"81.2.69.142"}]}`, nil); status != 202 {
		t.Fatalf("batch: %d %v", status, raw)
	}
	if ev := h.last(t, testSite.ID); ev.Country != "GB" || ev.Region != "GB-ENG" {
		t.Errorf("batch: country %q region %q, want GB GB-ENG", ev.Country, ev.Region)
	}

	cfg := h.cfg
	cfg.RegionDB = path + ".missing"
	if err := cfg.Validate(true); err == nil {
		t.Error("a missing region database passed validation")
	}
}
