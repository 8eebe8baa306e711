package config

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"

	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/probe"
	"github.com/edgemap/edgemap/store"
)

// The specs are what people write: the admin API's request bodies and the
// world file's records. Optional fields are pointers so that a PATCH can
// tell "absent, keep" from "zero", and addresses are strings so that a bad
// one is reported with its field name rather than as a bare parse error.

// ZoneSpec is the zone as written: PUT /v1/zone, a world file's zone. The
// zone is one record: a timer left out (0) is its default
// (mapping.DefaultTimers), not the value it had.
type ZoneSpec struct {
	Name        string   `json:"name" yaml:"name"`
	Contact     string   `json:"contact" yaml:"contact"`
	NameServers []NSSpec `json:"nameservers" yaml:"nameservers"`
	// TTL is the SOA's TTL and that of static records that set none;
	// NSTTL the NS records' and the name servers' addresses'.
	TTL   uint32 `json:"ttl,omitempty" yaml:"ttl"`
	NSTTL uint32 `json:"ns_ttl,omitempty" yaml:"ns_ttl"`
	// The SOA timers; Minimum is the negative-caching TTL.
	Refresh uint32 `json:"refresh,omitempty" yaml:"refresh"`
	Retry   uint32 `json:"retry,omitempty" yaml:"retry"`
	Expire  uint32 `json:"expire,omitempty" yaml:"expire"`
	Minimum uint32 `json:"minimum,omitempty" yaml:"minimum"`
}

// NSSpec is one name server, with its glue addresses when in the zone.
type NSSpec struct {
	Name string `json:"name" yaml:"name"`
	IPv4 string `json:"ipv4,omitempty" yaml:"ipv4"`
	IPv6 string `json:"ipv6,omitempty" yaml:"ipv6"`
}

// EdgeSpec is an edge as written; in a PATCH, absent fields are kept.
type EdgeSpec struct {
	ID       string   `json:"id" yaml:"id"`
	IPv4     *string  `json:"ipv4,omitempty" yaml:"ipv4"`
	IPv6     *string  `json:"ipv6,omitempty" yaml:"ipv6"`
	Lat      *float64 `json:"lat,omitempty" yaml:"lat"`
	Lon      *float64 `json:"lon,omitempty" yaml:"lon"`
	Pool     *string  `json:"pool,omitempty" yaml:"pool"`
	Capacity *int     `json:"capacity,omitempty" yaml:"capacity"`
	Check    *string  `json:"check,omitempty" yaml:"check"`
}

// PropertySpec is a property as written; in a PATCH, absent fields are
// kept.
type PropertySpec struct {
	Name    string   `json:"name" yaml:"name"`
	Pools   []string `json:"pools,omitempty" yaml:"pools"`
	TTL     *uint32  `json:"ttl,omitempty" yaml:"ttl"`
	Answers *int     `json:"answers,omitempty" yaml:"answers"`
	AllDown *string  `json:"all_down,omitempty" yaml:"all_down"`
}

// RecordSpec is a static record as written: POST /v1/records, a world
// file's records. Value is as mapping.ParseRecordData reads it; TTL left
// out is the zone's TTL when the record is written.
type RecordSpec struct {
	Name  string  `json:"name" yaml:"name"`
	Type  string  `json:"type" yaml:"type"`
	Value string  `json:"value" yaml:"value"`
	TTL   *uint32 `json:"ttl,omitempty" yaml:"ttl"`
}

// TargetSpec is a target as written.
type TargetSpec struct {
	Block string `json:"block" yaml:"block"`
	Probe string `json:"probe" yaml:"probe"`
}

// WorldSpec is a whole declared configuration: a world file, the body of
// POST /v1/apply. A list left out (nil, JSON null) is not declared, which
// `apply --prune` tells from an empty one (see ApplyTo), so none of them
// is omitempty.
type WorldSpec struct {
	Zone       *ZoneSpec      `json:"zone,omitempty" yaml:"zone"`
	Edges      []EdgeSpec     `json:"edges" yaml:"edges"`
	Properties []PropertySpec `json:"properties" yaml:"properties"`
	Targets    []TargetSpec   `json:"targets" yaml:"targets"`
	Records    []RecordSpec   `json:"records" yaml:"records"`
}

// Defaults and bounds of what a property may leave out.
const (
	// DefaultTTL is 20 s: short, so that a changed map reaches users fast.
	DefaultTTL = 20
	// DefaultAnswers is one edge per answer.
	DefaultAnswers = 1
	// MaxTTL is a day, the longest a resolver should keep a map's answer.
	MaxTTL = 86400
)

// ErrConflict is returned (inside a FieldError naming the key) when a
// create names a record that exists already. Missing records are
// store.ErrNotFound.
var ErrConflict = errors.New("already exists")

