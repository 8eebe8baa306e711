package config

import (
	"net/netip"
	"time"

	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/store"
)

// The configuration as the admin API answers it and the CLI reads it. These
// are the wire format, kept apart from the store's records so that a change
// of the storage layout (a schema version, a fleet's etcd keys) is a change
// of the conversions below, never of what clients see.

// Zone is the served zone. Serial is the store's: it goes up with every
// configuration change. The timers are those served, defaults filled in.
type Zone struct {
	Name        string       `json:"name"`
	NameServers []NameServer `json:"nameservers"`
	Contact     string       `json:"contact"`
	Serial      uint32       `json:"serial"`
	TTL         uint32       `json:"ttl"`
	NSTTL       uint32       `json:"ns_ttl"`
	Refresh     uint32       `json:"refresh"`
	Retry       uint32       `json:"retry"`
	Expire      uint32       `json:"expire"`
	Minimum     uint32       `json:"minimum"`
}

// Record is a static record of the zone.
type Record struct {
	Name  string `json:"name"`
	Type  string `json:"type"`
	Value string `json:"value"`
	TTL   uint32 `json:"ttl"`
}

// NameServer is one NS record, with glue when it is in the zone.
type NameServer struct {
	Name string     `json:"name"`
	IPv4 netip.Addr `json:"ipv4,omitzero"`
	IPv6 netip.Addr `json:"ipv6,omitzero"`
}

// Edge is one edge server. Capacity 0 is unlimited; Check "" is none.
type Edge struct {
	ID       string     `json:"id"`
	IPv4     netip.Addr `json:"ipv4,omitzero"`
	IPv6     netip.Addr `json:"ipv6,omitzero"`
	Lat      float64    `json:"lat"`
	Lon      float64    `json:"lon"`
	Pool     string     `json:"pool"`
	Capacity int        `json:"capacity,omitempty"`
	Check    string     `json:"check,omitempty"`
	Draining bool       `json:"draining,omitempty"`
}

// EdgeState is an edge as the API lists it: its configuration, and its
// state in the published map: "up", "down" (its check or agent says so;
// Health says which, since when and why) or "draining" (edge drain).
type EdgeState struct {
	Edge
	State  string      `json:"state"`
	Health *EdgeHealth `json:"health,omitempty"`
}

// EdgeHealth is an edge's health as the name server decided it: what said
// so (check, agent, persisted: as before a restart; none: nothing has),
// since when, and why.
type EdgeHealth struct {
	Up     bool      `json:"up"`
	Source string    `json:"source"`
	Since  time.Time `json:"since,omitzero"`
	Reason string    `json:"reason,omitempty"`
}

// EdgeStateOf is a stored edge with its health in the published map (nil:
// not in it yet).
func EdgeStateOf(e store.Edge, h *mapping.Health) EdgeState {
	s := EdgeState{Edge: EdgeOf(e), State: "up"}
	if h != nil {
		s.Health = &EdgeHealth{Up: h.Up, Source: string(h.Source), Since: h.Since, Reason: h.Reason}
		if !h.Up {
			s.State = "down"
		}
	}
	if e.Draining {
		s.State = "draining"
	}
	return s
}

// Property is a customer hostname. AllDown "" is the default, serve-best.
type Property struct {
	Name    string   `json:"name"`
	Pools   []string `json:"pools"`
	TTL     uint32   `json:"ttl"`
	Answers int      `json:"answers"`
	AllDown string   `json:"all_down,omitempty"`
}

// Target is a client network the probes measure.
type Target struct {
	Block netip.Prefix   `json:"block"`
	Probe netip.AddrPort `json:"probe"`
}

// MeasuredTarget is a target with what each edge measured of it.
type MeasuredTarget struct {
	Target
	Measured []EdgeMeasurement `json:"measured"`
}

// EdgeMeasurement is one edge's smoothed measurement of a target, and the
// latest report's own RTT.
type EdgeMeasurement struct {
	Edge    string    `json:"edge"`
	RTTMs   float64   `json:"rtt_ms"`
	Loss    float64   `json:"loss"`
	LastRTT float64   `json:"last_rtt_ms"`
	At      time.Time `json:"at"`
	Samples uint64    `json:"samples"`
}

// Key is a probe agent's key as listed: never with its secret, except in
// the answer to the request that created it.
type Key struct {
	ID      string    `json:"id"`
	Edge    string    `json:"edge"`
	Created time.Time `json:"created"`
	Secret  string    `json:"secret,omitempty"`
}

// KeySpec is a request for a new key.
type KeySpec struct {
	ID   string `json:"id"`
	Edge string `json:"edge"`
}

// ApplyResult is what an apply changed: the records as lists for people,
// and the Diff with every field's old and new value.
type ApplyResult struct {
	// DryRun: nothing was changed; the rest says what would be.
	DryRun  bool     `json:"dry_run,omitempty"`
	Changed bool     `json:"changed"`
	Serial  uint32   `json:"serial"`
	Created []string `json:"created"`
	Updated []string `json:"updated"`
	Deleted []string `json:"deleted"`
	Diff    Diff     `json:"diff"`
}

// ZoneOf is a stored zone as the API shows it.
func ZoneOf(z store.Zone) Zone {
	t := TimersOf(&z)
	out := Zone{Name: z.Name, Contact: z.Contact, Serial: z.Serial, NameServers: make([]NameServer, len(z.NameServers)),
		TTL: t.TTL, NSTTL: t.NSTTL, Refresh: t.Refresh, Retry: t.Retry, Expire: t.Expire, Minimum: t.Minimum}
	for i, ns := range z.NameServers {
		out.NameServers[i] = NameServer(ns)
	}
	return out
}

// EdgeOf is a stored edge as the API shows it.
func EdgeOf(e store.Edge) Edge { return Edge(e) }

// PropertyOf is a stored property as the API shows it.
func PropertyOf(p store.Property) Property { return Property(p) }

// RecordOf is a stored record as the API shows it; a record from before
// records had their TTL written (0) shows the zone's.
func RecordOf(r store.Record, zoneTTL uint32) Record {
	if r.TTL == 0 {
		r.TTL = zoneTTL
	}
	return Record(r)
}

// RecordsOf are the records of c as the API lists them.
func RecordsOf(c store.Config) []Record {
	ttl := TimersOf(c.Zone).TTL
	return convert(c.Records, func(r store.Record) Record { return RecordOf(r, ttl) })
}

// KeyOf is a stored key as the API lists it, without its secret.
func KeyOf(k store.Key) Key { return Key{ID: k.ID, Edge: k.Edge, Created: k.Created} }

// KeysOf is a list of stored keys as the API lists them.
func KeysOf(ks []store.Key) []Key { return convert(ks, KeyOf) }

// EdgesOf is a list of stored edges as the API shows them.
func EdgesOf(es []store.Edge) []Edge { return convert(es, EdgeOf) }

// PropertiesOf is a list of stored properties as the API shows them.
func PropertiesOf(ps []store.Property) []Property { return convert(ps, PropertyOf) }

func convert[S, T any](in []S, f func(S) T) []T {
	out := make([]T, len(in))
	for i := range in {
		out[i] = f(in[i])
	}
	return out
}
