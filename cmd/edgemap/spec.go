package main

import (
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

type zoneSpec struct {
	Name        string   `json:"name" yaml:"name"`
	Contact     string   `json:"contact" yaml:"contact"`
	NameServers []nsSpec `json:"nameservers" yaml:"nameservers"`
}

type nsSpec struct {
	Name string `json:"name" yaml:"name"`
	IPv4 string `json:"ipv4,omitempty" yaml:"ipv4"`
	IPv6 string `json:"ipv6,omitempty" yaml:"ipv6"`
}

type edgeSpec struct {
	ID       string   `json:"id" yaml:"id"`
	IPv4     *string  `json:"ipv4,omitempty" yaml:"ipv4"`
	IPv6     *string  `json:"ipv6,omitempty" yaml:"ipv6"`
	Lat      *float64 `json:"lat,omitempty" yaml:"lat"`
	Lon      *float64 `json:"lon,omitempty" yaml:"lon"`
	Pool     *string  `json:"pool,omitempty" yaml:"pool"`
	Capacity *int     `json:"capacity,omitempty" yaml:"capacity"`
	Check    *string  `json:"check,omitempty" yaml:"check"`
}

type propertySpec struct {
	Name    string   `json:"name" yaml:"name"`
	Pools   []string `json:"pools,omitempty" yaml:"pools"`
	TTL     *uint32  `json:"ttl,omitempty" yaml:"ttl"`
	Answers *int     `json:"answers,omitempty" yaml:"answers"`
	AllDown *string  `json:"all_down,omitempty" yaml:"all_down"`
}

type targetSpec struct {
	Block string `json:"block" yaml:"block"`
	Probe string `json:"probe" yaml:"probe"`
}

// worldSpec is a whole declared configuration (`edgemap apply`).
type worldSpec struct {
	Zone       *zoneSpec      `json:"zone,omitempty" yaml:"zone"`
	Edges      []edgeSpec     `json:"edges" yaml:"edges"`
	Properties []propertySpec `json:"properties" yaml:"properties"`
	Targets    []targetSpec   `json:"targets,omitempty" yaml:"targets"`
}

// Defaults for what a property may leave out.
const (
	defaultTTL     = 20 // seconds: short, so that a changed map reaches users fast
	defaultAnswers = 1
	maxTTL         = 86400
)

func notFound(field, what string) error {
	return &mapping.FieldError{Field: field, Msg: what + " does not exist", Err: store.ErrNotFound}
}

func (s zoneSpec) toZone(old *store.Zone) (store.Zone, error) {
	var z store.Zone
	var err error
	if z.Name, err = hostName("name", s.Name); err != nil {
		return z, err
	}
	if z.Contact, err = mailbox("contact", s.Contact); err != nil {
		return z, err
	}
	if len(s.NameServers) == 0 {
		return z, mapping.FieldErrorf("nameservers", "at least one name server is required")
	}
	seen := map[string]bool{}
	for i, ns := range s.NameServers {
		field := fmt.Sprintf("nameservers[%d]", i)
		var out store.NameServer
		if out.Name, err = hostName(field+".name", ns.Name); err != nil {
			return z, err
		}
		if seen[out.Name] {
			return z, mapping.FieldErrorf(field+".name", "duplicate name server %s", out.Name)
		}
		seen[out.Name] = true
		if out.IPv4, err = unicastAddr(field+".ipv4", ns.IPv4, false); err != nil {
			return z, err
		}
		if out.IPv6, err = unicastAddr(field+".ipv6", ns.IPv6, true); err != nil {
			return z, err
		}
		z.NameServers = append(z.NameServers, out)
	}
	if old != nil {
		z.Serial = old.Serial
	}
	return z, nil
}

// apply merges the spec onto base (the stored edge for a PATCH, one with
// only the ID for a new one) and checks the result.
func (s edgeSpec) apply(base store.Edge, create bool) (store.Edge, error) {
	e := base
	var err error
	if s.IPv4 != nil {
		if e.IPv4, err = unicastAddr("ipv4", *s.IPv4, false); err != nil {
			return e, err
		}
	}
	if s.IPv6 != nil {
		if e.IPv6, err = unicastAddr("ipv6", *s.IPv6, true); err != nil {
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

func (s propertySpec) apply(base store.Property, create bool) (store.Property, error) {
	p := base
	if create {
		p.TTL, p.Answers = defaultTTL, defaultAnswers
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
	if p.TTL < 1 || p.TTL > maxTTL {
		return p, mapping.FieldErrorf("ttl", "%d is outside 1..%d seconds", p.TTL, maxTTL)
	}
	return p, mapping.CheckAnswers("answers", p.Answers)
}

func (s targetSpec) toTarget() (store.Target, error) {
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

// inputs converts stored configuration into the mapping's inputs.
func inputs(c store.Config, geo *mapping.Geo) mapping.Inputs {
	in := mapping.Inputs{Geo: geo}
	if c.Zone != nil {
		z := &mapping.Zone{Name: c.Zone.Name, Contact: c.Zone.Contact, Serial: c.Zone.Serial}
		for _, ns := range c.Zone.NameServers {
			z.NameServers = append(z.NameServers, mapping.NameServer(ns))
		}
		in.Zone = z
	}
	for _, e := range c.Edges {
		in.Edges = append(in.Edges, mapping.Edge{ID: e.ID, IPv4: e.IPv4, IPv6: e.IPv6, Lat: e.Lat, Lon: e.Lon,
			Pool: e.Pool, Capacity: e.Capacity, Draining: e.Draining})
	}
	for _, p := range c.Properties {
		in.Properties = append(in.Properties, mapping.Property{Name: p.Name, Pools: p.Pools, TTL: p.TTL, Answers: p.Answers, AllDown: mapping.AllDownPolicy(p.AllDown)})
	}
	for _, t := range c.Targets {
		in.Targets = append(in.Targets, mapping.Target(t))
	}
	return in
}

// checkConfig validates a whole configuration the way the map will read it,
// so that nothing is stored that the map cannot be built from.
func checkConfig(c store.Config) error {
	_, err := mapping.Build(inputs(c, nil))
	return err
}
