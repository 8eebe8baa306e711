package mapping

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

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

// The /24 table and the IPv6 index must answer exactly as the tree does:
// on the test database, on a generated one with many nested IPv6 networks
// of every length (some without coordinates) and, with
// EDGEMAP_GEOLITE2=path/to/GeoLite2-City.mmdb, on a real database; for
// addresses at, inside and just outside every network, random ones, and
// the IPv6 ranges the tree aliases to its IPv4 networks.
func TestLocateTableMatchesTree(t *testing.T) {
	dbs := []string{"../testdata/GeoIP2-City-Test.mmdb", writeRandomCityDatabase(t, t.TempDir(), 10000)}
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
		for range 100000 {
			addrs = append(addrs, netip.AddrFrom4([4]byte{byte(rnd.Uint32()), byte(rnd.Uint32()), byte(rnd.Uint32()), byte(rnd.Uint32())}))
			addrs = append(addrs, randomAddr6(rnd, netip.MustParsePrefix("2000::/3")))
		}
		for _, alias := range []string{"::/96", "::ffff:0:0/96", "2001::/32", "2002::/16", "2001:db8::/32", "::/0"} {
			for range 2000 {
				addrs = append(addrs, randomAddr6(rnd, netip.MustParsePrefix(alias)))
			}
		}
		networks, pieces := 0, 0
		for res := range g.tree.Networks() {
			p := res.Prefix()
			if p.Addr().Is4() && p.Bits() > 24 && (pieces < 100000 || rnd.IntN(10) == 0) {
				// Networks longer than /24 are pieces of their /24's
				// entry, each in it.
				pieces++
				if v := g.v4Entry(p.Addr().As4()); int(v>>24) != p.Bits() {
					t.Fatalf("%s: the /24 table has %#x for %v", path, v, p)
				}
				last := lastAddr(p)
				addrs = append(addrs, p.Addr(), p.Addr().Prev(), last, last.Next(), randomAddr6(rnd, p))
			}
			if !p.Addr().Is6() || (networks > 300000 && rnd.IntN(10) > 0) {
				continue
			}
			networks++
			// Every network the index can hold is in it: the tree is
			// only the way for addresses the database has no data for.
			if v := g.v6.lookup(leftAligned(p.Addr())); p.Bits() < 128 && (v == 0 || int(v>>24) != p.Bits()) {
				t.Fatalf("%s: the IPv6 index has %#x for %v", path, v, p)
			}
			last := lastAddr(p)
			addrs = append(addrs, p.Addr(), p.Addr().Prev(), last, last.Next(), randomAddr6(rnd, p))
			// The /48 and /56 an ECS option would carry for a client in it.
			for _, bits := range []int{48, 56} {
				if ecs, err := randomAddr6(rnd, p).Prefix(bits); err == nil {
					addrs = append(addrs, ecs.Addr())
				}
			}
		}
		for _, a := range addrs {
			p1, n1 := g.Locate(a)
			p2, n2 := g.LocateTree(a)
			if p1 != p2 || n1 != n2 {
				t.Fatalf("%s in %s: table says %v %v, tree %v %v", a, path, p1, n1, p2, n2)
			}
			// A walk that starts at its /32's node (at32) ends where
			// the walk from the root does.
			if hi, lo := leftAligned(a); a.Is6() {
				v, depth, done := g.v6.root[hi>>48], 16, false
				for !done {
					v, depth, done = g.v6.step(hi, lo, v, depth)
				}
				if got := g.v6.lookup(hi, lo); got != v {
					t.Fatalf("%s in %s: the walk from its /32's node ends at %#x, from the root at %#x", a, path, got, v)
				}
			}
		}
		at32 := 0
		for _, e := range g.v6.at32 {
			if e != 0 {
				at32++
			}
		}
		if at32 == 0 && path != dbs[0] {
			t.Fatalf("%s: no /32 has a node: the walks never start at one", path)
		}
		t.Logf("%s: %d addresses, around %d IPv6 networks and %d IPv4 ones longer than /24 (%d split /24s); %d /32s with a node", path, len(addrs), networks, pieces, len(g.v4Groups)-1, at32)
	}
}

