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
	var s config.TargetSpec
	if decode(w, r, &s) {
		edit(a, w, http.StatusCreated, func(t store.Target) config.Target { return config.Target(t) },
			func(c *store.Config) (store.Target, error) { return config.AddTarget(c, s) })
	}
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
	keys, err := a.n.Store().Keys()
	if err != nil {
		a.internal(w, err)
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
		if err = a.n.Store().AddKey(k); errors.Is(err, store.ErrExists) {
			err = &mapping.FieldError{Field: "id", Msg: "key " + s.ID + " already exists; remove it first to rotate", Err: config.ErrConflict}
		}
	}
	// The secret is in this answer and nowhere else: it is not logged and
	// no endpoint returns it again.
	a.write(w, http.StatusCreated, err, config.Key{ID: k.ID, Edge: k.Edge, Created: k.Created, Secret: probe.EncodeSecret(k.Secret)})
}

func (a *api) deleteKey(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	err := a.n.Store().DeleteKey(id)
	if errors.Is(err, store.ErrNotFound) {
		err = config.NotFound("id", "key "+id)
	}
	a.write(w, http.StatusOK, err, deleted(id))
}
