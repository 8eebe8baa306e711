package config

import (
	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/store"
)

// Check validates a whole configuration the way the map reads it, so that
// nothing is stored that a map cannot be built from: what no single record
// shows (a property drawing on a pool no edge is in, a name server that is
// the apex, two targets of one block). Errors are FieldErrors.
func Check(c store.Config) error {
	_, err := mapping.Build(Inputs(c))
	return err
}

// Inputs is a stored configuration as the map's inputs; the caller adds
// GeoIP, measurements, health and demand.
func Inputs(c store.Config) mapping.Inputs {
	var in mapping.Inputs
	if c.Zone != nil {
		z := &mapping.Zone{Name: c.Zone.Name, Contact: c.Zone.Contact, Serial: c.Zone.Serial, Timers: TimersOf(c.Zone)}
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
	for _, r := range c.Records {
		in.Records = append(in.Records, mapping.Record{Name: r.Name, Type: mapping.RecordType(r.Type), Value: r.Value, TTL: r.TTL})
	}
	return in
}
