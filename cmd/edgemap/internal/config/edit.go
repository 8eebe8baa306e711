package config

import (
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/probe"
	"github.com/edgemap/edgemap/store"
)

// The edits the admin API makes, one record at a time. Each changes c in
// place and returns the record as written, or a FieldError: ErrConflict
// inside for a create of a record that exists, store.ErrNotFound for a
// change of one that does not. The whole configuration is checked (Check)
// by whoever commits it.

// SetZone sets the zone. Renaming it is refused while properties live
// under the old name.
func SetZone(c *store.Config, s ZoneSpec) (store.Zone, error) {
	z, err := s.Zone(c.Zone)
	if err != nil {
		return z, err
	}
	if c.Zone != nil && c.Zone.Name != z.Name && len(c.Properties) > 0 {
		return z, mapping.FieldErrorf("name", "the zone has properties under %s; remove them or use `edgemap apply --prune`", c.Zone.Name)
	}
	c.Zone = &z
	return z, nil
}

// PutEdge creates the edge s names (create) or changes the given fields of
// an existing one.
func PutEdge(c *store.Config, s EdgeSpec, create bool) (store.Edge, error) {
	return put(&c.Edges, edgeKind, s.ID, create, func(base store.Edge) (store.Edge, error) {
		base.ID = s.ID
		return s.Apply(base, create)
	})
}

// DrainEdge marks an edge draining (no new answers, still measured and
// checked) or brings it back.
func DrainEdge(c *store.Config, id string, drain bool) (store.Edge, error) {
	return put(&c.Edges, edgeKind, id, false, func(e store.Edge) (store.Edge, error) {
		e.Draining = drain
		return e, nil
	})
}

// DeleteEdge removes an edge.
func DeleteEdge(c *store.Config, id string) error { return remove(&c.Edges, edgeKind, id) }

// PutProperty creates the property called name (create; the name must
// follow HostName's rules) or changes the given fields of an existing one
// (found by name whatever rules it predates).
func PutProperty(c *store.Config, s PropertySpec, name string, create bool) (store.Property, error) {
	check := LookupName
	if create {
		check = HostName
	}
	name, err := check("name", name)
	if err != nil {
		return store.Property{}, err
	}
	return put(&c.Properties, propertyKind, name, create, func(base store.Property) (store.Property, error) {
		base.Name = name
		return s.Apply(base, create)
	})
}

// DeleteProperty removes a property.
func DeleteProperty(c *store.Config, name string) error {
	name, err := LookupName("name", name)
	if err != nil {
		return err
	}
	return remove(&c.Properties, propertyKind, name)
}

// AddTarget adds a target.
func AddTarget(c *store.Config, s TargetSpec) (store.Target, error) {
	t, err := s.Target()
	if err != nil {
		return t, err
	}
	return put(&c.Targets, targetKind, t.Block.String(), true, func(store.Target) (store.Target, error) { return t, nil })
}

// DeleteTarget removes the target of block.
func DeleteTarget(c *store.Config, block netip.Prefix) error {
	return remove(&c.Targets, targetKind, block.String())
}

// AddRecord adds a static record; a record that sets no TTL gets the
// zone's TTL.
func AddRecord(c *store.Config, s RecordSpec) (store.Record, error) {
	r, err := s.Record(TimersOf(c.Zone).TTL)
	if err != nil {
		return r, err
	}
	return put(&c.Records, recordKind, r.Key(), true, func(store.Record) (store.Record, error) { return r, nil })
}

