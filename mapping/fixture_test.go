package mapping

import (
	"net/netip"
	"testing"
	"time"
)

// testGeoPath is the synthetic GeoIP2 City database; its network table is
// in testdata/README.md (and testdata/geoipgen, the source of truth).
const testGeoPath = "../testdata/GeoIP2-City-Test.mmdb"

// testNow stamps every test snapshot; Build reads no clock.
var testNow = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// openTestGeo loads the test database or fails the test.
func openTestGeo(t testing.TB) *Geo {
	t.Helper()
	g, err := OpenGeo(testGeoPath)
	if err != nil {
		t.Fatalf("OpenGeo(%s): %v", testGeoPath, err)
	}
	return g
}

// testZone is the demo zone of testdata/world.yaml; ns1 and ns2 are in the
// zone, so they need glue.
func testZone() *Zone {
	return &Zone{
		Name:    "cdn.example.net.",
		Contact: "hostmaster.example.net.",
		Serial:  1,
		NameServers: []NameServer{
			{Name: "ns1.cdn.example.net.", IPv4: netip.MustParseAddr("192.0.2.53")},
			{Name: "ns2.cdn.example.net.", IPv4: netip.MustParseAddr("198.51.100.53"), IPv6: netip.MustParseAddr("2001:db8:53::2")},
		},
	}
}

// testEdges are the ten edges of testdata/world.yaml, in the file's order
// (not by id, so that Build's own sorting is exercised). The apac edges
// have no IPv6 address on purpose: AAAA for game is NODATA.
func testEdges() []Edge {
	v4 := netip.MustParseAddr
	edge := func(id, ip4, ip6 string, lat, lon float64, pool string, capacity int) Edge {
		e := Edge{ID: id, IPv4: v4(ip4), Lat: lat, Lon: lon, Pool: pool, Capacity: capacity}
		if ip6 != "" {
			e.IPv6 = v4(ip6)
		}
		return e
	}
	return []Edge{
		edge("fra1", "192.0.2.1", "2001:db8:e::1", 50.11, 8.68, "global", 20000),    // Frankfurt
		edge("lon1", "192.0.2.2", "2001:db8:e::2", 51.51, -0.13, "global", 30000),   // London
		edge("iad1", "192.0.2.3", "2001:db8:e::3", 39.04, -77.49, "global", 50000),  // Ashburn, VA
		edge("sjc1", "192.0.2.4", "2001:db8:e::4", 37.34, -121.89, "global", 40000), // San Jose
		edge("gru1", "192.0.2.5", "2001:db8:e::5", -23.55, -46.63, "global", 15000), // Sao Paulo
		edge("jnb1", "192.0.2.6", "2001:db8:e::6", -26.20, 28.05, "global", 10000),  // Johannesburg
		edge("syd1", "192.0.2.7", "2001:db8:e::7", -33.87, 151.21, "global", 15000), // Sydney
		edge("nrt1", "192.0.2.8", "", 35.68, 139.65, "apac", 30000),                 // Tokyo
		edge("sel1", "192.0.2.9", "", 37.57, 126.98, "apac", 20000),                 // Seoul
		edge("sin1", "192.0.2.10", "", 1.35, 103.82, "apac", 25000),                 // Singapore
	}
}

// testProperties are the four properties of testdata/world.yaml.
func testProperties() []Property {
	return []Property{
		{Name: "shop.cdn.example.net.", Pools: []string{"global", "apac"}, TTL: 20, Answers: 1},
		{Name: "video.cdn.example.net.", Pools: []string{"global", "apac"}, TTL: 30, Answers: 2},
		{Name: "game.cdn.example.net.", Pools: []string{"apac"}, TTL: 20, Answers: 1},
		// Makes eu.cdn.example.net. an empty non-terminal.
		{Name: "static.eu.cdn.example.net.", Pools: []string{"global"}, TTL: 60, Answers: 1},
	}
}

// testInputs is the demo world located with geo (which may be nil).
func testInputs(geo *Geo) Inputs {
	return Inputs{Zone: testZone(), Edges: testEdges(), Properties: testProperties(), Geo: geo, Now: testNow}
}

// testWorld builds the demo world or fails the test.
func testWorld(t testing.TB, geo *Geo) *Snapshot {
	t.Helper()
	s, err := Build(testInputs(geo))
	if err != nil {
		t.Fatalf("Build(demo world): %v", err)
	}
	return s
}

// mustProperty is the snapshot's property called name or fails the test.
func mustProperty(t testing.TB, s *Snapshot, name string) *ServedProperty {
	t.Helper()
	n := s.Lookup(name)
	if n == nil || n.Property == nil {
		t.Fatalf("Lookup(%q) has no property", name)
	}
	return n.Property
}

// answerIDs are the ids of the edges Decide answers property with.
func answerIDs(t testing.TB, s *Snapshot, property, client string, v6 bool) []string {
	t.Helper()
	var d Decision
	mustProperty(t, s, property).Decide(netip.MustParseAddr(client), v6, &d)
	return decisionIDs(&d)
}

// decisionIDs are the ids of the decided edges, in order; ids compare
// across snapshots where edge pointers do not.
func decisionIDs(d *Decision) []string {
	ids := make([]string, 0, d.N)
	for _, e := range d.Edges[:d.N] {
		ids = append(ids, e.ID)
	}
	return ids
}

// decideCase is a query for a property and what Decide answers it with.
type decideCase struct {
	name     string
	property string // a name, or its first label for the demo zone's
	client   string
	v6       bool // AAAA
	want     []string
	scope    int
}
