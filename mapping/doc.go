// Package mapping decides which edges answer a lookup: it owns the zone's
// names, the properties and edges, client geolocation, scoring and ranking.
//
// # Basics
//
// Build makes an immutable Snapshot from Inputs (configuration, GeoIP,
// measurements, health, demand and the snapshot it replaces). Build is a
// pure, deterministic function of its inputs, so two name servers given the
// same configuration and reports answer alike; it reads no clock (Inputs.Now)
// and does no I/O. Its working state lives in an unexported builder that is
// dropped when Build returns: every method of Snapshot only reads.
//
// The zone holds more than properties: its name servers, its timers
// (Timers, defaults filled in by Build) and static records (Record: TXT,
// CAA, MX, and A, AAAA, CNAME of names that are not properties), which
// Build reads (ParseRecordData) into the RRsets of each Name and checks as
// RFC 1034 and RFC 2181 say a zone must look (records.go).
//
// A query looks its name up (Snapshot.Lookup) and decides with the
// ServedProperty it finds there (Decide, DecideQuery): ranked by the
// client's measured target when its ranking holds the property's edges,
// else by the client's GeoIP location, else by edge ID; the first edge may
// be moved for capacity or kept for stability by the snapshot's
// assignments. The Decision records that basis and the numbers it used, and
// Snapshot.Explain prints the record, so an explanation cannot disagree
// with the answer.
//
// # Concurrency
//
// A Snapshot and everything reachable from it (Names, ServedProperties,
// Decisions' pointers) is safe for concurrent use by any number of
// goroutines and must not be written to; the resolver reads one through an
// atomic pointer per query. Decide and DecideQuery are allocation-free.
//
// mapping does no I/O beyond opening a GeoIP database (OpenGeo) and imports
// nothing of edgemap. FieldError, the rules for IDs, answers and the
// all-down policy, and the typed states that cross packages (AllDownPolicy,
// HealthSource, AssignReason) live here because every other package may
// import it.
package mapping
