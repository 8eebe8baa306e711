package config

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/store"
)

// MaxWorldErrors bounds what CheckWorld lists: a file with a systematic
// mistake would otherwise print it once per record.
const MaxWorldErrors = 100

// CheckWorld checks a world file on its own, offline, by the rules a
// server applies it with (every spec's rules, then Check on the whole),
// and returns every error it finds, each naming the file's field
// ("edges[2].lat"), at most MaxWorldErrors. It cannot know what a server
// holds besides the file: without --prune, records the file does not
// name stay and are checked with it there.
func CheckWorld(w *WorldSpec) []error {
	var errs []error
	add := func(err error) {
		if err != nil && len(errs) < MaxWorldErrors {
			errs = append(errs, err)
		}
	}
	var c store.Config
	if w.Zone != nil {
		z, err := w.Zone.Zone(nil)
		add(mapping.Within("zone", err))
		if err == nil {
			c.Zone = &z
		}
	}
	c.Edges = eachRecord(w.Edges, "edges", "id", add, func(s EdgeSpec) (store.Edge, string, error) {
		e, err := s.Apply(store.Edge{ID: s.ID}, true)
		return e, e.ID, err
	})
	c.Properties = eachRecord(w.Properties, "properties", "name", add, func(s PropertySpec) (store.Property, string, error) {
		name, err := HostName("name", s.Name)
		if err != nil {
			return store.Property{}, "", err
		}
		p, err := s.Apply(store.Property{Name: name}, true)
		return p, name, err
	})
	c.Targets = eachRecord(w.Targets, "targets", "block", add, func(s TargetSpec) (store.Target, string, error) {
		t, err := s.Target()
		return t, t.Block.String(), err
	})
	if Check(c) == nil || c.Zone == nil {
		// Without a zone, properties are checked against the server's
		// zone when the file is applied.
		return errs
	}
	// What no single record shows (a pool without edges, a property
	// outside the zone, glue missing) is what the map's Build refuses,
	// one error at a time: asked about each part on its own, it names
	// them all.
	zoneOnly := store.Config{Zone: c.Zone, Edges: c.Edges}
	if err := Check(zoneOnly); err != nil {
		add(err)
		// The properties are checked against the zone as it would be
		// with its name servers fixed, which they do not depend on.
		zoneOnly.Zone = withGlue(*c.Zone)
		if Check(zoneOnly) != nil {
			return errs
		}
	}
	for i, p := range w.Properties {
		name, err := HostName("name", p.Name)
		if err != nil {
			continue // reported above
		}
		for _, rec := range c.Properties {
			if rec.Name == name {
				one := zoneOnly
				one.Properties = []store.Property{rec}
				add(mapping.Within(fmt.Sprintf("properties[%d]", i), trimKind(Check(one), "property.")))
				break
			}
		}
	}
	add(Check(store.Config{Zone: zoneOnly.Zone, Edges: c.Edges, Targets: c.Targets}))
	if len(errs) == 0 {
		// Build refuses a combination of parts: say what it says.
		add(Check(c))
	}
	return errs
}

// withGlue is z with what Build asks of its name servers supplied: an
// address for each in the zone (a documentation one), none the apex.
func withGlue(z store.Zone) *store.Zone {
	var nss []store.NameServer
	for _, ns := range z.NameServers {
		if ns.Name == z.Name {
			continue
		}
		if !ns.IPv4.IsValid() && !ns.IPv6.IsValid() {
			ns.IPv4 = netip.MustParseAddr("192.0.2.1")
		}
		nss = append(nss, ns)
	}
	if len(nss) == 0 {
		nss = []store.NameServer{{Name: "ns.invalid."}}
	}
	z.NameServers = nss
	return &z
}

// eachRecord checks every spec of one list, adds an error per bad spec or
// key given twice, and returns the good records.
func eachRecord[S, T any](specs []S, list, keyField string, add func(error), record func(S) (T, string, error)) []T {
	var out []T
	seen := map[string]int{}
	for i, s := range specs {
		field := fmt.Sprintf("%s[%d]", list, i)
		rec, key, err := record(s)
		if err != nil {
			add(mapping.Within(field, err))
			continue
		}
		if first, dup := seen[key]; dup {
			add(mapping.FieldErrorf(field+"."+keyField, "%q is given twice (first as %s[%d])", key, list, first))
			continue
		}
		seen[key] = i
		out = append(out, rec)
	}
	return out
}

// trimKind turns Build's "property.pools" into "pools", for Within.
func trimKind(err error, kind string) error {
	var fe *mapping.FieldError
	if !errors.As(err, &fe) {
		return err
	}
	return &mapping.FieldError{Field: strings.TrimPrefix(fe.Field, kind), Msg: fe.Msg, Err: fe.Err}
}
