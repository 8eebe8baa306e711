package main

import (
	"cmp"
	"errors"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/probe"
	"github.com/edgemap/edgemap/store"
)

// targetView is a target with what the edges measured of it.
type targetView struct {
	Block    netip.Prefix   `json:"block"`
	Probe    netip.AddrPort `json:"probe"`
	Measured []edgeRTT      `json:"measured"`
}

type edgeRTT struct {
	Edge    string    `json:"edge"`
	RTTMs   float64   `json:"rtt_ms"`
	Loss    float64   `json:"loss"`
	LastRTT float64   `json:"last_rtt_ms"`
	At      time.Time `json:"at"`
	Samples uint64    `json:"samples"`
}

func (a *api) listTargets(w http.ResponseWriter, r *http.Request) {
	cfg, err := a.n.store.Config()
	if err != nil {
		a.internal(w, err)
		return
	}
	// The file, not memory, because only it keeps the latest reports' own
	// values; one pass over it, grouped by target.
	measured := map[netip.Prefix][]edgeRTT{}
	err = a.n.store.EachMeasurement(func(m *store.Measurement) error {
		measured[m.Target] = append(measured[m.Target], edgeRTT{Edge: m.Edge, RTTMs: m.RTTMs, Loss: m.Loss, LastRTT: m.LastRTTMs, At: m.At, Samples: m.Samples})
		return nil
	})
	if err != nil {
		a.internal(w, err)
		return
	}
	out := make([]targetView, 0, len(cfg.Targets))
	for _, t := range cfg.Targets {
		v := targetView{Block: t.Block, Probe: t.Probe, Measured: measured[t.Block]}
		if v.Measured == nil {
			v.Measured = []edgeRTT{}
		}
		slices.SortFunc(v.Measured, func(a, b edgeRTT) int { return cmp.Or(cmp.Compare(a.RTTMs, b.RTTMs), strings.Compare(a.Edge, b.Edge)) })
		out = append(out, v)
	}
	probe.WriteJSON(w, http.StatusOK, out)
}

func (a *api) createTarget(w http.ResponseWriter, r *http.Request) {
	var s targetSpec
	if !decode(w, r, &s) {
		return
	}
	t, err := s.toTarget()
	if err != nil {
		probe.WriteError(w, http.StatusBadRequest, err)
		return
	}
	_, err = a.n.update(func(c *store.Config) error {
		if slices.ContainsFunc(c.Targets, func(x store.Target) bool { return x.Block == t.Block }) {
			return &conflictError{mapping.FieldError{Field: "block", Msg: "target " + t.Block.String() + " already exists"}}
		}
		c.Targets = append(c.Targets, t)
		slices.SortFunc(c.Targets, func(x, y store.Target) int { return strings.Compare(x.Block.String(), y.Block.String()) })
		return nil
	})
	a.writeUpdate(w, http.StatusCreated, err, &t)
}

func (a *api) deleteTarget(w http.ResponseWriter, r *http.Request) {
	block, err := netip.ParsePrefix(r.URL.Query().Get("block"))
	if err != nil {
		probe.WriteError(w, http.StatusBadRequest, mapping.FieldErrorf("block", "%q is not a network", r.URL.Query().Get("block")))
		return
	}
	_, err = a.n.update(func(c *store.Config) error {
		i := slices.IndexFunc(c.Targets, func(t store.Target) bool { return t.Block == block })
		if i < 0 {
			return notFound("block", "target "+block.String())
		}
		c.Targets = slices.Delete(c.Targets, i, i+1)
		return nil
	})
	a.writeUpdate(w, http.StatusOK, err, map[string]string{"deleted": block.String()})
}

// keyView is a key as listed: never with its secret.
type keyView struct {
	ID      string    `json:"id"`
	Edge    string    `json:"edge"`
	Created time.Time `json:"created"`
	// Secret is set only in the answer to the request that created it.
	Secret string `json:"secret,omitempty"`
}

func (a *api) listKeys(w http.ResponseWriter, r *http.Request) {
	keys, err := a.n.store.Keys()
	if err != nil {
		a.internal(w, err)
		return
	}
	out := make([]keyView, 0, len(keys))
	for _, k := range keys {
		out = append(out, keyView{ID: k.ID, Edge: k.Edge, Created: k.Created})
	}
	probe.WriteJSON(w, http.StatusOK, out)
}

func (a *api) createKey(w http.ResponseWriter, r *http.Request) {
	var s struct {
		ID   string `json:"id"`
		Edge string `json:"edge"`
	}
	if !decode(w, r, &s) {
		return
	}
	if err := mapping.CheckID("id", s.ID); err != nil {
		probe.WriteError(w, http.StatusBadRequest, err)
		return
	}
	if !(collectorStore{a.n}).EdgeExists(s.Edge) {
		probe.WriteError(w, http.StatusBadRequest, mapping.FieldErrorf("edge", "no edge %q: a key is bound to an existing edge", s.Edge))
		return
	}
	k := store.Key{ID: s.ID, Edge: s.Edge, Secret: probe.NewSecret(), Created: time.Now().UTC().Truncate(time.Second)}
	if err := a.n.store.AddKey(k); err != nil {
		if errors.Is(err, store.ErrExists) {
			probe.WriteJSON(w, http.StatusConflict, &mapping.FieldError{Field: "id", Msg: "key " + s.ID + " already exists; remove it first to rotate"})
			return
		}
		a.internal(w, err)
		return
	}
	// The secret is in this answer and nowhere else: it is not logged and
	// no endpoint returns it again.
	probe.WriteJSON(w, http.StatusCreated, keyView{ID: k.ID, Edge: k.Edge, Created: k.Created, Secret: probe.EncodeSecret(k.Secret)})
}

func (a *api) deleteKey(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := a.n.store.DeleteKey(id); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			probe.WriteError(w, http.StatusNotFound, notFound("id", "key "+id))
			return
		}
		a.internal(w, err)
		return
	}
	probe.WriteJSON(w, http.StatusOK, map[string]string{"deleted": id})
}
