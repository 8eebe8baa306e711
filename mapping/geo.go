package mapping

//go:generate go run ../testdata/geoipgen -out ../testdata/GeoIP2-City-Test.mmdb

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/oschwald/geoip2-golang/v2"
	"github.com/oschwald/maxminddb-golang/v2"
)

// ErrNotCityDatabase is returned by OpenGeo when the file is a valid MaxMind
// database of a type without locations (Country, ASN, ...).
var ErrNotCityDatabase = errors.New("not a GeoIP2/GeoLite2 City database")

// Place is a located GeoIP record. Records without coordinates never become
// a Place: a missing location must not be read as 0,0 (Gulf of Guinea).
type Place struct {
	Lat, Lon float64
	City     string
	Country  string
	v        vec3  // the point on the unit sphere, for distances
	idx      int32 // index in its Geo's places, for precomputed rankings
}

// Geo answers "where is this address" from a GeoIP2 City database.
//
// Decoding a MaxMind record allocates (maps of names), so OpenGeo decodes
// every distinct record once and keys the result by the record's offset in
// the data section. A real database's networks are then also indexed by
// the /24 table and the IPv6 index, so that a query reads a few table
// entries instead of walking the tree a node per bit and looking the
// record up in that map; neither allocates. A Geo is immutable and safe for
// concurrent use.
type Geo struct {
	path     string
	db       *geoip2.Reader
	tree     *maxminddb.Reader
	places   []Place
	byOffset map[uintptr]int32 // record offset -> index into places
	records  int               // networks seen at open, for operators
	// v4 answers IPv4 lookups by /24 without walking the tree: gdnsd's
	// trick of precomputing per network rather than searching per query.
	// An entry is the network's prefix length (top 8 bits) and place
	// index + 1 (low 24 bits, 0: no coordinates); v4Split and a group of
	// v4Pieces (low 24 bits) marks a /24 that holds longer networks;
	// v4Unknown one with no data, left to the tree. 2^24 entries: 64 MiB,
	// filled in tens of milliseconds.
	v4 []uint32
	// v4Pieces are the networks longer than /24, in address order, a
	// group per /24 that holds them: group i is
	// v4Pieces[v4Groups[i]:v4Groups[i+1]]. GeoLite2 City splits 1.3% of
	// its /24s into 2.5 million such networks (20 MB here). A walk down
	// the tree is some 25 dependent reads from DRAM, about 2.5 us: for
	// make bench's clients, random /24s, the walks cost 32 ns a query on
	// average, a tenth of the query's time in edgemap's own code.
	v4Groups []uint32
	v4Pieces []v4Piece
	// v6 does the same for IPv6 (see v6Index), built with v4: 23 MiB
	// for GeoLite2 City, and about a third more time to load it.
	v6 *v6Index
}

const (
	v4Unknown = ^uint32(0)
	v4Split   = uint32(0xfe) << 24 // no prefix length is that long
)

// v4Piece is a network longer than /24: the range of last octets it
// covers and its entry (as in Geo.v4).
type v4Piece struct {
	entry       uint32
	first, last uint8
}

// OpenGeo loads a GeoIP2 or GeoLite2 City database. The file is read into
// memory rather than mapped: an old Geo can still be in use by in-flight
// queries after a reload, and unmapping it under them would crash the
// process, while the garbage collector frees a byte slice only when nothing
// reads it any more.
func OpenGeo(path string) (*Geo, error) { return openGeo(path, false) }

// v4TableMin is the size from which a database gets the /24 table: a real
// GeoIP database has millions of networks; a small test one is cheaper to
// walk than 64 MiB are to fill.
const v4TableMin = 100_000

func openGeo(path string, forceTable bool) (*Geo, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("geoip: %w", err)
	}
	tree, err := maxminddb.OpenBytes(raw)
	if err != nil {
		return nil, fmt.Errorf("geoip %s: %w", path, err)
	}
	kind := tree.Metadata.DatabaseType
	if !strings.Contains(kind, "City") && !strings.Contains(kind, "Enterprise") {
		return nil, fmt.Errorf("geoip %s: database type %q: %w", path, kind, ErrNotCityDatabase)
	}
	db, err := geoip2.OpenBytes(raw)
	if err != nil {
		return nil, fmt.Errorf("geoip %s: %w", path, err)
	}
	g := &Geo{path: path, db: db, tree: tree, byOffset: make(map[uintptr]int32)}
	var v6 *v6Builder
	if forceTable || tree.Metadata.NodeCount >= v4TableMin {
		g.v4 = make([]uint32, 1<<24)
		for i := range g.v4 {
			g.v4[i] = v4Unknown
		}
		v6 = newV6Builder()
	}
	for res := range tree.Networks() {
		if err := res.Err(); err != nil {
			return nil, fmt.Errorf("geoip %s: walking networks: %w", path, err)
		}
		g.records++
		off := res.Offset()
		idx, seen := g.byOffset[off]
		if seen {
			g.fill(v6, res.Prefix(), idx)
			continue
		}
		var rec geoip2.City
		if err := res.Decode(&rec); err != nil {
			return nil, fmt.Errorf("geoip %s: record for %s: %w", path, res.Prefix(), err)
		}
		if !rec.Location.HasCoordinates() {
			g.byOffset[off] = -1
			g.fill(v6, res.Prefix(), -1)
			continue
		}
		g.byOffset[off] = int32(len(g.places))
		lat, lon := *rec.Location.Latitude, *rec.Location.Longitude
		g.places = append(g.places, Place{
			idx:     int32(len(g.places)),
			Lat:     lat,
			Lon:     lon,
			v:       unitVector(lat, lon),
			City:    rec.City.Names.English,
			Country: rec.Country.ISOCode,
		})
		g.fill(v6, res.Prefix(), g.byOffset[off])
	}
	if v6 != nil {
		g.v6 = v6.finish()
	}
	if g.v4 != nil {
		// The end of the last group of pieces.
		g.v4Groups = append(g.v4Groups, uint32(len(g.v4Pieces)))
	}
	return g, nil
}

