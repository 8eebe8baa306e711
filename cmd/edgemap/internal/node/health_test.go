package node

import (
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/store"
)

var healthNow = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

// decideHealth: down wins; a silent agent no longer counts; a checked edge
// keeps its persisted health until its first result; a change of source
// is not a change of health; only real changes are transitions.
func TestDecideHealth(t *testing.T) {
	edges := []store.Edge{{ID: "a", Check: "tcp://a:1"}, {ID: "b"}}
	earlier := healthNow.Add(-time.Minute)
	agent := func(up bool, age time.Duration) agentReport {
		return agentReport{observation: observation{up: up, since: earlier}, at: healthNow.Add(-age), interval: 10 * time.Second}
	}
	check := func(up bool) observation { return observation{up: up, since: earlier} }
	for _, tc := range []struct {
		name    string
		prev    map[string]mapping.Health
		ev      healthEvidence
		want    map[string]mapping.Health // a's and b's
		changed []string
	}{
		{name: "nothing known: up, first decided",
			want:    map[string]mapping.Health{"a": {Up: true, Source: mapping.HealthNone, Since: healthNow}, "b": {Up: true, Source: mapping.HealthNone, Since: healthNow}},
			changed: []string{"a", "b"}},
		{name: "persisted, until a check says",
			ev: healthEvidence{persisted: map[string]store.EdgeHealth{"a": {Up: false, Source: "check", Since: earlier, Reason: "tcp://a:1 failed 3 times in a row: refused"},
				"b": {Up: false, Since: earlier}}},
			want: map[string]mapping.Health{"a": {Up: false, Source: mapping.HealthPersisted, Since: earlier,
				Reason: "as decided before the restart, until its first check: tcp://a:1 failed 3 times in a row: refused"}, "b": {Up: true, Source: mapping.HealthNone, Since: healthNow}},
			changed: []string{"a", "b"}},
		{name: "agent down beats check up",
			ev:      healthEvidence{agents: map[string]agentReport{"a": agent(false, time.Second)}, checks: map[string]observation{"a": check(true)}},
			prev:    map[string]mapping.Health{"a": {Up: true, Source: mapping.HealthCheck, Since: earlier}, "b": {Up: true, Source: mapping.HealthNone, Since: earlier}},
			want:    map[string]mapping.Health{"a": {Up: false, Source: mapping.HealthAgent, Since: earlier, Reason: "its probe agent reports it down"}, "b": {Up: true, Source: mapping.HealthNone, Since: earlier}},
			changed: []string{"a"}},
		{name: "check down beats agent up",
			ev:   healthEvidence{agents: map[string]agentReport{"a": agent(true, time.Second)}, checks: map[string]observation{"a": check(false)}},
			prev: map[string]mapping.Health{"a": {Up: false, Source: mapping.HealthCheck, Since: earlier}, "b": {Up: true, Source: mapping.HealthNone, Since: earlier}},
			want: map[string]mapping.Health{"a": {Up: false, Source: mapping.HealthCheck, Since: earlier}, "b": {Up: true, Source: mapping.HealthNone, Since: earlier}}},
		{name: "a silent agent no longer counts",
			ev:   healthEvidence{agents: map[string]agentReport{"a": agent(false, 31*time.Second)}},
			prev: map[string]mapping.Health{"a": {Up: false, Source: mapping.HealthAgent, Since: earlier}, "b": {Up: true, Source: mapping.HealthNone, Since: earlier}},
			want: map[string]mapping.Health{"a": {Up: true, Source: mapping.HealthNone, Since: healthNow,
				Reason: "its probe agent went silent, and no check of this server's says otherwise"}, "b": {Up: true, Source: mapping.HealthNone, Since: earlier}},
			changed: []string{"a"}},
		{name: "a change of source keeps Since",
			ev:   healthEvidence{checks: map[string]observation{"a": {up: true, since: healthNow}}},
			prev: map[string]mapping.Health{"a": {Up: true, Source: mapping.HealthAgent, Since: earlier}, "b": {Up: true, Source: mapping.HealthNone, Since: earlier}},
			want: map[string]mapping.Health{"a": {Up: true, Source: mapping.HealthCheck, Since: earlier}, "b": {Up: true, Source: mapping.HealthNone, Since: earlier}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prev := maps.Clone(tc.prev)
			next, changed := decideHealth(tc.prev, tc.ev, edges, healthNow)
			if !maps.Equal(next, tc.want) {
				t.Errorf("health %+v, want %+v", next, tc.want)
			}
			if got := sortedEdges(changed); !slices.Equal(got, tc.changed) {
				t.Errorf("changed %v, want %v", got, tc.changed)
			}
			for id, h := range changed {
				if next[id] != h {
					t.Errorf("transition %s %+v is not the health decided, %+v", id, h, next[id])
				}
			}
			if !maps.Equal(prev, tc.prev) {
				t.Errorf("decideHealth changed the previous state: %+v, was %+v", tc.prev, prev)
			}
		})
	}
	// Deciding again from the state it returned changes nothing: a
	// transition is reported once.
	ev := healthEvidence{checks: map[string]observation{"a": check(false)}}
	first, _ := decideHealth(nil, ev, edges, healthNow)
	if again, changed := decideHealth(first, ev, edges, healthNow.Add(time.Second)); len(changed) != 0 || !maps.Equal(again, first) {
		t.Errorf("the same evidence again: %+v changed %v", again, changed)
	}
	// An edge that is gone is not decided.
	if next, _ := decideHealth(first, ev, edges[1:], healthNow); len(next) != 1 {
		t.Errorf("edges gone still decided: %+v", next)
	}
}

// The evidence: an agent's report says whether its view changed; forget
// drops edges that are gone and checks that are no longer run.
func TestHealthEvidence(t *testing.T) {
	ev := newEvidence(nil)
	if !ev.reported("a", true, healthNow, time.Second) || ev.reported("a", true, healthNow.Add(time.Second), time.Second) {
		t.Error("an agent's first report and only a flip are changes")
	}
	if !ev.reported("a", false, healthNow.Add(2*time.Second), time.Second) {
		t.Error("a flip is a change")
	}
	ev.checked("a", false, healthNow, "test")
	ev.checked("b", false, healthNow, "test")
	ev.checked("b", false, healthNow.Add(time.Hour), "test") // no change: since stays
	snap := ev.snapshot()
	if got := snap.checks["b"].since; !got.Equal(healthNow) {
		t.Errorf("an unchanged check result moved since to %v", got)
	}
	ev.checked("c", true, healthNow, "test")
	if !ev.forget([]store.Edge{{ID: "a"}, {ID: "b"}}, map[string]bool{"a": true}) {
		t.Error("forget dropped no check result")
	}
	snap = ev.snapshot()
	if _, ok := snap.checks["b"]; ok {
		t.Error("the result of a check no longer run is kept")
	}
	if _, ok := snap.checks["a"]; !ok {
		t.Error("a check still run was forgotten")
	}
	if ev.forget([]store.Edge{{ID: "b"}}, nil) != true || len(ev.snapshot().agents) != 0 {
		t.Error("an edge that is gone kept its agent's word")
	}
	// The snapshot is a copy: later evidence does not change it.
	ev.checked("b", true, healthNow, "test")
	if _, ok := snap.checks["b"]; ok {
		t.Error("a snapshot changed after it was taken")
	}
}
