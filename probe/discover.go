package probe

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"

	"go.uber.org/zap"
)

// An agent given one collector of a fleet finds the others: each round it
// asks every collector it was given for the fleet's name servers (a
// signed GET /v1/nodes, as GET /v1/targets), learns which server each
// collector is (the one that answers marks itself "self"), and reports to
// every server none of its given collectors is, from then on. A
// discovered server that leaves the fleet's list is dropped with its
// queue; one that turns out to be a given collector too (under another
// name) is dropped in favour of the given one. A single name server
// answers that it is not in a fleet, and nothing is discovered.

// nodeList is what an agent reads of GET /v1/nodes.
type nodeList struct {
	Fleet bool `json:"fleet"`
	Nodes []struct {
		ID   string `json:"id"`
		API  string `json:"api"`
		Self bool   `json:"self"`
	} `json:"nodes"`
}

func (s *sender) fetchNodes(ctx context.Context) (nodeList, error) {
	var list nodeList
	raw, err := s.do(ctx, http.MethodGet, "/v1/nodes", nil)
	if err != nil {
		return list, fmt.Errorf("nodes from %s: %w", s.base, err)
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		return list, fmt.Errorf("nodes from %s: %w", s.base, err)
	}
	return list, nil
}

// discover updates the senders from the fleet's list of servers.
func (a *Agent) discover(ctx context.Context) {
	if !a.cfg.Discover {
		return
	}
	fleet := map[string]string{} // server id -> its API's URL
	asked := false
	for _, s := range a.active() {
		if s.discovered {
			continue
		}
		list, err := s.fetchNodes(ctx)
		if err != nil || !list.Fleet {
			if err != nil {
				a.log.Debug("no fleet list", zap.String("collector", s.base), zap.Error(err))
			}
			continue
		}
		asked = true
		for _, n := range list.Nodes {
			if n.ID == "" || !(strings.HasPrefix(n.API, "http://") || strings.HasPrefix(n.API, "https://")) {
				continue
			}
			fleet[n.ID] = strings.TrimRight(n.API, "/")
			if n.Self {
				a.smu.Lock()
				s.id = n.ID
				a.smu.Unlock()
			}
		}
	}
	if !asked {
		return // no answer: keep what was found before
	}
	a.smu.Lock()
	defer a.smu.Unlock()
	given := map[string]bool{}
	for _, s := range a.senders {
		if !s.discovered && s.id != "" {
			given[s.id] = true
		}
	}
	have := map[string]bool{}
	kept := a.senders[:0]
	for _, s := range a.senders {
		if s.discovered && (given[s.id] || fleet[s.id] != s.base) {
			a.log.Info("no longer reporting to a discovered collector", zap.String("collector", s.base), zap.String("node", s.id))
			s.stop()
			continue
		}
		kept = append(kept, s)
		have[s.id] = true
	}
	a.senders = kept
	for _, id := range slices.Sorted(maps.Keys(fleet)) {
		if given[id] || have[id] {
			continue
		}
		if len(a.senders) >= MaxCollectors {
			// Each is a goroutine and a queue of reports: a list from a
			// broken or hostile server must not grow them without end.
			a.log.Warn("a fleet lists more name servers than an agent reports to; the rest are left out",
				zap.Int("max", MaxCollectors), zap.Int("listed", len(fleet)))
			break
		}
		s := &sender{a: a, base: fleet[id], wake: make(chan struct{}, 1), id: id, discovered: true}
		a.senders = append(a.senders, s)
		a.start(s)
		a.log.Info("reporting to a collector discovered in the fleet", zap.String("collector", s.base), zap.String("node", id))
	}
}
