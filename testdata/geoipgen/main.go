// Command geoipgen writes testdata/GeoIP2-City-Test.mmdb, a small synthetic
// GeoIP2 City database in the real MaxMind DB format, so that tests and the
// demo can exercise edgemap's client location code without the licensed
// GeoLite2 database (which must never be committed; see testdata/README.md).
//
// The file is generated; do not edit it. Regenerate it with
//
//	go generate ./...
//
// (the //go:generate directive lives in the mapping package) or, from
// testdata, `go run ./geoipgen`. The output is deterministic: the build epoch
// is fixed and networks are inserted in table order, so regenerating an
// unchanged table yields a byte-identical file and an empty diff.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"os"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
)

// buildEpoch is the database's build_epoch metadata, fixed at
// 2026-01-01T00:00:00Z instead of mmdbwriter's default time.Now, which would
// make every regeneration a new file.
const buildEpoch = 1767225600

// accuracyRadius is the location.accuracy_radius of every city record, in
// kilometres. edgemap's tests do not depend on it; it is present because real
// GeoIP2 City records always carry one.
const accuracyRadius = 20

// networks is the whole database, inserted in this order. Nothing overlaps,
// so the order only matters for determinism. Every address outside these
// networks is absent from the database. Keep testdata/README.md in step.
//
// Who uses it:
//   - 198.18.x.0/24: mapping and resolver tests, as ECS client subnets placed
//     near (or far from) the edges in testdata/world.yaml.
//   - 198.19.0.0/16: tests that the ECS scope prefix echoes the /16 network.
//   - 198.18.99.0/24: a country-only record (no city, no location); tests
//     check it is treated as "no location", not as 0,0.
//   - 203.0.113.0/24: the README's `map explain --client 203.0.113.9` example.
//   - 127.1.x.0/24: loopback sources; tests bind their DNS client to 127.1.x.y
//     to query without ECS from an address that has a location.
//   - 2001:db8:x::/48: the same for IPv6 clients.
var networks = []struct {
	prefix  string
	city    string // a key of cities; "" writes a country-only record
	country string // ISO 3166-1 alpha-2, a key of countries
}{
	{"198.18.1.0/24", "Seoul", "KR"},
	{"198.18.2.0/24", "Frankfurt", "DE"},
	{"198.18.3.0/24", "New York", "US"},
	{"198.18.4.0/24", "Sao Paulo", "BR"},
	{"198.18.5.0/24", "Sydney", "AU"},
	{"198.18.6.0/24", "Johannesburg", "ZA"},
	{"198.18.7.0/24", "Tokyo", "JP"},
	{"198.18.8.0/24", "London", "GB"},
	{"198.18.9.0/24", "Singapore", "SG"},
	{"198.18.10.0/24", "San Francisco", "US"},
	{"198.18.11.0/24", "Osaka", "JP"},
	{"198.19.0.0/16", "Paris", "FR"},
	{"198.18.99.0/24", "", "DE"},
	{"203.0.113.0/24", "Mumbai", "IN"},
	{"127.1.1.0/24", "Seoul", "KR"},
	{"127.1.2.0/24", "Frankfurt", "DE"},
	{"127.1.3.0/24", "New York", "US"},
	{"2001:db8:1::/48", "Seoul", "KR"},
	{"2001:db8:2::/48", "Frankfurt", "DE"},
	{"2001:db8:3::/48", "New York", "US"},
}

// city is one city record; geoname IDs and coordinates are the real,
// approximate (city-centre) values.
type city struct {
	geonameID uint32
	lat, lon  float64
	timeZone  string
}

var cities = map[string]city{
	"Seoul":         {1835848, 37.5665, 126.9780, "Asia/Seoul"},
	"Frankfurt":     {2925533, 50.1109, 8.6821, "Europe/Berlin"},
	"New York":      {5128581, 40.7128, -74.0060, "America/New_York"},
	"Sao Paulo":     {3448439, -23.5505, -46.6333, "America/Sao_Paulo"},
	"Sydney":        {2147714, -33.8688, 151.2093, "Australia/Sydney"},
	"Johannesburg":  {993800, -26.2041, 28.0473, "Africa/Johannesburg"},
	"Tokyo":         {1850147, 35.6762, 139.6503, "Asia/Tokyo"},
	"London":        {2643743, 51.5074, -0.1278, "Europe/London"},
	"Singapore":     {1880252, 1.3521, 103.8198, "Asia/Singapore"},
	"San Francisco": {5391959, 37.7749, -122.4194, "America/Los_Angeles"},
	"Osaka":         {1853909, 34.6937, 135.5023, "Asia/Tokyo"},
	"Paris":         {2988507, 48.8566, 2.3522, "Europe/Paris"},
	"Mumbai":        {1275339, 19.0760, 72.8777, "Asia/Kolkata"},
}