// randomAddr6 is a random address in p.
func randomAddr6(rnd *rand.Rand, p netip.Prefix) netip.Addr {
	a := p.Addr().AsSlice()
	for b := p.Bits(); b < len(a)*8; b++ {
		a[b/8] |= byte(rnd.IntN(2)) << (7 - b%8)
	}
	addr, _ := netip.AddrFromSlice(a)
	return addr
}

// lastAddr is the last address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().AsSlice()
	for b := p.Bits(); b < len(a)*8; b++ {
		a[b/8] |= 0x80 >> (b % 8)
	}
	addr, _ := netip.AddrFromSlice(a)
	return addr
}

// writeRandomCityDatabase writes a GeoIP2 City database (real format, by
// mmdbwriter) of n random networks, three in four IPv6 of every length
// from /12 to /128 inside a few /16s, so that they nest and split each
// other as a real database's do, and one in ten without coordinates; and
// returns its path.
func writeRandomCityDatabase(t testing.TB, dir string, n int) string {
	t.Helper()
	tree, err := mmdbwriter.New(mmdbwriter.Options{DatabaseType: "GeoIP2-City", IncludeReservedNetworks: true, IPVersion: 6, RecordSize: 28})
	if err != nil {
		t.Fatal(err)
	}
	rnd := rand.New(rand.NewPCG(5, 6))
	tops := []netip.Prefix{netip.MustParsePrefix("2a02::/16"), netip.MustParsePrefix("2600::/16"), netip.MustParsePrefix("2001:db8::/32"), netip.MustParsePrefix("2400::/12")}
	for i := range n {
		var p netip.Prefix
		if i%4 == 3 {
			p, _ = netip.AddrFrom4([4]byte{byte(rnd.Uint32()), byte(rnd.Uint32()), byte(rnd.Uint32()), 0}).Prefix(8 + rnd.IntN(25))
		} else {
			top := tops[rnd.IntN(len(tops))]
			p, _ = randomAddr6(rnd, top).Prefix(top.Bits() + rnd.IntN(129-top.Bits()))
		}
		rec := mmdbtype.Map{"country": mmdbtype.Map{"iso_code": mmdbtype.String("DE")}}
		if i%10 != 0 {
			rec["location"] = mmdbtype.Map{
				"latitude":  mmdbtype.Float64(float64(rnd.IntN(180)) - 90),
				"longitude": mmdbtype.Float64(float64(rnd.IntN(360)) - 180),
			}
			rec["city"] = mmdbtype.Map{"names": mmdbtype.Map{"en": mmdbtype.String(fmt.Sprintf("city %d", i))}}
		}
		if err := tree.Insert(netipx(p), rec); err != nil {
			t.Fatalf("insert %v: %v", p, err)
		}
	}
	path := filepath.Join(dir, "GeoIP2-City-Random.mmdb")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tree.WriteTo(f); err != nil {
		f.Close()
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// netipx is p as mmdbwriter takes it.
func netipx(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Masked().Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// geoLite2Path is a real GeoLite2 City database for the benchmarks:
// EDGEMAP_GEOLITE2, else the one testdata/bench/peers.sh's setup converts,
// else "".
func geoLite2Path() string {
	if p := os.Getenv("EDGEMAP_GEOLITE2"); p != "" {
		return p
	}
	const peers = "/tmp/peers-work/city.mmdb"
	if _, err := os.Stat(peers); err == nil {
		return peers
	}
	return ""
}

// BenchmarkOpenGeo is a (re)load of a real GeoLite2 City database: the
// tree walk that decodes every record, the IPv4 /24 table and the IPv6
// index, whose size it reports.
func BenchmarkOpenGeo(b *testing.B) {
	path := geoLite2Path()
	if path == "" {
		b.Skip("no GeoLite2 City database: set EDGEMAP_GEOLITE2 or run testdata/bench/peers.sh's setup")
	}
	var g *Geo
	for b.Loop() {
		var err error
		if g, err = OpenGeo(path); err != nil {
			b.Fatal(err)
		}
	}
	x := g.v6
	b.ReportMetric(float64(4*(len(x.root)+len(x.runs)+len(x.narrow)+len(x.wideZero)+len(x.narrowZero))+int(unsafe.Sizeof(v6Node{}))*len(x.wide)+8*len(x.at32))/(1<<20), "v6-index-MiB")
	b.ReportMetric(float64(4*len(g.v4))/(1<<20), "v4-table-MiB")
	b.ReportMetric(float64(4*len(g.v4Groups)+int(unsafe.Sizeof(v4Piece{}))*len(g.v4Pieces))/(1<<20), "v4-pieces-MiB")
}

// BenchmarkLocate is Locate alone on a real GeoLite2 City database, for
// IPv4 /24s and IPv6 /48s as ECS options carry them (the addresses as
// BenchmarkQueryECSFamily in package resolver draws them, simpler).
func BenchmarkLocate(b *testing.B) {
	path := geoLite2Path()
	if path == "" {
		b.Skip("no GeoLite2 City database: set EDGEMAP_GEOLITE2 or run testdata/bench/peers.sh's setup")
	}
	g, err := OpenGeo(path)
	if err != nil {
		b.Fatal(err)
	}
	rnd := rand.New(rand.NewPCG(1, 1))
	var v4, v6 []netip.Addr
	var nets6 []netip.Prefix
	for res := range g.tree.Networks() {
		if p := res.Prefix(); p.Addr().Is6() {
			nets6 = append(nets6, p)
		}
	}
	for len(v4) < 1<<16 {
		ecs, _ := netip.AddrFrom4([4]byte{byte(rnd.Uint32()), byte(rnd.Uint32()), byte(rnd.Uint32())}).Prefix(24)
		if p, _ := g.LocateTree(ecs.Addr()); p != nil {
			v4 = append(v4, ecs.Addr())
		}
	}
	for len(v6) < 1<<16 {
		ecs, _ := randomAddr6(rnd, nets6[rnd.IntN(len(nets6))]).Prefix(48)
		v6 = append(v6, ecs.Addr())
	}
	for _, c := range []struct {
		name  string
		addrs []netip.Addr
	}{{"v4-24", v4}, {"v6-48", v6}, {"v6-48-tree", v6}} {
		locate := g.Locate
		if c.name == "v6-48-tree" {
			locate = g.LocateTree
		}
		b.Run(c.name, func(b *testing.B) {
			located := 0
			for i := 0; b.Loop(); i++ {
				if p, _ := locate(c.addrs[i&(1<<16-1)]); p != nil {
					located++
				}
			}
			if located == 0 {
				b.Fatal("nothing located")
			}
		})
	}
}

// FuzzLocateIndex holds the IPv6 index (and the /24 table) to the tree for
// any address, on the generated database of TestLocateTableMatchesTree:
// the fuzzer steers the address into the networks it finds.
func FuzzLocateIndex(f *testing.F) {
	g, err := openGeo(writeRandomCityDatabase(f, f.TempDir(), 20000), true)
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"2a02::", "2600:1::1", "2001:db8::", "2400:ffff::", "2002:c000:201::", "::ffff:1.2.3.4", "::1.2.3.4", "ff02::1", "1.2.3.4"} {
		f.Add(netip.MustParseAddr(s).AsSlice())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		a, ok := netip.AddrFromSlice(b)
		if !ok {
			return
		}
		p1, n1 := g.Locate(a)
		p2, n2 := g.LocateTree(a)
		if p1 != p2 || n1 != n2 {
			t.Fatalf("%s: index says %v %v, tree %v %v", a, p1, n1, p2, n2)
		}
	})
}

// Locating a client reads the tables and allocates nothing, through the
// /24 table, the IPv6 index and the tree alike.
func TestLocateAllocs(t *testing.T) {
	g, err := openGeo(writeRandomCityDatabase(t, t.TempDir(), 1000), true)
	if err != nil {
		t.Fatal(err)
	}
	var addrs []netip.Addr
	for res := range g.tree.Networks() {
		addrs = append(addrs, res.Prefix().Addr())
	}
	addrs = append(addrs, netip.MustParseAddr("2002:c000:201::"), netip.MustParseAddr("fe80::1"))
	i := 0
	if n := testing.AllocsPerRun(10000, func() {
		g.Locate(addrs[i%len(addrs)])
		i++
	}); n != 0 {
		t.Fatalf("Locate allocates %v times", n)
	}
}
