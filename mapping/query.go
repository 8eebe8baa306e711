package mapping

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
)

// Query is what a DNS query says about whom its answer is for.
type Query struct {
	// Source is the address the query came from: a resolver, or a stub
	// asking directly. The zero Addr when unknown (explain).
	Source netip.Addr
	// ECS is the query's EDNS Client Subnet network (RFC 7871): the
	// address masked to the SOURCE PREFIX-LENGTH, IPv4-mapped when the
	// option's family was 2 with such an address. The zero Prefix when the
	// query has no ECS option or one of family 0.
	ECS netip.Prefix
}

// specialNets are the special-purpose networks (RFC 6890) whose addresses
// say nothing about where a user is: an ECS network inside one of them is
// not used, and the query's source address decides instead. PowerDNS
// Recursor's default ecs-add-for leaves out the same private, shared,
// loopback and link-local networks for the same reason, and sends them on
// only when told to pass on what its clients send. The documentation and
// benchmarking networks are not here: only labs and tests use them, as if
// they were public, and the test GeoIP database places them. Read-only.
var specialNets = [...]struct {
	prefix netip.Prefix
	what   string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), `"this network" (RFC 791)`},
	{netip.MustParsePrefix("10.0.0.0/8"), "private-use (RFC 1918)"},
	{netip.MustParsePrefix("100.64.0.0/10"), "shared address space, carrier-grade NAT (RFC 6598)"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback (RFC 1122)"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local (RFC 3927)"},
	{netip.MustParsePrefix("172.16.0.0/12"), "private-use (RFC 1918)"},
	{netip.MustParsePrefix("192.168.0.0/16"), "private-use (RFC 1918)"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast (RFC 5771)"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved, and broadcast (RFC 1112, RFC 919)"},
	{netip.MustParsePrefix("::/128"), "the unspecified address (RFC 4291)"},
	{netip.MustParsePrefix("::1/128"), "loopback (RFC 4291)"},
	{netip.MustParsePrefix("fc00::/7"), "unique local (RFC 4193)"},
	{netip.MustParsePrefix("fe80::/10"), "link-local (RFC 4291)"},
	{netip.MustParsePrefix("ff00::/8"), "multicast (RFC 4291)"},
}

// specialRange returns the special-purpose network that holds all of ecs (an
// unmapped, masked prefix), and what it is. The networks do not nest, so
// at most one does.
func specialRange(ecs netip.Prefix) (netip.Prefix, string, bool) {
	for i := range specialNets {
		if r := specialNets[i].prefix; r.Bits() <= ecs.Bits() && r.Contains(ecs.Addr()) {
			return r, specialNets[i].what, true
		}
	}
	return netip.Prefix{}, "", false
}

// clearOfSpecial is the shortest prefix length, from base up, at which
// client's network holds no special-purpose network; the full length when
// client is in one. A network of client overlaps a special network it is
// not in only by holding it whole, that is while its length is at most
// the special one's and the bits client shares with it, so one pass
// finds the answer without trying each length.
func clearOfSpecial(client netip.Addr, base int) int {
	scope := base
	for i := range specialNets {
		r := specialNets[i].prefix
		if r.Addr().BitLen() != client.BitLen() {
			continue
		}
		shared := min(r.Bits(), commonBits(client, r.Addr()))
		if shared == r.Bits() {
			return client.BitLen()
		}
		scope = max(scope, shared+1)
	}
	return scope
}

// commonBits is how many leading bits a and b, of one family, share.
func commonBits(a, b netip.Addr) int {
	if a.Is4() {
		x, y := a.As4(), b.As4()
		return bits.LeadingZeros32(binary.BigEndian.Uint32(x[:]) ^ binary.BigEndian.Uint32(y[:]))
	}
	x, y := a.As16(), b.As16()
	if hi := binary.BigEndian.Uint64(x[:8]) ^ binary.BigEndian.Uint64(y[:8]); hi != 0 {
		return bits.LeadingZeros64(hi)
	}
	return 64 + bits.LeadingZeros64(binary.BigEndian.Uint64(x[8:])^binary.BigEndian.Uint64(y[8:]))
}

// unmapPrefix is p with an IPv4-mapped address as the IPv4 prefix it
// stands for, and how many bits the mapping added (96, else 0).
func unmapPrefix(p netip.Prefix) (netip.Prefix, int) {
	if !p.Addr().Is4In6() {
		return p, 0
	}
	// A masked IPv4-mapped prefix is at least /96: a shorter one would
	// have cleared the ffff that makes it mapped.
	return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96), 96
}

// DecideQuery is Decide for a DNS query. The ECS address decides, unless
// the query has none, its source prefix is 0 (the resolver asks for an
// answer not tailored to its client), or it lies inside
// a special-purpose network; then the query's source address decides.
//
// It also sets d.ECSScope, the SCOPE PREFIX-LENGTH the answer carries:
// the answer may be reused by the resolver for every client whose ECS
// falls inside it (RFC 7871 7.3.1), so it never covers a client that
// would be answered otherwise:
//   - decided by the ECS address: the decision's scope, narrowed until it
//     covers no special-purpose network (those are answered for the
//     resolver), never longer than the source prefix;
//   - decided by the source because the ECS network is special: that
//     network's length (10.1.2.0/24 gives 8), because every client of the
//     same resolver in it is answered for the same source address;
//   - an answer that is the same for every client (no edge of the family,
//     or every edge down with the nodata policy) and a source prefix of 0:
//     0.
//
// Like Decide it is allocation-free and safe for concurrent use.
func (s *Snapshot) DecideQuery(p *Property, q Query, v6 bool, d *Decision) {
	ecs, mapped := unmapPrefix(q.ECS)
	client := q.Source.Unmap()
	var special netip.Prefix
	var why string
	byECS := false
	if ecs.Bits() > 0 { // -1 without ECS
		var ok bool
		if special, why, ok = specialRange(ecs); !ok {
			client, byECS = ecs.Addr(), true
		}
	}
	s.Decide(p, client, v6, d)
	d.ByECS, d.ECSUnused = byECS, why
	switch {
	case d.N == 0 || ecs.Bits() <= 0:
		d.ECSScope = 0
	case byECS:
		scope := clearOfSpecial(client, d.Scope)
		if scope > 0 {
			// Counted in bits of the option's family, or an IPv4 /24
			// would claim the answer for all of ::/24.
			scope += mapped
		}
		// Never claim more than the resolver told us (RFC 7871 7.2.1).
		d.ECSScope = min(scope, q.ECS.Bits())
	default:
		d.ECSScope = special.Bits() + mapped
	}
}
