package mapping

import (
	"errors"
	"io/fs"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
)

func TestOpenGeoTestDatabase(t *testing.T) {
	g := openTestGeo(t)
	if g.Path() != testGeoPath {
		t.Errorf("Path() = %q, want %q", g.Path(), testGeoPath)
	}
	// 20 networks in testdata/geoipgen's table; a different count means the
	// walk skipped or duplicated records.
	if g.Networks() != 20 {
		t.Errorf("Networks() = %d, want 20", g.Networks())
	}
	// The build epoch is fixed by the generator, so this is stable.
	if want := "GeoIP2-City built 2026-01-01"; g.Describe() != want {
		t.Errorf("Describe() = %q, want %q", g.Describe(), want)
	}
}

func TestLocate(t *testing.T) {
	g := openTestGeo(t)
	tests := []struct {
		name    string
		addr    string
		city    string // "" means no place
		country string
		lat     float64
		lon     float64
		network string
	}{
		{name: "seoul /24", addr: "198.18.1.9", city: "Seoul", country: "KR", lat: 37.5665, lon: 126.9780, network: "198.18.1.0/24"},
		{name: "first address of the network", addr: "198.18.2.0", city: "Frankfurt", country: "DE", lat: 50.1109, lon: 8.6821, network: "198.18.2.0/24"},
		{name: "last address of the network", addr: "198.18.3.255", city: "New York", country: "US", lat: 40.7128, lon: -74.0060, network: "198.18.3.0/24"},
		// The ECS scope must be the database's /16, not a guessed /24.
		{name: "paris /16", addr: "198.19.5.5", city: "Paris", country: "FR", lat: 48.8566, lon: 2.3522, network: "198.19.0.0/16"},
		{name: "ipv6 /48", addr: "2001:db8:1::5", city: "Seoul", country: "KR", lat: 37.5665, lon: 126.9780, network: "2001:db8:1::/48"},
		// A country-only record has no coordinates: no place (never 0,0),
		// but the answer still depends on exactly this /24.
		{name: "country only", addr: "198.18.99.1", network: "198.18.99.0/24"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			place, network := g.Locate(netip.MustParseAddr(tt.addr))
			if network != netip.MustParsePrefix(tt.network) {
				t.Errorf("network = %v, want %s", network, tt.network)
			}
			if tt.city == "" {
				if place != nil {
					t.Fatalf("place = %+v, want nil", *place)
				}
				return
			}
			if place == nil {
				t.Fatalf("place = nil, want %s", tt.city)
			}
			want := Place{Lat: tt.lat, Lon: tt.lon, City: tt.city, Country: tt.country, v: unitVector(tt.lat, tt.lon), idx: place.idx}
			if *place != want {
				t.Errorf("place = %+v, want %+v", *place, want)
			}
		})
	}
}

// Addresses the database does not hold have no place, and the network that
// says so still contains the address: the resolver echoes its length as the
// ECS scope, so a network that did not contain the client would be a lie.
func TestLocateNotFound(t *testing.T) {
	g := openTestGeo(t)
	for _, s := range []string{"192.0.2.1", "198.18.0.1", "127.0.0.1", "8.8.8.8", "10.0.0.1", "2001:db8:4::1", "::1"} {
		addr := netip.MustParseAddr(s)
		place, network := g.Locate(addr)
		if place != nil {
			t.Errorf("Locate(%s) place = %+v, want nil", s, *place)
		}
		if !network.IsValid() || !network.Contains(addr) {
			t.Errorf("Locate(%s) network = %v, want a valid prefix containing it", s, network)
		}
	}
	if place, network := g.Locate(netip.Addr{}); place != nil || network.IsValid() {
		t.Errorf("Locate(invalid) = %v, %v; want nil, invalid prefix", place, network)
	}
}

// The reader reports an IPv4-mapped address's network as a /120 of
// ::ffff:0:0/96; Locate must unmap first, or an ECS scope for an IPv4
// client would say 120.
func TestLocateIPv4Mapped(t *testing.T) {
	g := openTestGeo(t)
	for _, s := range []string{"198.18.1.9", "198.19.5.5", "198.18.99.1"} {
		plain := netip.MustParseAddr(s)
		mapped := netip.AddrFrom16(plain.As16())
		if !mapped.Is4In6() {
			t.Fatalf("%v is not IPv4-mapped", mapped)
		}
		wantPlace, wantNet := g.Locate(plain)
		place, network := g.Locate(mapped)
		if place != wantPlace {
			t.Errorf("Locate(%v) place = %v, want %v (same as %s)", mapped, place, wantPlace, s)
		}
		if network != wantNet || !network.Addr().Is4() {
			t.Errorf("Locate(%v) network = %v, want %v", mapped, network, wantNet)
		}
	}
	_, network := g.Locate(netip.MustParseAddr("::ffff:198.18.1.9"))
	if network.Bits() != 24 {
		t.Errorf("Locate(::ffff:198.18.1.9) bits = %d, want 24", network.Bits())
	}
}

