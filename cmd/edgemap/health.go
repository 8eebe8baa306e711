package main

import (
	"sync"
	"time"

	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/store"
)

// agentSilentAfter is how many of its own intervals an agent may miss
// before its word on its edge's health no longer counts.
const agentSilentAfter = 3

// healthBook combines the two sources of an edge's health: what its probe
// agent says of it and what this name server's own checks find. Safe for
// concurrent use.
type healthBook struct {
	mu        sync.Mutex // guards everything below
	checks    map[string]sourceState
	agents    map[string]agentState
	persisted map[string]store.EdgeHealth
	decided   map[string]mapping.Health
}

type sourceState struct {
	up    bool
	since time.Time
}

type agentState struct {
	sourceState
	at       time.Time // the latest report
	interval time.Duration
}

func newHealthBook(persisted map[string]store.EdgeHealth) *healthBook {
	return &healthBook{checks: map[string]sourceState{}, agents: map[string]agentState{}, persisted: persisted, decided: map[string]mapping.Health{}}
}

// checked records a check result; it reports whether the state changed.
func (b *healthBook) checked(edge string, up bool, at time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if old, ok := b.checks[edge]; !ok || old.up != up {
		b.checks[edge] = sourceState{up: up, since: at}
	}
}

// reported records an agent's word; it reports whether the agent's view
// changed.
func (b *healthBook) reported(edge string, up bool, at time.Time, interval time.Duration) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	old, ok := b.agents[edge]
	st := agentState{sourceState: sourceState{up: up, since: at}, at: at, interval: interval}
	if ok && old.up == up {
		st.since = old.since
	}
	b.agents[edge] = st
	return !ok || old.up != up
}

// forget drops what is known of edges that no longer exist, and the check
// results of edges that are no longer checked: a check removed while its
// edge was down must not keep it down.
// It reports whether it dropped a check result.
func (b *healthBook) forget(edges []store.Edge, checked map[string]bool) (dropped bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	keep := map[string]bool{}
	for _, e := range edges {
		keep[e.ID] = true
	}
	for id := range b.checks {
		if !keep[id] || !checked[id] {
			delete(b.checks, id)
			dropped = true
		}
	}
	for id := range b.agents {
		if !keep[id] {
			delete(b.agents, id)
		}
	}
	return dropped
}

// decide is every edge's health at now. Down wins: an edge is down if its
// fresh agent says so or this server's checks say so. A silent agent no
// longer counts, which leaves the checks; an edge never checked keeps its
// persisted health, else it is up. It returns the edges whose health
// changed since the last call.
func (b *healthBook) decide(edges []store.Edge, now time.Time) (map[string]mapping.Health, map[string]mapping.Health) {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[string]mapping.Health, len(edges))
	changed := map[string]mapping.Health{}
	for _, e := range edges {
		var h mapping.Health
		agent, hasAgent := b.agents[e.ID]
		fresh := hasAgent && now.Sub(agent.at) <= agentSilentAfter*max(agent.interval, time.Second)
		check, hasCheck := b.checks[e.ID]
		switch {
		case fresh && !agent.up:
			h = mapping.Health{Up: false, Source: mapping.HealthAgent, Since: agent.since}
		case hasCheck && !check.up:
			h = mapping.Health{Up: false, Source: mapping.HealthCheck, Since: check.since}
		case fresh:
			h = mapping.Health{Up: true, Source: mapping.HealthAgent, Since: agent.since}
		case hasCheck:
			h = mapping.Health{Up: true, Source: mapping.HealthCheck, Since: check.since}
		default:
			if p, ok := b.persisted[e.ID]; ok && e.Check != "" {
				h = mapping.Health{Up: p.Up, Source: mapping.HealthPersisted, Since: p.Since}
			} else {
				h = mapping.Health{Up: true, Source: mapping.HealthNone}
			}
		}
		if old, ok := b.decided[e.ID]; ok && old.Up == h.Up {
			h.Since = old.Since // a change of source is not a change of health
		} else if h.Since.IsZero() {
			h.Since = now
		}
		out[e.ID] = h
		if old, ok := b.decided[e.ID]; !ok || old.Up != h.Up {
			changed[e.ID] = h
		}
		b.decided[e.ID] = h
	}
	return out, changed
}