// place is a country or continent: its real geoname ID and English name.
type place struct {
	geonameID uint32
	name      string
}

var countries = map[string]struct {
	place
	continent string // a key of continents
}{
	"AU": {place{2077456, "Australia"}, "OC"},
	"BR": {place{3469034, "Brazil"}, "SA"},
	"DE": {place{2921044, "Germany"}, "EU"},
	"FR": {place{3017382, "France"}, "EU"},
	"GB": {place{2635167, "United Kingdom"}, "EU"},
	"IN": {place{1269750, "India"}, "AS"},
	"JP": {place{1861060, "Japan"}, "AS"},
	"KR": {place{1835841, "South Korea"}, "AS"},
	"SG": {place{1880251, "Singapore"}, "AS"},
	"US": {place{6252001, "United States"}, "NA"},
	"ZA": {place{953987, "South Africa"}, "AF"},
}

var continents = map[string]place{
	"AF": {6255146, "Africa"},
	"AS": {6255147, "Asia"},
	"EU": {6255148, "Europe"},
	"NA": {6255149, "North America"},
	"OC": {6255151, "Oceania"},
	"SA": {6255150, "South America"},
}

func main() {
	out := flag.String("out", "GeoIP2-City-Test.mmdb", "output `path`")
	flag.Parse()
	if err := run(*out); err != nil {
		log.Fatalf("geoipgen: %v", err)
	}
}

func run(out string) error {
	tree, err := mmdbwriter.New(mmdbwriter.Options{
		BuildEpoch:   buildEpoch,
		DatabaseType: "GeoIP2-City",
		Description:  map[string]string{"en": "edgemap test GeoIP2 City database (synthetic)"},
		// Every network above is reserved or documentation space, which
		// mmdbwriter otherwise refuses to insert.
		IncludeReservedNetworks: true,
		IPVersion:               6,
		Languages:               []string{"en"},
		RecordSize:              24,
	})
	if err != nil {
		return fmt.Errorf("new tree: %w", err)
	}
	for _, n := range networks {
		_, ipnet, err := net.ParseCIDR(n.prefix)
		if err != nil {
			return fmt.Errorf("network %s: %w", n.prefix, err)
		}
		rec, err := record(n.city, n.country)
		if err != nil {
			return fmt.Errorf("network %s: %w", n.prefix, err)
		}
		if err := tree.Insert(ipnet, rec); err != nil {
			return fmt.Errorf("insert %s: %w", n.prefix, err)
		}
	}

	f, err := os.Create(out)
	if err != nil {
		return fmt.Errorf("create output: %w", err)
	}
	if _, err := tree.WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", out, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", out, err)
	}
	return nil
}

// record builds one GeoIP2 City record. With cityName "" it has only country
// and continent, like real records for addresses MaxMind can place in a
// country but not a city.
func record(cityName, iso string) (mmdbtype.Map, error) {
	co, ok := countries[iso]
	if !ok {
		return nil, fmt.Errorf("unknown country %q", iso)
	}
	ct, ok := continents[co.continent]
	if !ok {
		return nil, fmt.Errorf("unknown continent %q", co.continent)
	}
	rec := mmdbtype.Map{
		"country": mmdbtype.Map{
			"iso_code":   mmdbtype.String(iso),
			"geoname_id": mmdbtype.Uint32(co.geonameID),
			"names":      names(co.name),
		},
		"continent": mmdbtype.Map{
			"code":       mmdbtype.String(co.continent),
			"geoname_id": mmdbtype.Uint32(ct.geonameID),
			"names":      names(ct.name),
		},
	}
	if cityName == "" {
		return rec, nil
	}
	c, ok := cities[cityName]
	if !ok {
		return nil, fmt.Errorf("unknown city %q", cityName)
	}
	rec["city"] = mmdbtype.Map{
		"geoname_id": mmdbtype.Uint32(c.geonameID),
		"names":      names(cityName),
	}
	rec["location"] = mmdbtype.Map{
		"latitude":        mmdbtype.Float64(c.lat),
		"longitude":       mmdbtype.Float64(c.lon),
		"accuracy_radius": mmdbtype.Uint16(accuracyRadius),
		"time_zone":       mmdbtype.String(c.timeZone),
	}
	return rec, nil
}

// names is a GeoIP2 names map; the database declares only English.
func names(en string) mmdbtype.Map {
	return mmdbtype.Map{"en": mmdbtype.String(en)}
}
