package config

import (
	"bytes"
	"encoding/json"
	"reflect"
	"slices"
	"strings"

	"github.com/edgemap/edgemap/store"
)

// Diff is what changes between two configurations, record by record and
// field by field, with values as the API shows them: apply answers it, and
// it is what `apply --dry-run` and an event log print.
type Diff struct {
	Records []RecordChange `json:"records"`
}

// Change is what happened to one record.
type Change string

// The changes of a record.
const (
	Added   Change = "added"
	Changed Change = "changed"
	Removed Change = "removed"
)

// RecordChange is one record that differs: its kind ("zone", "edge",
// "property", "target", "record", "key") and key, for a changed one each
// field that differs, old -> new, and for an added or removed one the whole
// record as the API shows it (the new one, or the one removed), so that a
// dry run shows what would be created and an event log what was deleted.
type RecordChange struct {
	Kind   string          `json:"kind"`
	Key    string          `json:"key"`
	Change Change          `json:"change"`
	Fields []FieldChange   `json:"fields,omitempty"`
	Record json.RawMessage `json:"record,omitempty"`
}

// FieldChange is one field's old and new value as JSON (absent: null).
type FieldChange struct {
	Field string          `json:"field"`
	Old   json.RawMessage `json:"old"`
	New   json.RawMessage `json:"new"`
}

// Empty reports whether nothing changes.
func (d Diff) Empty() bool { return len(d.Records) == 0 }

// Lists are the changed records as "kind key", by change, for people.
func (d Diff) Lists() (added, changed, removed []string) {
	for _, r := range d.Records {
		what := r.Kind + " " + r.Key
		switch r.Change {
		case Added:
			added = append(added, what)
		case Changed:
			changed = append(changed, what)
		case Removed:
			removed = append(removed, what)
		}
	}
	return added, changed, removed
}

// DiffConfigs is what changes from old to new: the zone, then edges,
// properties, targets and static records, each by key. The zone is one record, named by its
// new name (a rename is a change of its name); its serial is the store's
// to change and never counts.
func DiffConfigs(old, new store.Config) Diff {
	var d Diff
	zones := func(c store.Config) []Zone {
		if c.Zone == nil {
			return nil
		}
		z := ZoneOf(*c.Zone)
		z.Serial = 0
		return []Zone{z}
	}
	diffRecords(&d, "zone", zones(old), zones(new), func(Zone) string { return "" })
	for i := range d.Records {
		if z := new.Zone; z == nil {
			d.Records[i].Key = old.Zone.Name
		} else {
			d.Records[i].Key = z.Name
		}
	}
	diffRecords(&d, "edge", EdgesOf(old.Edges), EdgesOf(new.Edges), func(e Edge) string { return e.ID })
	diffRecords(&d, "property", PropertiesOf(old.Properties), PropertiesOf(new.Properties), func(p Property) string { return p.Name })
	diffRecords(&d, "target", convert(old.Targets, func(t store.Target) Target { return Target(t) }),
		convert(new.Targets, func(t store.Target) Target { return Target(t) }), func(t Target) string { return t.Block.String() })
	diffRecords(&d, "record", RecordsOf(old), RecordsOf(new), func(r Record) string { return store.Record{Name: r.Name, Type: r.Type, Value: r.Value}.Key() })
	return d
}

// DiffKeys is what changes between two sets of probe keys (never their
// secrets).
func DiffKeys(old, new []store.Key) Diff {
	var d Diff
	diffRecords(&d, "key", convert(old, KeyOf), convert(new, KeyOf), func(k Key) string { return k.ID })
	return d
}

// diffRecords appends the changes of one kind, by key. A zone renamed is
// one removed and one added.
func diffRecords[T any](d *Diff, kind string, old, new []T, key func(T) string) {
	byKey := make(map[string]T, len(old))
	for _, r := range old {
		byKey[key(r)] = r
	}
	var out []RecordChange
	for _, n := range new {
		k := key(n)
		o, had := byKey[k]
		delete(byKey, k)
		if !had {
			out = append(out, RecordChange{Kind: kind, Key: k, Change: Added, Record: marshal(n)})
		} else if fields := diffFields(o, n); len(fields) > 0 {
			out = append(out, RecordChange{Kind: kind, Key: k, Change: Changed, Fields: fields})
		}
	}
	for k, o := range byKey {
		out = append(out, RecordChange{Kind: kind, Key: k, Change: Removed, Record: marshal(o)})
	}
	slices.SortFunc(out, func(a, b RecordChange) int { return strings.Compare(a.Key, b.Key) })
	d.Records = append(d.Records, out...)
}

// diffFields compares two records of one wire type field by field, in the
// order of their JSON.
func diffFields(old, new any) []FieldChange {
	o, n := jsonFields(old), jsonFields(new)
	var out []FieldChange
	for _, f := range n {
		ov := lookupField(o, f.name)
		if !bytes.Equal(ov, f.value) {
			out = append(out, FieldChange{Field: f.name, Old: nullIfAbsent(ov), New: f.value})
		}
	}
	for _, f := range o {
		if lookupField(n, f.name) == nil {
			out = append(out, FieldChange{Field: f.name, Old: f.value, New: json.RawMessage("null")})
		}
	}
	return out
}

// marshal is a wire record as JSON; they always marshal.
func marshal(v any) json.RawMessage {
	raw, _ := json.Marshal(v)
	return raw
}

type jsonField struct {
	name  string
	value json.RawMessage
}

// jsonFields is a record's fields in the order of its JSON, each as JSON,
// those its JSON leaves out when empty included (as their zero value:
// "draining false -> true", not "null -> true").
func jsonFields(v any) []jsonField {
	rv := reflect.ValueOf(v)
	var out []jsonField
	for i := range rv.NumField() {
		f := rv.Type().Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if !f.IsExported() || name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		raw, err := json.Marshal(rv.Field(i).Interface())
		if err != nil {
			continue // the wire types always marshal
		}
		out = append(out, jsonField{name, raw})
	}
	return out
}

func lookupField(fs []jsonField, name string) json.RawMessage {
	for _, f := range fs {
		if f.name == name {
			return f.value
		}
	}
	return nil
}

func nullIfAbsent(v json.RawMessage) json.RawMessage {
	if v == nil {
		return json.RawMessage("null")
	}
	return v
}
