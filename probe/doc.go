// Package probe owns edgemap's measurement path between the edges and the
// name servers: the probe agent that runs beside an edge (agent.go), the
// wire format of its reports (Report, Target), their HMAC signature (Sign,
// Verify, Key), and the collector, the name server's HTTP handlers that
// take reports and hand out targets (Collector).
//
// # Basics
//
// Every interval the agent TCP-connects to each target's probe address a
// few times and posts one Report (RTT median and loss per target) to
// POST /v1/reports on every name server, signed with its key (Sign). The
// collector checks the signature and timestamp (Verify), decodes the body
// strictly (DecodeReport), checks that the key's edge and the targets
// exist, and stores the report through CollectorStore.Accept, which also
// enforces a strictly increasing sequence number per key, so a captured
// request cannot be replayed. The agent learns what to measure from
// GET /v1/targets, signed the same way.
//
// The package never imports the store: the name server implements
// CollectorStore over it. It imports mapping only for what every edgemap
// package shares: FieldError, the error of every answer (WriteError, here
// because the collector is the HTTP surface the rest of edgemap can
// import, writes it for the admin API too), and the rule an edge or key ID
// follows (mapping.CheckID).
//
// An agent signs every attempt anew with a fresh, larger seq, so its own
// retries are never replays; a 409 means a seq was reused (a clock stepped
// back, or a captured request was sent again). The host is not signed: an
// agent sends the same report to every name server, each of which keeps
// its own last seq per key.
//
// # Concurrency
//
// Sign, Verify, DecodeReport and Report.Validate are pure functions of
// their arguments and safe to call concurrently. A Collector's handlers
// run concurrently, one per request; they share nothing but the Collector's
// fields, which must not change after Register, and the CollectorStore,
// which must be safe for concurrent use. There is no package-level state.
//
// # Caveats
//
// The signature authenticates; it does not encrypt. Measurements and
// target lists travel in clear unless the listener is behind TLS.
//
// Each report request holds up to MaxReportBytes of body plus its decoded
// form in memory. The collector bounds the uploads in flight per key ID
// (Collector.UploadsPerKey) and the body bytes they may hold together
// (Collector.MaxBufferedBytes), and reads a body under its own deadline
// (Collector.BodyTimeout); the number of connections and their header and
// idle timeouts are the HTTP server's to bound.
package probe
