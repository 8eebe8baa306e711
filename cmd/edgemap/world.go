package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/store"
)

// readWorld parses a world file (YAML; JSON is YAML too). Unknown keys are
// errors: a misspelt "capcity" must not be silently dropped.
func readWorld(path string) (*worldSpec, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	var w worldSpec
	if err := dec.Decode(&w); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: empty world file", path)
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &w, nil
}

// applyResult says what an apply changed, by record.
type applyResult struct {
	Changed bool     `json:"changed"`
	Serial  uint32   `json:"serial"`
	Created []string `json:"created"`
	Updated []string `json:"updated"`
	Deleted []string `json:"deleted"`
}

// applyTo makes c match the world. Without prune, records the world does not
// name are kept; with prune they are removed. Errors name the record, e.g.
// "edges[2].lat".
func (w *worldSpec) applyTo(c *store.Config, prune bool, res *applyResult) error {
	if w.Zone != nil {
		z, err := w.Zone.toZone(c.Zone)
		if err != nil {
			return mapping.Within("zone", err)
		}
		if c.Zone == nil {
			res.Created = append(res.Created, "zone "+z.Name)
		} else if !zoneEqual(*c.Zone, z) {
			res.Updated = append(res.Updated, "zone "+z.Name)
		}
		c.Zone = &z
	} else if prune && c.Zone != nil {
		return mapping.FieldErrorf("zone", "--prune needs the file to declare the zone")
	}

	edges := map[string]store.Edge{}
	for i, s := range w.Edges {
		field := fmt.Sprintf("edges[%d]", i)
		e, err := s.apply(store.Edge{ID: s.ID}, true)
		if err != nil {
			return mapping.Within(field, err)
		}
		if _, dup := edges[e.ID]; dup {
			return mapping.FieldErrorf(field+".id", "duplicate edge %q", e.ID)
		}
		edges[e.ID] = e
	}
	// Draining is operational state, set by `edge drain`: a world file
	// neither sets nor clears it.
	for _, old := range c.Edges {
		if e, ok := edges[old.ID]; ok {
			e.Draining = old.Draining
			edges[old.ID] = e
		}
	}
	c.Edges = merge(c.Edges, edges, prune, func(e store.Edge) string { return e.ID }, "edge", res)

	props := map[string]store.Property{}
	for i, s := range w.Properties {
		field := fmt.Sprintf("properties[%d]", i)
		name, err := hostName("name", s.Name)
		if err != nil {
			return mapping.Within(field, err)
		}
		p, err := s.apply(store.Property{Name: name}, true)
		if err != nil {
			return mapping.Within(field, err)
		}
		if _, dup := props[name]; dup {
			return mapping.FieldErrorf(field+".name", "duplicate property %q", name)
		}
		props[name] = p
	}
	c.Properties = merge(c.Properties, props, prune, func(p store.Property) string { return p.Name }, "property", res)

	targets := map[string]store.Target{}
	for i, s := range w.Targets {
		field := fmt.Sprintf("targets[%d]", i)
		t, err := s.toTarget()
		if err != nil {
			return mapping.Within(field, err)
		}
		if _, dup := targets[t.Block.String()]; dup {
			return mapping.FieldErrorf(field+".block", "duplicate target %s", t.Block)
		}
		targets[t.Block.String()] = t
	}
	c.Targets = merge(c.Targets, targets, prune, func(t store.Target) string { return t.Block.String() }, "target", res)
	return nil
}

// merge upserts the declared records into have and, with prune, drops the
// undeclared ones, recording each change in res.
func merge[T any](have []T, want map[string]T, prune bool, key func(T) string, kind string, res *applyResult) []T {
	var out []T
	for _, old := range have {
		k := key(old)
		nw, declared := want[k]
		switch {
		case declared:
			if !equalJSON(old, nw) {
				res.Updated = append(res.Updated, kind+" "+k)
			}
			out = append(out, nw)
			delete(want, k)
		case prune:
			res.Deleted = append(res.Deleted, kind+" "+k)
		default:
			out = append(out, old)
		}
	}
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		res.Created = append(res.Created, kind+" "+k)
		out = append(out, want[k])
	}
	slices.SortFunc(out, func(a, b T) int { return strings.Compare(key(a), key(b)) })
	return out
}

func zoneEqual(a, b store.Zone) bool {
	a.Serial, b.Serial = 0, 0
	return equalJSON(a, b)
}

func equalJSON(a, b any) bool {
	x, errA := json.Marshal(a)
	y, errB := json.Marshal(b)
	return errA == nil && errB == nil && bytes.Equal(x, y)
}
