package api

import (
	"cmp"
	"errors"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/config"
	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/probe"
	"github.com/edgemap/edgemap/store"
)

func (a *api) getZone(w http.ResponseWriter, r *http.Request) {
	cfg, _, err := a.n.Config()
	switch {
	case err != nil:
		a.internal(w, err)
	case cfg.Zone == nil:
		probe.WriteError(w, http.StatusNotFound, mapping.FieldErrorf("zone", "no zone is set; use `edgemap zone set`"))
	default:
		probe.WriteJSON(w, http.StatusOK, config.ZoneOf(*cfg.Zone))
	}
}

func (a *api) putZone(w http.ResponseWriter, r *http.Request) {
	update(a, w, r, http.StatusOK, config.ZoneOf, config.SetZone)
}

// edges and properties are the lists get answers.
func edges(c store.Config, _ string) ([]store.Edge, error)          { return c.Edges, nil }
func properties(c store.Config, _ string) ([]store.Property, error) { return c.Properties, nil }

func (a *api) createEdge(w http.ResponseWriter, r *http.Request) {
	update(a, w, r, http.StatusCreated, config.EdgeOf, func(c *store.Config, s config.EdgeSpec) (store.Edge, error) {
		return config.PutEdge(c, s, true)
	})
}

func (a *api) patchEdge(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	update(a, w, r, http.StatusOK, config.EdgeOf, func(c *store.Config, s config.EdgeSpec) (store.Edge, error) {
		if s.ID != "" && s.ID != id {
			return store.Edge{}, mapping.FieldErrorf("id", "cannot rename edge %s to %s; add the new one and remove the old", id, s.ID)
		}
		s.ID = id
		return config.PutEdge(c, s, false)
	})
}

func (a *api) drainEdge(drain bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		edit(a, w, http.StatusOK, config.EdgeOf, func(c *store.Config) (store.Edge, error) {
			return config.DrainEdge(c, r.PathValue("id"), drain)
		})
	}
}

func (a *api) deleteEdge(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	edit(a, w, http.StatusOK, deleted, func(c *store.Config) (string, error) { return id, config.DeleteEdge(c, id) })
}

func (a *api) createProperty(w http.ResponseWriter, r *http.Request) {
	update(a, w, r, http.StatusCreated, config.PropertyOf, func(c *store.Config, s config.PropertySpec) (store.Property, error) {
		return config.PutProperty(c, s, s.Name, true)
	})
}

func (a *api) patchProperty(w http.ResponseWriter, r *http.Request) {
	update(a, w, r, http.StatusOK, config.PropertyOf, func(c *store.Config, s config.PropertySpec) (store.Property, error) {
		return config.PutProperty(c, s, r.PathValue("name"), false)
	})
}

func (a *api) deleteProperty(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	edit(a, w, http.StatusOK, deleted, func(c *store.Config) (string, error) {
		name, _ = config.LookupName("name", name)
		return name, config.DeleteProperty(c, name)
	})
}

// listRecords answers the static records, those of one name with ?name=.
func (a *api) listRecords(w http.ResponseWriter, r *http.Request) {
	cfg, _, err := a.n.Config()
	if err != nil {
		a.internal(w, err)
		return
	}
	out := config.RecordsOf(cfg)
	if name := r.URL.Query().Get("name"); name != "" {
		name, _ = config.LookupName("name", name)
		out = slices.DeleteFunc(out, func(rec config.Record) bool { return rec.Name != name })
	}
	probe.WriteJSON(w, http.StatusOK, out)
}

func (a *api) createRecord(w http.ResponseWriter, r *http.Request) {
	var zoneTTL uint32
	update(a, w, r, http.StatusCreated, func(rec store.Record) config.Record { return config.RecordOf(rec, zoneTTL) },
		func(c *store.Config, s config.RecordSpec) (store.Record, error) {
			zoneTTL = config.TimersOf(c.Zone).TTL
			return config.AddRecord(c, s)
		})
}

// deleteRecords removes the records of ?name= and ?type=, all of them or
// the one of ?value=, and answers what it removed.
func (a *api) deleteRecords(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	edit(a, w, http.StatusOK, func(rs []store.Record) []config.Record {
		return config.RecordsOf(store.Config{Records: rs})
	}, func(c *store.Config) ([]store.Record, error) {
		return config.DeleteRecords(c, q.Get("name"), q.Get("type"), q.Get("value"))
	})
}

