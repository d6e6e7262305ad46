// Package enrichtest holds test helpers for enrichment: a small city database in the
// MaxMind DB format, so tests need no downloaded file.
package enrichtest

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
)

// WriteCityDB writes a two-network city database: 81.2.69.0/24 in England and
// 2a02:d8::/32 in Bavaria, as GeoLite2-City lays its records out.
func WriteCityDB(t testing.TB) string {
	t.Helper()
	tree, err := mmdbwriter.New(mmdbwriter.Options{DatabaseType: "GeoLite2-City", RecordSize: 24})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []struct{ cidr, country, sub string }{
		{"81.2.69.0/24", "GB", "ENG"},
		{"2a02:d8::/32", "DE", "BY"},
		{"81.2.70.0/24", "GB", "toolongcode"},
	} {
		_, network, err := net.ParseCIDR(n.cidr)
		if err != nil {
			t.Fatal(err)
		}
		rec := mmdbtype.Map{
			"country":      mmdbtype.Map{"iso_code": mmdbtype.String(n.country)},
			"subdivisions": mmdbtype.Slice{mmdbtype.Map{"iso_code": mmdbtype.String(n.sub)}},
		}
		if err := tree.Insert(network, rec); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "city.mmdb")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tree.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}
