package config

import "time"

// Node is a name server as a fleet's registry holds it (each server writes
// its own, under a lease) and as GET /v1/nodes and `edgemap node list`
// show it.
type Node struct {
	ID string `json:"id"`
	// DNS is where the server answers (host:port); API its admin API's
	// URL, which probe agents report to.
	DNS string `json:"dns"`
	API string `json:"api"`
	// Revision and Serial are those of the configuration of the map the
	// server publishes.
	Revision uint64 `json:"revision"`
	Serial   uint32 `json:"serial"`
	// MapBuilt is the time the published map is right for: the time it
	// was built for, or the last map interval that found nothing changed.
	MapBuilt time.Time `json:"map_built"`
	// Reports is how many probe reports the server accepted in the map
	// interval before Updated.
	Reports       uint64    `json:"reports_last_interval"`
	MapIntervalMs int64     `json:"map_interval_ms"`
	Started       time.Time `json:"started"`
	Updated       time.Time `json:"updated"`

	// Set by the server that answers, not registered: Self is that server;
	// Behind, a server that publishes an older configuration than the
	// fleet's latest.
	Self   bool `json:"self,omitempty"`
	Behind bool `json:"behind,omitempty"`
}

// Nodes is the answer of GET /v1/nodes: the fleet's name servers, or this
// one alone when it is not in a fleet.
type Nodes struct {
	Fleet bool `json:"fleet"`
	// Etcd is "ok" or why it is unreachable, in a fleet.
	Etcd string `json:"etcd,omitempty"`
	// Revision is the fleet's configuration revision, as the answering
	// server last saw it in etcd (its own when not in a fleet).
	Revision uint64 `json:"revision"`
	Nodes    []Node `json:"nodes"`
}
