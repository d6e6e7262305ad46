package enrich

import (
	"fmt"
	"net/netip"

	"github.com/oschwald/maxminddb-golang/v2"
)

// RegionDB finds a visitor's subdivision in an optional city database in the MaxMind DB
// format (GeoLite2/GeoIP2 City, DB-IP City Lite), for deployments whose CDN sends no
// region header. The file is memory-mapped: pages are read as lookups touch them.
type RegionDB struct {
	r *maxminddb.Reader
}

// OpenRegionDB opens the database at path.
func OpenRegionDB(path string) (*RegionDB, error) {
	r, err := maxminddb.Open(path)
	if err != nil {
		return nil, fmt.Errorf("region database %s: %w", path, err)
	}
	return &RegionDB{r: r}, nil
}

// Close unmaps the database.
func (d *RegionDB) Close() error { return d.r.Close() }

// cityRecord is the part of a city record Region reads.
type cityRecord struct {
	Country struct {
		ISOCode string `maxminddb:"iso_code"`
	} `maxminddb:"country"`
	Subdivisions []struct {
		ISOCode string `maxminddb:"iso_code"`
	} `maxminddb:"subdivisions"`
}

// Region returns ip's ISO 3166-2 subdivision ("GB-ENG") when the database places ip in
// country (the country already chosen for the event, so the two never disagree); "" when
// d is nil or the database does not know.
func (d *RegionDB) Region(ip netip.Addr, country string) string {
	if d == nil || country == "" || !ip.IsValid() {
		return ""
	}
	var rec cityRecord
	if err := d.r.Lookup(ip.Unmap()).Decode(&rec); err != nil || len(rec.Subdivisions) == 0 || rec.Country.ISOCode != country {
		return ""
	}
	return Region(country, rec.Subdivisions[0].ISOCode, true)
}
