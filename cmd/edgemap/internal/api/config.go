package api

import (
	"cmp"
	"errors"
	"fmt"
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

// putZone sets the zone and answers it with the serial it was committed
// at (the store's: SetZone's record still has the one before).
func (a *api) putZone(w http.ResponseWriter, r *http.Request) {
	var s config.ZoneSpec
	if !decode(w, r, &s) {
		return
	}
	var z store.Zone
	res, err := a.n.UpdateAs(a.client(r), func(c *store.Config) (err error) {
		z, err = config.SetZone(c, s)
		return err
	})
	if res.Serial != 0 {
		z.Serial = res.Serial
	}
	a.write(w, http.StatusOK, err, config.ZoneOf(z))
}

// edges and properties are the lists get answers.
func edges(c store.Config, _ string) ([]store.Edge, error)          { return c.Edges, nil }
func properties(c store.Config, _ string) ([]store.Property, error) { return c.Properties, nil }

func (a *api) createEdge(w http.ResponseWriter, r *http.Request) {
	update(a, w, r, http.StatusCreated, a.edgeState, func(c *store.Config, s config.EdgeSpec) (store.Edge, error) {
		return config.PutEdge(c, s, true)
	})
}

func (a *api) patchEdge(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	update(a, w, r, http.StatusOK, a.edgeState, func(c *store.Config, s config.EdgeSpec) (store.Edge, error) {
		if s.ID != "" && s.ID != id {
			return store.Edge{}, mapping.FieldErrorf("id", "cannot rename edge %s to %s; add the new one and remove the old", id, s.ID)
		}
		s.ID = id
		return config.PutEdge(c, s, false)
	})
}

func (a *api) drainEdge(drain bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		edit(a, w, r, http.StatusOK, a.edgeState, func(c *store.Config) (store.Edge, error) {
			return config.DrainEdge(c, r.PathValue("id"), drain)
		})
	}
}