// DeleteRecords removes the static records of a name and type, all of
// them or the one whose value is value (as written or canonical); it
// returns what it removed.
func DeleteRecords(c *store.Config, name, typ, value string) ([]store.Record, error) {
	name, err := LookupName("name", name)
	if err != nil {
		return nil, err
	}
	t, err := mapping.ParseRecordType("type", typ)
	if err != nil {
		return nil, err
	}
	what := name + " " + string(t)
	if value != "" {
		// A value is found by its canonical form, as it was stored.
		if _, canonical, err := mapping.ParseRecordData("value", t, value); err == nil {
			value = canonical
		}
		what += " " + value
	}
	var removed []store.Record
	c.Records = slices.DeleteFunc(c.Records, func(r store.Record) bool {
		match := r.Name == name && r.Type == string(t) && (value == "" || r.Value == value)
		if match {
			removed = append(removed, r)
		}
		return match
	})
	if len(removed) == 0 {
		return nil, NotFound("name", "record "+what)
	}
	return removed, nil
}

// NewKey checks a request for a probe key and makes the key, with a new
// secret. A key is bound to an edge that exists (edgeExists).
func NewKey(s KeySpec, edgeExists bool, now time.Time) (store.Key, error) {
	if err := mapping.CheckID("id", s.ID); err != nil {
		return store.Key{}, err
	}
	if !edgeExists {
		return store.Key{}, mapping.FieldErrorf("edge", "no edge %q: a key is bound to an existing edge", s.Edge)
	}
	return store.Key{ID: s.ID, Edge: s.Edge, Secret: probe.NewSecret(), Created: now.UTC().Truncate(time.Second)}, nil
}

// kind is what the edits need to know of one kind of record.
type kind[T any] struct {
	name, field string // "edge", and the key's field, "id"
	key         func(T) string
	hint        string // for a create of a record that exists
}

var (
	edgeKind     = kind[store.Edge]{"edge", "id", func(e store.Edge) string { return e.ID }, "; use `edge set`"}
	propertyKind = kind[store.Property]{"property", "name", func(p store.Property) string { return p.Name }, "; use `property set`"}
	targetKind   = kind[store.Target]{"target", "block", func(t store.Target) string { return t.Block.String() }, ""}
	recordKind   = kind[store.Record]{"record", "value", store.Record.Key, "; remove it first to change its TTL"}
)

// put applies edit to the record of key in recs (to the zero record, for a
// create) and stores the result, keeping recs sorted by key.
func put[T any](recs *[]T, k kind[T], key string, create bool, edit func(T) (T, error)) (T, error) {
	var rec T
	i := slices.IndexFunc(*recs, func(r T) bool { return k.key(r) == key })
	switch {
	case create && i >= 0:
		return rec, conflict(k.field, "%s %s already exists%s", k.name, key, k.hint)
	case !create && i < 0:
		return rec, NotFound(k.field, k.name+" "+key)
	case i >= 0:
		rec = (*recs)[i]
	}
	rec, err := edit(rec)
	if err != nil {
		return rec, err
	}
	if i >= 0 {
		(*recs)[i] = rec
	} else {
		*recs = append(*recs, rec)
		slices.SortFunc(*recs, func(a, b T) int { return strings.Compare(k.key(a), k.key(b)) })
	}
	return rec, nil
}

// FindEdge is the edge id in c.
func FindEdge(c store.Config, id string) (store.Edge, error) { return find(c.Edges, edgeKind, id) }

// FindProperty is the property called name in c, found whatever rules its
// name predates.
func FindProperty(c store.Config, name string) (store.Property, error) {
	name, err := LookupName("name", name)
	if err != nil {
		return store.Property{}, err
	}
	return find(c.Properties, propertyKind, name)
}

func find[T any](recs []T, k kind[T], key string) (T, error) {
	if i := slices.IndexFunc(recs, func(r T) bool { return k.key(r) == key }); i >= 0 {
		return recs[i], nil
	}
	var zero T
	return zero, NotFound(k.field, k.name+" "+key)
}

// remove deletes the record of key from recs.
func remove[T any](recs *[]T, k kind[T], key string) error {
	i := slices.IndexFunc(*recs, func(r T) bool { return k.key(r) == key })
	if i < 0 {
		return NotFound(k.field, k.name+" "+key)
	}
	*recs = slices.Delete(*recs, i, i+1)
	return nil
}
