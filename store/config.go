package store

import (
	"net/netip"
	"slices"
)

// Config is the whole operator-managed configuration: what `edgemap apply`
// describes and what the admin API edits. It is plain data; validation of
// names and ranges belongs to the caller (the admin API), because the store
// knows nothing of DNS.
type Config struct {
	// Zone is nil until the operator sets one.
	Zone *Zone `json:"zone,omitempty"`
	// Edges are sorted by ID.
	Edges []Edge `json:"edges"`
	// Properties are sorted by Name.
	Properties []Property `json:"properties"`
	// Targets are sorted by Block (as text).
	Targets []Target `json:"targets"`
	// Records are the zone's static records, sorted by Key.
	Records []Record `json:"records"`
}

// Clone is a copy of c that shares no memory with it.
func (c Config) Clone() Config {
	out := Config{
		Edges:      slices.Clone(c.Edges),
		Properties: slices.Clone(c.Properties),
		Targets:    slices.Clone(c.Targets),
		Records:    slices.Clone(c.Records),
	}
	if c.Zone != nil {
		z := *c.Zone
		z.NameServers = slices.Clone(z.NameServers)
		out.Zone = &z
	}
	for i := range out.Properties {
		out.Properties[i].Pools = slices.Clone(out.Properties[i].Pools)
	}
	return out
}

// Target is a client network that probes measure (a map unit): clients
// inside Block are answered by the measurements to Probe.
type Target struct {
	Block netip.Prefix   `json:"block"`
	Probe netip.AddrPort `json:"probe"`
}

// Zone is the CDN's own DNS zone.
type Zone struct {
	// Name is a lower-case fully qualified domain name ("cdn.example.net.").
	Name string `json:"name"`
	// NameServers are the zone's NS records, in the operator's order.
	NameServers []NameServer `json:"nameservers"`
	// Contact is the SOA RNAME as a domain name ("hostmaster.example.net.").
	Contact string `json:"contact"`
	// Serial is the SOA serial. The store bumps it on every configuration
	// change that alters anything, so secondaries and humans can see it.
	Serial uint32 `json:"serial"`
	// The zone's TTLs and SOA timers in seconds; 0 is the default, which
	// is the map's to know (a file from before they existed reads so).
	TTL     uint32 `json:"ttl,omitempty"`
	NSTTL   uint32 `json:"ns_ttl,omitempty"`
	Refresh uint32 `json:"refresh,omitempty"`
	Retry   uint32 `json:"retry,omitempty"`
	Expire  uint32 `json:"expire,omitempty"`
	Minimum uint32 `json:"minimum,omitempty"`
}

// NameServer is one NS record and, for an in-zone name, its glue.
type NameServer struct {
	Name string     `json:"name"`
	IPv4 netip.Addr `json:"ipv4,omitzero"`
	IPv6 netip.Addr `json:"ipv6,omitzero"`
}

// Edge is one edge server or cluster VIP.
type Edge struct {
	ID   string     `json:"id"`
	IPv4 netip.Addr `json:"ipv4,omitzero"`
	IPv6 netip.Addr `json:"ipv6,omitzero"`
	Lat  float64    `json:"lat"`
	Lon  float64    `json:"lon"`
	Pool string     `json:"pool"`
	// Capacity is answers per second the edge should receive; 0 = unlimited.
	Capacity int `json:"capacity,omitempty"`
	// Check is the name servers' health check of the edge:
	// http://host[:port]/path or tcp://host:port; empty for none.
	Check string `json:"check,omitempty"`
	// Draining edges get no new answers but stay measured.
	Draining bool `json:"draining,omitempty"`
}

// Property is a customer hostname under the zone.
type Property struct {
	// Name is a lower-case fully qualified domain name under the zone.
	Name string `json:"name"`
	// Pools are the edge pools the property may be answered from.
	Pools []string `json:"pools"`
	// TTL of the answers in seconds.
	TTL uint32 `json:"ttl"`
	// Answers is how many edges one answer holds (1..4).
	Answers int `json:"answers"`
	// AllDown is what to answer when every edge is down: "serve-best"
	// (empty means that) or "nodata".
	AllDown string `json:"all_down,omitempty"`
}

// Record is one static record of the zone (TXT, CAA, MX, and addresses or
// aliases of names that are not properties). The store keeps what the
// caller checked and canonicalized.
type Record struct {
	// Name is a lower-case FQDN at or below the zone.
	Name string `json:"name"`
	// Type is the record's type in capitals ("TXT").
	Type string `json:"type"`
	// Value is the record's data in its canonical written form.
	Value string `json:"value"`
	// TTL in seconds; 0 is the zone's.
	TTL uint32 `json:"ttl,omitempty"`
}

// Key identifies a record: its name, type and value, which together are
// unique (a name may have several TXT records, never the same one twice).
// It is the record's key in the file, so a record an error names is found
// with `bbolt get FILE static_records KEY`.
func (r Record) Key() string { return r.Name + " " + r.Type + " " + r.Value }
