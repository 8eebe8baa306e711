package mapping

import "time"

// Health is an edge's health as the name server last decided it.
type Health struct {
	Up     bool
	Source HealthSource
	Since  time.Time
	// Reason says why, in words: the failed check's error, the agent's
	// word. Empty for an edge nothing has said anything about.
	Reason string
}

// HealthSource is what decided an edge's health.
type HealthSource string

const (
	// HealthAgent: the probe agent beside the edge, while it reports.
	HealthAgent HealthSource = "agent"
	// HealthCheck: the name server's own checks of the edge.
	HealthCheck HealthSource = "check"
	// HealthPersisted: what was decided before a restart, until the
	// edge's first check completes.
	HealthPersisted HealthSource = "persisted"
	// HealthNone: nothing has said; the edge is up.
	HealthNone HealthSource = "none"
)

// applyHealth marks which edges may be answered and which properties have
// none left.
func (b *builder) applyHealth(health map[string]Health) {
	s := b.s
	s.health = make([]Health, len(s.edges))
	s.usable = make([]bool, len(s.edges))
	for i := range s.edges {
		h, ok := health[s.edges[i].ID]
		if !ok {
			h = Health{Up: true, Source: HealthNone}
		}
		s.health[i] = h
		s.usable[i] = h.Up && !s.edges[i].Draining
	}
	for _, p := range s.props {
		// A family no candidate has an address of is NODATA whatever the
		// health, not "all down".
		for fam, v6 := range []bool{false, true} {
			serves, usable := false, false
			for _, ei := range p.candidates {
				if s.edges[ei].Serves(v6) {
					serves = true
					usable = usable || s.usable[ei]
				}
			}
			p.allDown[fam] = serves && !usable
		}
	}
}

// AllDown lists the properties none of whose edges of some address family
// can be answered with, by name.
func (s *Snapshot) AllDown() []string {
	var out []string
	for _, p := range s.props {
		if p.allDown[0] || p.allDown[1] {
			out = append(out, p.Name)
		}
	}
	return out
}

// EdgeHealth is the health the snapshot was built with, by edge id.
func (s *Snapshot) EdgeHealth() map[string]Health { return byEdgeID(s, s.health) }
