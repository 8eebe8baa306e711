package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/store"
)

// ReadWorld parses a world file (YAML; JSON is YAML too). Unknown keys are
// errors: a misspelt "capcity" must not be silently dropped.
func ReadWorld(path string) (*WorldSpec, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	var w WorldSpec
	if err := dec.Decode(&w); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: empty world file", path)
		}
		var te *yaml.TypeError
		if errors.As(err, &te) {
			for i, e := range te.Errors {
				te.Errors[i] = unknownKey.ReplaceAllStringFunc(e, func(m string) string {
					sm := unknownKey.FindStringSubmatch(m)
					return fmt.Sprintf("unknown key %q in %s", sm[1], specNames[sm[2]])
				})
			}
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &w, nil
}

// unknownKey is yaml.v3's error for a key no field takes, which names Go
// types; specNames says what they are in a world file.
var (
	unknownKey = regexp.MustCompile(`field (\S+) not found in type config\.(\w+)`)
	specNames  = map[string]string{"WorldSpec": "the world file (zone, edges, properties, targets, records)", "ZoneSpec": "the zone",
		"NSSpec": "a name server", "EdgeSpec": "an edge", "PropertySpec": "a property", "TargetSpec": "a target", "RecordSpec": "a static record"}
)

// ApplyTo makes c match the world. Without prune, records the world does
// not name are kept. With prune, each kind of record the world declares
// (its list is present, even empty: `targets: []`) ends up exactly as
// declared; a kind it leaves out is not touched, so that a file holding
// only the zone cannot delete every edge, and targets managed with
// `target add` or static records managed with `record add` survive a world
// file that has none. A static record is named by its name, type and
// value. Drain state, set by
// `edge drain`, is operational: a world file neither sets nor clears it.
// Errors name the record, e.g. "edges[2].lat". What changed is
// DiffConfigs(before, *c).
func (w *WorldSpec) ApplyTo(c *store.Config, prune bool) error {
	if w.Zone != nil {
		z, err := w.Zone.Zone(c.Zone)
		if err != nil {
			return mapping.Within("zone", err)
		}
		c.Zone = &z
	}

	edges, err := declared(w.Edges, "edges", "edge", func(s EdgeSpec) (store.Edge, string, error) {
		e, err := s.Apply(store.Edge{ID: s.ID}, true)
		return e, e.ID, err
	})
	if err != nil {
		return err
	}
	for _, old := range c.Edges {
		if e, ok := edges[old.ID]; ok {
			e.Draining = old.Draining
			edges[old.ID] = e
		}
	}
	c.Edges = merge(c.Edges, edges, prune && w.Edges != nil, func(e store.Edge) string { return e.ID })

	props, err := declared(w.Properties, "properties", "property", func(s PropertySpec) (store.Property, string, error) {
		name, err := HostName("name", s.Name)
		if err != nil {
			return store.Property{}, "", err
		}
		p, err := s.Apply(store.Property{Name: name}, true)
		return p, name, err
	})
	if err != nil {
		return err
	}
	c.Properties = merge(c.Properties, props, prune && w.Properties != nil, func(p store.Property) string { return p.Name })

	targets, err := declared(w.Targets, "targets", "target", func(s TargetSpec) (store.Target, string, error) {
		t, err := s.Target()
		return t, t.Block.String(), err
	})
	if err != nil {
		return err
	}
	c.Targets = merge(c.Targets, targets, prune && w.Targets != nil, func(t store.Target) string { return t.Block.String() })

	// After the zone: a record without a TTL gets the zone's as declared.
	zoneTTL := TimersOf(c.Zone).TTL
	records, err := declared(w.Records, "records", "record", func(s RecordSpec) (store.Record, string, error) {
		r, err := s.Record(zoneTTL)
		return r, r.Key(), err
	})
	if err != nil {
		return err
	}
	c.Records = merge(c.Records, records, prune && w.Records != nil, store.Record.Key)
	return nil
}

// declared checks the specs of one kind and returns their records by key;
// an error names the spec ("edges[2].lat") and a key given twice.
func declared[S, T any](specs []S, list, kind string, record func(S) (T, string, error)) (map[string]T, error) {
	out := make(map[string]T, len(specs))
	for i, s := range specs {
		field := fmt.Sprintf("%s[%d]", list, i)
		rec, key, err := record(s)
		if err != nil {
			return nil, mapping.Within(field, err)
		}
		if _, dup := out[key]; dup {
			keyField := map[string]string{"edge": "id", "property": "name", "target": "block", "record": "value"}[kind]
			return nil, mapping.FieldErrorf(field+"."+keyField, "duplicate %s %q", kind, key)
		}
		out[key] = rec
	}
	return out, nil
}

// merge upserts the declared records into have and, with prune, drops the
// undeclared ones; the result is sorted by key, as the store keeps it.
func merge[T any](have []T, want map[string]T, prune bool, key func(T) string) []T {
	out := make([]T, 0, len(want)+len(have))
	for _, old := range have {
		if _, declared := want[key(old)]; !declared && !prune {
			out = append(out, old)
		}
	}
	for _, rec := range want {
		out = append(out, rec)
	}
	slices.SortFunc(out, func(a, b T) int { return strings.Compare(key(a), key(b)) })
	return out
}
