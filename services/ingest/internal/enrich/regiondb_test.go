package enrich

import (
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/haru-analytics/haru/services/ingest/internal/enrich/enrichtest"
)

func TestRegionDB(t *testing.T) {
	db, err := OpenRegionDB(enrichtest.WriteCityDB(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tests := []struct {
		ip, country, want string
	}{
		{"81.2.69.142", "GB", "GB-ENG"},
		{"::ffff:81.2.69.142", "GB", "GB-ENG"},
		{"2a02:d8:1::1", "DE", "DE-BY"},
		{"81.2.69.142", "FR", ""}, // the event's country wins; no mixed answer
		{"8.8.8.8", "US", ""},     // not in the database
		{"81.2.70.1", "GB", ""},   // a code Region refuses
		{"81.2.69.142", "", ""},   // no country, no region
	}
	for _, tt := range tests {
		if got := db.Region(netip.MustParseAddr(tt.ip), tt.country); got != tt.want {
			t.Errorf("Region(%s, %q) = %q, want %q", tt.ip, tt.country, got, tt.want)
		}
	}
	var none *RegionDB
	if got := none.Region(netip.MustParseAddr("81.2.69.142"), "GB"); got != "" {
		t.Errorf("nil database answered %q", got)
	}
	if _, err := OpenRegionDB(filepath.Join(t.TempDir(), "missing.mmdb")); err == nil {
		t.Error("a missing file opened")
	}
}