func (a *api) deleteEdge(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	edit(a, w, r, http.StatusOK, deleted, func(c *store.Config) (string, error) { return id, config.DeleteEdge(c, id) })
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
	edit(a, w, r, http.StatusOK, deleted, func(c *store.Config) (string, error) {
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
	edit(a, w, r, http.StatusOK, func(rs []store.Record) []config.Record {
		return config.RecordsOf(store.Config{Records: rs})
	}, func(c *store.Config) ([]store.Record, error) {
		return config.DeleteRecords(c, q.Get("name"), q.Get("type"), q.Get("value"))
	})
}

// apply makes the configuration match a world, and answers what changed:
// ?prune=true removes what the world does not name of the kinds it
// declares; ?dry_run=true answers what would change and changes nothing
// (and fails where the apply would). Probe keys bound to edges a prune
// removes are refused unless ?prune_keys=true, which removes them after
// the configuration is committed: a key left behind would let its agent
// report again for any edge later given the same ID, and one removed
// unasked means a new secret on the agent's host.
func (a *api) apply(w http.ResponseWriter, r *http.Request) {
	var world config.WorldSpec
	if !decode(w, r, &world) {
		return
	}
	q := r.URL.Query()
	prune, dryRun, pruneKeys := q.Get("prune") == "true", q.Get("dry_run") == "true", q.Get("prune_keys") == "true"
	keys, err := a.n.Keys().Keys()
	if err != nil {
		a.write(w, http.StatusOK, err, nil) // a fleet's keys are etcd's: 503 while it is unreachable
		return
	}
	var res config.ApplyResult
	var orphans []store.Key // keys whose edge the apply removes
	change := func(c *store.Config) error {
		before := c.Clone()
		if err := world.ApplyTo(c, prune); err != nil {
			return err
		}
		res.Diff = config.DiffConfigs(before, *c)
		// Keys bound to edges the configuration no longer has: those
		// this apply orphans are refused without prune_keys, which
		// removes them all (also those an earlier `edge rm` left).
		hasEdge := func(c store.Config, id string) bool {
			return slices.ContainsFunc(c.Edges, func(e store.Edge) bool { return e.ID == id })
		}
		orphans = orphans[:0]
		var refused []string
		for _, k := range keys {
			if hasEdge(*c, k.Edge) {
				continue
			}
			if pruneKeys {
				orphans = append(orphans, k)
			} else if hasEdge(before, k.Edge) {
				refused = append(refused, k.ID+" (edge "+k.Edge+")")
			}
		}
		if len(refused) > 0 {
			return mapping.FieldErrorf("prune_keys", "probe keys %s would be left bound to edges that no longer exist: "+
				"add --prune-keys to remove them with their edges (their agents are refused from then on), or remove them first (edgemap key rm)",
				strings.Join(refused, ", "))
		}
		return nil
	}
	if dryRun {
		cfg, _, err := a.n.Config()
		if err == nil {
			if err = change(&cfg); err == nil {
				err = config.Check(cfg)
			}
		}
		res.DryRun, res.Changed = true, !res.Diff.Empty() || len(orphans) > 0
		res.Diff.Records = append(res.Diff.Records, config.DiffKeys(orphans, nil).Records...)
		res.Created, res.Updated, res.Deleted = res.Diff.Lists()
		if snap := a.n.Snapshot().Load(); snap != nil && snap.Zone() != nil {
			res.Serial = snap.Zone().Serial
		}
		a.write(w, http.StatusOK, err, &res)
		return
	}
	who := a.client(r)
	committed, err := a.n.UpdateAs(who, change)
	res.Changed = committed.Changed
	if err == nil {
		for _, k := range orphans {
			// The configuration no longer has the edge: remove the key
			// now, or say which keys are left.
			if kerr := a.n.Keys().DeleteKey(k.ID); kerr != nil && !errors.Is(kerr, store.ErrNotFound) {
				err = fmt.Errorf("the configuration is applied, but probe key %s was not removed: %w", k.ID, kerr)
				break
			}
			<-a.n.KeyRemoved(who, k.ID, k.Edge, "with its edge (apply --prune-keys)")
			res.Changed = true
		}
		res.Diff.Records = append(res.Diff.Records, config.DiffKeys(orphans, nil).Records...)
	}
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
	edit(a, w, r, http.StatusOK, deleted, func(c *store.Config) (string, error) { return block.String(), config.DeleteTarget(c, block) })
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
	if err == nil {
		a.n.KeyAdded(a.client(r), k.ID, k.Edge)
	}
	// The secret is in this answer and nowhere else: it is not logged and
	// no endpoint returns it again.
	a.write(w, http.StatusCreated, err, config.Key{ID: k.ID, Edge: k.Edge, Created: k.Created, Secret: probe.EncodeSecret(k.Secret)})
}

func (a *api) deleteKey(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	// The event names the key's edge, which only the key knows.
	var edge string
	keys, err := a.n.Keys().Keys()
	if err == nil {
		if i := slices.IndexFunc(keys, func(k store.Key) bool { return k.ID == id }); i >= 0 {
			edge = keys[i].Edge
		}
		err = a.n.Keys().DeleteKey(id)
	}
	if errors.Is(err, store.ErrNotFound) {
		err = config.NotFound("id", "key "+id)
	}
	if err == nil {
		<-a.n.KeyRemoved(a.client(r), id, edge, "")
	}
	a.write(w, http.StatusOK, err, deleted(id))
}

// edgeState is an edge as the API answers it: its configuration and its
// state in the published map (which a write has waited for).
func (a *api) edgeState(e store.Edge) config.EdgeState {
	var h *mapping.Health
	if snap := a.n.Snapshot().Load(); snap != nil {
		if eh, ok := snap.EdgeHealth()[e.ID]; ok {
			h = &eh
		}
	}
	return config.EdgeStateOf(e, h)
}

// edgeStates are the edges as the API lists them.
func (a *api) edgeStates(es []store.Edge) []config.EdgeState {
	var health map[string]mapping.Health
	if snap := a.n.Snapshot().Load(); snap != nil {
		health = snap.EdgeHealth()
	}
	out := make([]config.EdgeState, len(es))
	for i, e := range es {
		var h *mapping.Health
		if eh, ok := health[e.ID]; ok {
			h = &eh
		}
		out[i] = config.EdgeStateOf(e, h)
	}
	return out
}