// NotFound is the FieldError of a record that does not exist.
func NotFound(field, what string) error {
	return &mapping.FieldError{Field: field, Msg: what + " does not exist", Err: store.ErrNotFound}
}

func conflict(field, format string, args ...any) error {
	return &mapping.FieldError{Field: field, Msg: fmt.Sprintf(format, args...), Err: ErrConflict}
}

// Zone checks the spec and makes the zone it describes, with old's serial
// (the store's to change).
func (s ZoneSpec) Zone(old *store.Zone) (store.Zone, error) {
	var z store.Zone
	var err error
	if z.Name, err = HostName("name", s.Name); err != nil {
		return z, err
	}
	if z.Contact, err = Mailbox("contact", s.Contact); err != nil {
		return z, err
	}
	if len(s.NameServers) == 0 {
		return z, mapping.FieldErrorf("nameservers", "at least one name server is required")
	}
	seen := map[string]bool{}
	for i, ns := range s.NameServers {
		field := fmt.Sprintf("nameservers[%d]", i)
		var out store.NameServer
		if out.Name, err = HostName(field+".name", ns.Name); err != nil {
			return z, err
		}
		if seen[out.Name] {
			return z, mapping.FieldErrorf(field+".name", "duplicate name server %s", out.Name)
		}
		seen[out.Name] = true
		if out.IPv4, err = UnicastAddr(field+".ipv4", ns.IPv4, false); err != nil {
			return z, err
		}
		if out.IPv6, err = UnicastAddr(field+".ipv6", ns.IPv6, true); err != nil {
			return z, err
		}
		z.NameServers = append(z.NameServers, out)
	}
	t := s.timers()
	if err := t.Check(""); err != nil {
		return z, err
	}
	// A timer equal to its default is stored as the default, so that
	// writing it out changes nothing.
	d := mapping.DefaultTimers
	def := func(v, dv uint32) uint32 {
		if v == dv {
			return 0
		}
		return v
	}
	z.TTL, z.NSTTL, z.Refresh = def(t.TTL, d.TTL), def(t.NSTTL, d.NSTTL), def(t.Refresh, d.Refresh)
	z.Retry, z.Expire, z.Minimum = def(t.Retry, d.Retry), def(t.Expire, d.Expire), def(t.Minimum, d.Minimum)
	if old != nil {
		z.Serial = old.Serial
	}
	return z, nil
}

func (s ZoneSpec) timers() mapping.Timers {
	return mapping.Timers{TTL: s.TTL, NSTTL: s.NSTTL, Refresh: s.Refresh, Retry: s.Retry, Expire: s.Expire, Minimum: s.Minimum}
}

// TimersOf are a stored zone's timers with their defaults filled in.
func TimersOf(z *store.Zone) mapping.Timers {
	var t mapping.Timers
	if z != nil {
		t = mapping.Timers{TTL: z.TTL, NSTTL: z.NSTTL, Refresh: z.Refresh, Retry: z.Retry, Expire: z.Expire, Minimum: z.Minimum}
	}
	return t.WithDefaults()
}

// Record checks the spec and makes the record it describes; a record that
// sets no TTL gets zoneTTL, as a zone file's records get its $TTL.
func (s RecordSpec) Record(zoneTTL uint32) (store.Record, error) {
	var r store.Record
	name, err := RecordName("name", s.Name)
	if err != nil {
		return r, err
	}
	typ, err := mapping.ParseRecordType("type", s.Type)
	if err != nil {
		return r, err
	}
	data, value, err := mapping.ParseRecordData("value", typ, s.Value)
	if err != nil {
		return r, err
	}
	// The names and addresses in a value follow the rules of the zone's own.
	switch typ {
	case mapping.TypeA, mapping.TypeAAAA:
		_, err = UnicastAddr("value", value, typ == mapping.TypeAAAA)
	case mapping.TypeCNAME:
		_, err = RecordName("value", data.Target)
	case mapping.TypeMX:
		if data.Target != "." {
			_, err = HostName("value", data.Target)
		}
	}
	if err != nil {
		return r, err
	}
	r = store.Record{Name: name, Type: string(typ), Value: value, TTL: zoneTTL}
	if s.TTL != nil {
		r.TTL = *s.TTL
		if r.TTL < 1 || r.TTL > mapping.MaxRecordTTL {
			return r, mapping.FieldErrorf("ttl", "%d is outside 1..%d seconds", r.TTL, mapping.MaxRecordTTL)
		}
	}
	return r, nil
}

