// Package fleet makes a name server one of a fleet: the configuration
// (zone, edges, properties, targets, drain state), the probe keys and the
// DNS cookie secret live in etcd (go.etcd.io/etcd/client/v3), each server
// copies them into its own bbolt file and answers from the copy, and the
// servers register themselves and share their demand there. It imports
// node (whose seams it implements: node.ConfigStore, node.KeyStore,
// node.DemandShare) and store; nothing imports it but the wiring and the
// admin API.
//
// # Basics
//
// Open reads the copy in the server's file; it needs no etcd. Start
// follows etcd for the node: a read of everything at one revision, then
// etcd's watch from there (a configuration another server committed is
// copied into the file and published with node.ConfigChanged), and a poll
// of the configuration's revision every 0.5 s that says whether etcd is
// reachable and starts a new read whole when the copy is behind (the
// watch cannot resume past a compaction, or missed something). Register
// adds the server to the registry once it answers. Close stops it all.
//
// A write (CommitConfig) is checked by the node against the copy at
// revision R, and committed in etcd only if the configuration there is
// still at R: the blobs it adds first, then one transaction conditional on
// the manifest's ModRevision (layout.go). The loser of two writes gets
// store.ErrConflict after its copy caught up, and node.Update makes it
// again on the winner. While etcd is unreachable, writes fail with
// node.ErrConfigUnavailable and the server answers from its copy. The SOA
// serial is derived from the revision (serialAt), so the same
// configuration has the same serial on every server.
//
// # Concurrency
//
// Every exported method is safe for concurrent use. applyMu serializes the
// changes of the configuration copy and keysMu those of the keys' copy;
// either may be held across a request to etcd (each bounded by 3 s), and
// each is taken before mu, a leaf lock guarding the in-memory state. The
// goroutines (follow, poll, register, and one blob collection at a time)
// end with Close. The node is called (ConfigChanged, Status) without any
// lock held.
//
// # Caveats
//
// Two servers of a fleet may disagree, briefly or on purpose:
//   - on the configuration, between a commit and the other server's copy
//     of it (milliseconds; at most 2 s after etcd is reachable again);
//   - on measurements: each server keeps the reports it received, and one
//     that missed a report (down, or cut off from the agent) ranks by the
//     ones it has until the agent's next round reaches it;
//   - on health: each server runs the edges' health checks itself;
//   - on stability: a unit kept on its edge for stability stays where the
//     server's own previous map had it, so servers whose histories differ
//     (one restarted, or missed a map) may answer a unit differently until
//     the better edge wins by more than the stability threshold;
//   - on demand, for one map interval when a server's record reached
//     another after it built.
package fleet