// fill records a network in the IPv4 /24 table (when it is /24 or
// shorter) or the IPv6 index v6. A place index or a prefix length that
// does not fit an entry leaves the network to the tree.
func (g *Geo) fill(v6 *v6Builder, p netip.Prefix, place int32) {
	if g.v4 == nil || int(place)+1 >= 1<<24 {
		return
	}
	v := uint32(p.Bits())<<24 | uint32(place+1)
	if !p.Addr().Is4() {
		if p.Bits() < 128 {
			v6.insert(p, v)
		}
		return
	}
	a := p.Masked().Addr().As4()
	first := uint32(a[0])<<16 | uint32(a[1])<<8 | uint32(a[2])
	if p.Bits() > 24 {
		g.fillPiece(first, a[3], p.Bits(), v)
		return
	}
	for i := range uint32(1) << (24 - p.Bits()) {
		g.v4[first+i] = v
	}
}

// fillPiece records a network longer than /24, at last octet first of
// the /24 block24. The tree yields networks in address order, so a /24's
// pieces come one after another; a network seen again (an alias of the
// IPv4 tree) is already recorded.
func (g *Geo) fillPiece(block24 uint32, first uint8, bits int, v uint32) {
	group := uint32(len(g.v4Groups)) - 1
	switch e := g.v4[block24]; {
	case e == v4Unknown && len(g.v4Groups) < 1<<24:
		group++
		g.v4Groups = append(g.v4Groups, uint32(len(g.v4Pieces)))
		g.v4[block24] = v4Split | group
	case e != v4Split|group:
		return
	case g.v4Pieces[len(g.v4Pieces)-1].last >= first:
		return
	}
	g.v4Pieces = append(g.v4Pieces, v4Piece{entry: v, first: first, last: first | uint8(1<<(32-bits)-1)})
}

// v4Entry is the entry of an IPv4 address: its /24's, or of a split /24
// the entry of the piece that holds it (v4Unknown in a gap, where the
// database has no data).
func (g *Geo) v4Entry(a [4]byte) uint32 {
	e := g.v4[uint32(a[0])<<16|uint32(a[1])<<8|uint32(a[2])]
	if e&^(1<<24-1) == v4Split {
		return g.v4Piece(e, a[3])
	}
	return e
}

// v4Piece is the entry of the piece holding last octet octet of the split
// /24 whose entry is split.
func (g *Geo) v4Piece(split uint32, octet uint8) uint32 {
	group := split & (1<<24 - 1)
	pieces := g.v4Pieces[g.v4Groups[group]:g.v4Groups[group+1]]
	// The last piece that starts at or before the octet; a binary search
	// by hand, so that nothing escapes.
	lo, hi := 0, len(pieces)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if pieces[mid].first <= octet {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo == 0 || pieces[lo-1].last < octet {
		return v4Unknown
	}
	return pieces[lo-1].entry
}

// Path is the file the database was loaded from.
func (g *Geo) Path() string { return g.path }

// Networks is how many networks the database holds.
func (g *Geo) Networks() int { return g.records }

// Built is when the database was built (its metadata's build epoch):
// MaxMind publishes twice a week, so an old one places moved networks
// wrong.
func (g *Geo) Built() time.Time { return g.tree.Metadata.BuildTime().UTC() }

// Describe is the database's type and build time, for logs and the API.
func (g *Geo) Describe() string {
	m := g.tree.Metadata
	return fmt.Sprintf("%s built %s", m.DatabaseType, m.BuildTime().UTC().Format("2006-01-02"))
}

// Locate returns the place of addr, or nil when the database has no
// coordinates for it, and the database network that decided that: the
// answer depends on nothing finer than this prefix, which is what the ECS
// scope must say. IPv4 networks come back with IPv4 prefix lengths.
func (g *Geo) Locate(addr netip.Addr) (*Place, netip.Prefix) {
	addr = addr.Unmap()
	switch {
	case g.v4 == nil:
	case addr.Is4():
		if v := g.v4Entry(addr.As4()); v != v4Unknown {
			return g.entry(addr, v)
		}
	case addr.Is6():
		if v := g.v6.lookup(leftAligned(addr)); v != 0 {
			return g.entry(addr, v)
		}
	}
	return g.LocateTree(addr)
}

// locateEntry is Locate's answer for addr from its /24 table or IPv6
// index entry as Prefetch read it: 0 where the tree decides.
func (g *Geo) locateEntry(addr netip.Addr, v uint32) (*Place, netip.Prefix) {
	if v == 0 {
		return g.LocateTree(addr)
	}
	return g.entry(addr, v)
}

// entry is Locate's answer from a table entry for addr.
func (g *Geo) entry(addr netip.Addr, v uint32) (*Place, netip.Prefix) {
	network, _ := addr.Prefix(int(v >> 24))
	if i := v & (1<<24 - 1); i > 0 {
		return &g.places[i-1], network
	}
	return nil, network
}

// LocateTree is Locate by walking the database's tree, without the /24
// table and the IPv6 index: the reference they are tested against.
func (g *Geo) LocateTree(addr netip.Addr) (*Place, netip.Prefix) {
	res := g.tree.Lookup(addr.Unmap())
	network := res.Prefix()
	if res.Err() != nil || !res.Found() {
		return nil, network
	}
	i, ok := g.byOffset[res.Offset()]
	if !ok || i < 0 {
		return nil, network
	}
	return &g.places[i], network
}