// apply makes the configuration match a world, and answers what changed.
func (a *api) apply(w http.ResponseWriter, r *http.Request) {
	var world config.WorldSpec
	if !decode(w, r, &world) {
		return
	}
	prune := r.URL.Query().Get("prune") == "true"
	var res config.ApplyResult
	changed, err := a.n.Update(func(c *store.Config) error {
		before := c.Clone()
		if err := world.ApplyTo(c, prune); err != nil {
			return err
		}
		res.Diff = config.DiffConfigs(before, *c)
		return nil
	})
	res.Changed = changed
	res.Created, res.Updated, res.Deleted = res.Diff.Lists()
	if snap := a.n.Snapshot().Load(); snap != nil && snap.Zone() != nil {
		res.Serial = snap.Zone().Serial
	}
	a.write(w, http.StatusOK, err, &res)
}

func (a *api) listTargets(w http.ResponseWriter, r *http.Request) {
	cfg, _, err := a.n.Config()
	if err != nil {
		a.internal(w, err)
		return
	}
	// The file, not memory, because only it keeps the latest reports' own
	// values; one pass over it, grouped by target.
	measured := map[netip.Prefix][]config.EdgeMeasurement{}
	err = a.n.Store().EachMeasurement(func(m *store.Measurement) error {
		measured[m.Target] = append(measured[m.Target], config.EdgeMeasurement{Edge: m.Edge, RTTMs: m.RTTMs, Loss: m.Loss, LastRTT: m.LastRTTMs, At: m.At, Samples: m.Samples})
		return nil
	})
	if err != nil {
		a.internal(w, err)
		return
	}
	out := make([]config.MeasuredTarget, 0, len(cfg.Targets))
	for _, t := range cfg.Targets {
		v := config.MeasuredTarget{Target: config.Target(t), Measured: measured[t.Block]}
		if v.Measured == nil {
			v.Measured = []config.EdgeMeasurement{}
		}
		slices.SortFunc(v.Measured, func(a, b config.EdgeMeasurement) int {
			return cmp.Or(cmp.Compare(a.RTTMs, b.RTTMs), strings.Compare(a.Edge, b.Edge))
		})
		out = append(out, v)
	}
	probe.WriteJSON(w, http.StatusOK, out)
}

func (a *api) createTarget(w http.ResponseWriter, r *http.Request) {
	update(a, w, r, http.StatusCreated, func(t store.Target) config.Target { return config.Target(t) }, config.AddTarget)
}

func (a *api) deleteTarget(w http.ResponseWriter, r *http.Request) {
	block, err := netip.ParsePrefix(r.URL.Query().Get("block"))
	if err != nil {
		probe.WriteError(w, http.StatusBadRequest, mapping.FieldErrorf("block", "%q is not a network", r.URL.Query().Get("block")))
		return
	}
	edit(a, w, http.StatusOK, deleted, func(c *store.Config) (string, error) { return block.String(), config.DeleteTarget(c, block) })
}

func (a *api) listKeys(w http.ResponseWriter, r *http.Request) {
	keys, err := a.n.Keys().Keys()
	if err != nil {
		a.write(w, http.StatusOK, err, nil)
		return
	}
	probe.WriteJSON(w, http.StatusOK, config.KeysOf(keys))
}

func (a *api) createKey(w http.ResponseWriter, r *http.Request) {
	var s config.KeySpec
	if !decode(w, r, &s) {
		return
	}
	snap := a.n.Snapshot().Load()
	k, err := config.NewKey(s, snap != nil && snap.HasEdge(s.Edge), time.Now())
	if err == nil {
		if err = a.n.Keys().AddKey(k); errors.Is(err, store.ErrExists) {
			err = &mapping.FieldError{Field: "id", Msg: "key " + s.ID + " already exists; remove it first to rotate", Err: config.ErrConflict}
		}
	}
	// The secret is in this answer and nowhere else: it is not logged and
	// no endpoint returns it again.
	a.write(w, http.StatusCreated, err, config.Key{ID: k.ID, Edge: k.Edge, Created: k.Created, Secret: probe.EncodeSecret(k.Secret)})
}

func (a *api) deleteKey(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	err := a.n.Keys().DeleteKey(id)
	if errors.Is(err, store.ErrNotFound) {
		err = config.NotFound("id", "key "+id)
	}
	a.write(w, http.StatusOK, err, deleted(id))
}
