package api

import (
	"net/http"
	"slices"

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
	var s config.ZoneSpec
	if decode(w, r, &s) {
		edit(a, w, http.StatusOK, config.ZoneOf, func(c *store.Config) (store.Zone, error) { return config.SetZone(c, s) })
	}
}

func (a *api) listEdges(w http.ResponseWriter, r *http.Request) {
	cfg, _, err := a.n.Config()
	a.write(w, http.StatusOK, err, config.EdgesOf(cfg.Edges))
}

func (a *api) getEdge(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	cfg, _, err := a.n.Config()
	i := slices.IndexFunc(cfg.Edges, func(e store.Edge) bool { return e.ID == id })
	if err == nil && i < 0 {
		err = config.NotFound("id", "edge "+id)
	}
	var e store.Edge
	if err == nil {
		e = cfg.Edges[i]
	}
	a.write(w, http.StatusOK, err, config.EdgeOf(e))
}

func (a *api) createEdge(w http.ResponseWriter, r *http.Request) {
	var s config.EdgeSpec
	if decode(w, r, &s) {
		edit(a, w, http.StatusCreated, config.EdgeOf, func(c *store.Config) (store.Edge, error) { return config.PutEdge(c, s, true) })
	}
}

func (a *api) patchEdge(w http.ResponseWriter, r *http.Request) {
	var s config.EdgeSpec
	if !decode(w, r, &s) {
		return
	}
	if s.ID != "" && s.ID != r.PathValue("id") {
		probe.WriteError(w, http.StatusBadRequest, mapping.FieldErrorf("id", "cannot rename edge %s to %s; add the new one and remove the old", r.PathValue("id"), s.ID))
		return
	}
	s.ID = r.PathValue("id")
	edit(a, w, http.StatusOK, config.EdgeOf, func(c *store.Config) (store.Edge, error) { return config.PutEdge(c, s, false) })
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

func (a *api) listProperties(w http.ResponseWriter, r *http.Request) {
	cfg, _, err := a.n.Config()
	a.write(w, http.StatusOK, err, config.PropertiesOf(cfg.Properties))
}

func (a *api) getProperty(w http.ResponseWriter, r *http.Request) {
	name, err := config.LookupName("name", r.PathValue("name"))
	var cfg store.Config
	if err == nil {
		cfg, _, err = a.n.Config()
	}
	i := slices.IndexFunc(cfg.Properties, func(p store.Property) bool { return p.Name == name })
	if err == nil && i < 0 {
		err = config.NotFound("name", "property "+name)
	}
	var p store.Property
	if err == nil {
		p = cfg.Properties[i]
	}
	a.write(w, http.StatusOK, err, config.PropertyOf(p))
}

func (a *api) createProperty(w http.ResponseWriter, r *http.Request) {
	var s config.PropertySpec
	if decode(w, r, &s) {
		edit(a, w, http.StatusCreated, config.PropertyOf, func(c *store.Config) (store.Property, error) {
			return config.PutProperty(c, s, s.Name, true)
		})
	}
}

func (a *api) patchProperty(w http.ResponseWriter, r *http.Request) {
	var s config.PropertySpec
	if decode(w, r, &s) {
		edit(a, w, http.StatusOK, config.PropertyOf, func(c *store.Config) (store.Property, error) {
			return config.PutProperty(c, s, r.PathValue("name"), false)
		})
	}
}

func (a *api) deleteProperty(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	edit(a, w, http.StatusOK, deleted, func(c *store.Config) (string, error) {
		name, _ = config.LookupName("name", name)
		return name, config.DeleteProperty(c, name)
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