func TestOpenGeoErrors(t *testing.T) {
	dir := t.TempDir()

	garbage := filepath.Join(dir, "garbage.mmdb")
	// Seeded, so a failure reproduces; 4 KB is bigger than the test DB.
	buf := make([]byte, 4096)
	rng := rand.NewChaCha8([32]byte{1})
	_, _ = rng.Read(buf)
	if err := os.WriteFile(garbage, buf, 0o600); err != nil {
		t.Fatal(err)
	}

	empty := filepath.Join(dir, "empty.mmdb")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		path    string
		is      error // errors.Is target, or nil
		notCity bool
	}{
		{name: "missing file", path: filepath.Join(dir, "missing.mmdb"), is: fs.ErrNotExist},
		{name: "random bytes", path: garbage},
		{name: "empty file", path: empty},
		{name: "asn database", path: writeASNDatabase(t, dir), is: ErrNotCityDatabase, notCity: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := OpenGeo(tt.path)
			if err == nil {
				t.Fatalf("OpenGeo(%s) = %v, nil; want an error", tt.name, g)
			}
			if g != nil {
				t.Errorf("OpenGeo returned a Geo with the error %v", err)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("err = %v, want errors.Is %v", err, tt.is)
			}
			// Only a well-formed database of the wrong kind is "not a City
			// database"; a corrupt file must not be reported as one.
			if !tt.notCity && errors.Is(err, ErrNotCityDatabase) {
				t.Errorf("err = %v, must not be ErrNotCityDatabase", err)
			}
			if !strings.HasPrefix(err.Error(), "geoip") {
				t.Errorf("err = %q, want the geoip context", err)
			}
		})
	}
}

// writeASNDatabase writes a valid MaxMind DB of type GeoLite2-ASN, which has
// no locations, and returns its path.
func writeASNDatabase(t *testing.T, dir string) string {
	t.Helper()
	tree, err := mmdbwriter.New(mmdbwriter.Options{
		DatabaseType: "GeoLite2-ASN",
		// 192.0.2.0/24 is documentation space, which mmdbwriter otherwise
		// refuses to insert.
		IncludeReservedNetworks: true,
	})
	if err != nil {
		t.Fatalf("mmdbwriter.New: %v", err)
	}
	_, network, err := net.ParseCIDR("192.0.2.0/24")
	if err != nil {
		t.Fatal(err)
	}
	if err := tree.Insert(network, mmdbtype.Map{"autonomous_system_number": mmdbtype.Uint32(64500)}); err != nil {
		t.Fatalf("Insert: %v", err)
	}
	path := filepath.Join(dir, "GeoLite2-ASN-Test.mmdb")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tree.WriteTo(f); err != nil {
		f.Close()
		t.Fatalf("WriteTo: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// Every place in the test database has real coordinates; none may come out
// as 0,0, which is what a missing location would decode to.
func TestLocateNeverZeroZero(t *testing.T) {
	g := openTestGeo(t)
	for res := range g.tree.Networks() {
		if err := res.Err(); err != nil {
			t.Fatal(err)
		}
		place, _ := g.Locate(res.Prefix().Addr())
		if place != nil && place.Lat == 0 && place.Lon == 0 {
			t.Errorf("%v located at 0,0", res.Prefix())
		}
		if place != nil && (math.IsNaN(place.Lat) || math.IsNaN(place.Lon)) {
			t.Errorf("%v located at NaN", res.Prefix())
		}
	}
}

// The /24 table must answer exactly as the tree does, for every /24 the
// test database places anything in and around, and for random addresses;
// EDGEMAP_GEOLITE2=path/to/GeoLite2-City.mmdb runs the same check on a
// real database.
func TestLocateTableMatchesTree(t *testing.T) {
	dbs := []string{"../testdata/GeoIP2-City-Test.mmdb"}
	if p := os.Getenv("EDGEMAP_GEOLITE2"); p != "" {
		dbs = append(dbs, p)
	}
	for _, path := range dbs {
		g, err := openGeo(path, true)
		if err != nil {
			t.Fatal(err)
		}
		rnd := rand.New(rand.NewPCG(1, 2))
		var addrs []netip.Addr
		for b := range 512 {
			addrs = append(addrs, netip.AddrFrom4([4]byte{198, 18 + byte(b>>8), byte(b), 7}), netip.AddrFrom4([4]byte{127, 1, byte(b), 9}))
		}
		for range 200000 {
			addrs = append(addrs, netip.AddrFrom4([4]byte{byte(rnd.Uint32()), byte(rnd.Uint32()), byte(rnd.Uint32()), byte(rnd.Uint32())}))
		}
		for _, a := range addrs {
			p1, n1 := g.Locate(a)
			p2, n2 := g.LocateTree(a)
			if p1 != p2 || n1 != n2 {
				t.Fatalf("%s in %s: table says %v %v, tree %v %v", a, path, p1, n1, p2, n2)
			}
		}
	}
}