// Apply merges the spec onto base (the stored edge for a PATCH, one with
// only the ID for a new one) and checks the result.
func (s EdgeSpec) Apply(base store.Edge, create bool) (store.Edge, error) {
	e := base
	var err error
	if s.IPv4 != nil {
		if e.IPv4, err = UnicastAddr("ipv4", *s.IPv4, false); err != nil {
			return e, err
		}
	}
	if s.IPv6 != nil {
		if e.IPv6, err = UnicastAddr("ipv6", *s.IPv6, true); err != nil {
			return e, err
		}
	}
	if s.Lat != nil {
		e.Lat = *s.Lat
	}
	if s.Lon != nil {
		e.Lon = *s.Lon
	}
	if s.Pool != nil {
		e.Pool = *s.Pool
	}
	if s.Capacity != nil {
		e.Capacity = *s.Capacity
	}
	if s.Check != nil {
		e.Check = *s.Check
		if e.Check != "" {
			if _, err := probe.ParseCheck(e.Check); err != nil {
				return e, mapping.FieldErrorf("check", "%v", err)
			}
		}
	}
	if err := mapping.CheckID("id", e.ID); err != nil {
		return e, err
	}
	if err := mapping.CheckID("pool", e.Pool); err != nil {
		return e, err
	}
	switch {
	case !e.IPv4.IsValid() && !e.IPv6.IsValid():
		return e, mapping.FieldErrorf("ipv4", "an edge needs an IPv4 or an IPv6 address")
	case create && s.Lat == nil:
		return e, mapping.FieldErrorf("lat", "is required")
	case create && s.Lon == nil:
		return e, mapping.FieldErrorf("lon", "is required")
	case math.IsNaN(e.Lat) || e.Lat < -90 || e.Lat > 90:
		return e, mapping.FieldErrorf("lat", "%v is outside -90..90", e.Lat)
	case math.IsNaN(e.Lon) || e.Lon < -180 || e.Lon > 180:
		return e, mapping.FieldErrorf("lon", "%v is outside -180..180", e.Lon)
	case e.Capacity < 0:
		return e, mapping.FieldErrorf("capacity", "%d is negative", e.Capacity)
	}
	return e, nil
}

// Apply merges the spec onto base (the stored property for a PATCH, one
// with only the name for a new one) and checks the result.
func (s PropertySpec) Apply(base store.Property, create bool) (store.Property, error) {
	p := base
	if create {
		p.TTL, p.Answers = DefaultTTL, DefaultAnswers
	}
	if s.Pools != nil {
		p.Pools = slices.Clone(s.Pools)
	}
	if s.TTL != nil {
		p.TTL = *s.TTL
	}
	if s.Answers != nil {
		p.Answers = *s.Answers
	}
	if s.AllDown != nil {
		policy, err := mapping.ParseAllDownPolicy("all_down", *s.AllDown)
		if err != nil {
			return p, err
		}
		p.AllDown = string(policy)
		if policy == mapping.AllDownServeBest {
			p.AllDown = "" // the default, stored as such
		}
	}
	if len(p.Pools) == 0 {
		return p, mapping.FieldErrorf("pools", "at least one pool is required")
	}
	for i, pool := range p.Pools {
		if err := mapping.CheckID(fmt.Sprintf("pools[%d]", i), pool); err != nil {
			return p, err
		}
		if slices.Index(p.Pools, pool) != i {
			return p, mapping.FieldErrorf(fmt.Sprintf("pools[%d]", i), "duplicate pool %q", pool)
		}
	}
	if p.TTL < 1 || p.TTL > MaxTTL {
		return p, mapping.FieldErrorf("ttl", "%d is outside 1..%d seconds", p.TTL, MaxTTL)
	}
	return p, mapping.CheckAnswers("answers", p.Answers)
}

// Target checks the spec and makes the target it describes.
func (s TargetSpec) Target() (store.Target, error) {
	var t store.Target
	block, err := netip.ParsePrefix(s.Block)
	if err != nil {
		return t, mapping.FieldErrorf("block", "%q is not a network (e.g. 203.0.113.0/24)", s.Block)
	}
	if block != block.Masked() {
		return t, mapping.FieldErrorf("block", "%s has host bits set; did you mean %s?", block, block.Masked())
	}
	if block.Addr().Is4In6() || block.Addr().Zone() != "" {
		return t, mapping.FieldErrorf("block", "%s: give a plain IPv4 or IPv6 network", block)
	}
	probe, err := netip.ParseAddrPort(s.Probe)
	if err != nil {
		return t, mapping.FieldErrorf("probe", "%q is not an address:port (e.g. 203.0.113.10:443)", s.Probe)
	}
	if !block.Contains(probe.Addr()) {
		return t, mapping.FieldErrorf("probe", "%s is not inside %s: a target is measured through an address in it", probe.Addr(), block)
	}
	if probe.Port() == 0 {
		return t, mapping.FieldErrorf("probe", "port 0 cannot be connected to")
	}
	return store.Target{Block: block, Probe: probe}, nil
}
