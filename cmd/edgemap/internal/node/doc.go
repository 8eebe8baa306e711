// Package node is one running name server: it publishes the map the
// resolver answers from, and keeps everything the map is built from, the
// configuration (through a ConfigStore), the measurements, the edges'
// health and the demand.
//
// # Basics
//
// New loads the node's state from its store, publishes a first map (as of
// the map published before a restart, so that a restarted server answers
// as it did) and starts the builder and the health checks. Run runs the
// map loop until its context ends; Close stops everything and waits for
// it. Snapshot is the published map, read lock-free per query; Demand is
// fed per query; Collector is what the probe collector stores reports
// through; Update changes the configuration.
//
// Every map is built and published by one goroutine, the builder
// (build.go). Whoever wants a map asks for one (request) and may wait for
// the build that covers the request; requests that come while a map is
// being built are taken together by the next one. The map is rebuilt:
//
//   - when a configuration write is committed (Update, Seed): the write
//     returns once that map is published;
//   - when an edge's health may have changed: a check flips (probe.Monitor),
//     an agent's report says its edge went up or down (Collector), or a
//     check that was removed leaves an edge with no check result; published
//     at once, without waiting for the map interval;
//   - every map interval (Run): new measurements, new demand rates,
//     agents that went silent and measurements that aged out; an interval
//     in which none of these changed builds nothing (the published map is
//     right as of then too), collects no garbage and writes nothing;
//   - when the GeoIP database is reloaded (ReloadGeo, SIGHUP);
//   - once in New, the first map.
//
// In a fleet (package fleet), a configuration another server committed is
// one more trigger: the fleet's watch copies it into the ConfigStore and
// calls ConfigChanged, which publishes it as Update does. A fleet's
// DemandShare also turns the map interval's demand into the fleet's, and
// the interval's builds start on multiples of the interval of the wall
// clock, together on every server.
//
// Health is decided by a pure function of the health published before and
// the evidence collected since (decideHealth), for every map, and a
// transition takes effect only when the map that holds it is published:
// then it is persisted, logged and counted. A map that fails to build
// changes nothing, and the next one decides the same transitions again.
//
// A configuration write is checked (config.Check) and committed at the
// revision it was made to (ConfigStore.CommitConfig) before the builder
// sees it, without any lock of the node's: a health change is published
// while a large write is still being checked or committed, and waits at
// most for the build in progress.
//
// # Concurrency
//
// Every exported method is safe for concurrent use. Background work, which
// shares a core with the answers, runs one piece at a time (pace.go): a
// build (ahead of the others waiting), a report's decoding and checks
// (through probe.Collector.Background), its smoothing, commit and update
// of the measurements (Collector's Accept), a prune, the dashboard's
// measurement table. Its lock is taken before the node's others and held
// across the piece, a build and a report's commit included; a piece never
// waits for another. The other locks are each a leaf (none is held while another is
// taken, and none across a build, a store write or a call into the
// monitor), but for the measurements' lock during the pieces that read or
// change them:
//
//   - Node.mu guards the builder's requests and results;
//   - evidence.mu guards the health evidence;
//   - measurements.mu guards the measurements and their view; a report
//     holds its turn of background work, which also keeps one report's
//     read and update together, and takes mu to smooth and again to
//     update;
//   - probe.Monitor's own lock, taken only by the builder (Set) and by
//     Close after the builder has stopped. The monitor's loops report
//     through Node.request, which never blocks, so stopping a loop cannot
//     wait for the builder.
//
// The builder's own state (the configuration as last read, the health as
// published, the GeoIP database in use) is touched by the builder alone.
// Demand.Observe takes no lock at all.
package node
