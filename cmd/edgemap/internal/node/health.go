package node

import (
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/store"
)

// An edge's health has two sources: what its probe agent says of it and
// what this name server's own checks find. The evidence of both is
// collected as it arrives (evidence, safe for concurrent use); what it
// means is decided by decideHealth, a pure function the builder calls for
// every map, and takes effect only when that map is published.

// agentSilentAfter is how many of its own intervals an agent may miss
// before its word on its edge's health no longer counts.
const agentSilentAfter = 3

// observation is one source's latest word on an edge: up or down, since
// when.
type observation struct {
	up     bool
	since  time.Time
	reason string
}

// agentReport is an agent's latest word, with when it came and how often
// the agent reports.
type agentReport struct {
	observation
	at       time.Time
	interval time.Duration
}

// healthEvidence is everything known of the edges' health at one moment.
type healthEvidence struct {
	checks map[string]observation // by edge: this server's checks
	agents map[string]agentReport // by edge: its agent
	// persisted is the health decided before the last restart, used for an
	// edge with a check until its first result.
	persisted map[string]store.EdgeHealth
}

// decideHealth is every edge's health at now, from the evidence and the
// health decided before (prev), and the edges whose health changed (up to
// down or down to up, or first decided). Down wins: an edge is down if its
// fresh agent says so or this server's checks say so. A silent agent no
// longer counts, which leaves the checks; an edge never checked keeps its
// persisted health if it has a check, else it is up. A change of source
// alone is not a change of health: it keeps its Since.
func decideHealth(prev map[string]mapping.Health, ev healthEvidence, edges []store.Edge, now time.Time) (next, changed map[string]mapping.Health) {
	next = make(map[string]mapping.Health, len(edges))
	changed = map[string]mapping.Health{}
	for _, e := range edges {
		var h mapping.Health
		agent, hasAgent := ev.agents[e.ID]
		fresh := hasAgent && now.Sub(agent.at) <= agentSilentAfter*max(agent.interval, time.Second)
		check, hasCheck := ev.checks[e.ID]
		switch {
		case fresh && !agent.up:
			h = mapping.Health{Up: false, Source: mapping.HealthAgent, Since: agent.since, Reason: "its probe agent reports it down"}
		case hasCheck && !check.up:
			h = mapping.Health{Up: false, Source: mapping.HealthCheck, Since: check.since, Reason: check.reason}
		case fresh:
			h = mapping.Health{Up: true, Source: mapping.HealthAgent, Since: agent.since, Reason: "its probe agent reports it up"}
		case hasCheck:
			h = mapping.Health{Up: true, Source: mapping.HealthCheck, Since: check.since, Reason: check.reason}
		default:
			if p, ok := ev.persisted[e.ID]; ok && e.Check != "" {
				h = mapping.Health{Up: p.Up, Source: mapping.HealthPersisted, Since: p.Since,
					Reason: "as decided before the restart, until its first check: " + p.Reason}
			} else {
				h = mapping.Health{Up: true, Source: mapping.HealthNone}
				if hasAgent {
					h.Reason = "its probe agent went silent, and no check of this server's says otherwise"
				}
			}
		}
		old, had := prev[e.ID]
		if had && old.Up == h.Up {
			h.Since = old.Since
		} else if h.Since.IsZero() {
			h.Since = now
		}
		next[e.ID] = h
		if !had || old.Up != h.Up {
			changed[e.ID] = h
		}
	}
	return next, changed
}

// evidence collects health evidence as it arrives, from the check loops
// and the collector. Safe for concurrent use; mu is a leaf lock.
type evidence struct {
	mu        sync.Mutex // guards checks and agents
	checks    map[string]observation
	agents    map[string]agentReport
	persisted map[string]store.EdgeHealth // read-only
}

func newEvidence(persisted map[string]store.EdgeHealth) *evidence {
	return &evidence{checks: map[string]observation{}, agents: map[string]agentReport{}, persisted: persisted}
}

// checked records a check result.
func (ev *evidence) checked(edge string, up bool, at time.Time, reason string) {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	if old, ok := ev.checks[edge]; !ok || old.up != up {
		ev.checks[edge] = observation{up: up, since: at, reason: reason}
	}
}

// reported records an agent's word; it reports whether the agent's view
// changed (then a map is due at once).
func (ev *evidence) reported(edge string, up bool, at time.Time, interval time.Duration) bool {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	old, ok := ev.agents[edge]
	r := agentReport{observation: observation{up: up, since: at}, at: at, interval: interval}
	if ok && old.up == up {
		r.since = old.since
	}
	ev.agents[edge] = r
	return !ok || old.up != up
}

// forget drops what is known of edges that no longer exist, and the check
// results of edges that are no longer checked: a check removed while its
// edge was down must not keep it down. It reports whether it dropped a
// check result.
func (ev *evidence) forget(edges []store.Edge, checked map[string]bool) (dropped bool) {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	keep := map[string]bool{}
	for _, e := range edges {
		keep[e.ID] = true
	}
	for id := range ev.checks {
		if !keep[id] || !checked[id] {
			delete(ev.checks, id)
			dropped = true
		}
	}
	for id := range ev.agents {
		if !keep[id] {
			delete(ev.agents, id)
		}
	}
	return dropped
}

// snapshot is a copy of the evidence, for decideHealth.
func (ev *evidence) snapshot() healthEvidence {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	return healthEvidence{checks: maps.Clone(ev.checks), agents: maps.Clone(ev.agents), persisted: ev.persisted}
}

// sortedEdges are the keys of a health map in order, for logs that read
// the same on every run.
func sortedEdges(m map[string]mapping.Health) []string {
	return slices.Sorted(maps.Keys(m))
}
