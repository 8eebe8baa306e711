// Package mapping decides which edges answer a lookup: it owns the zone's
// names, the properties and edges, client geolocation, scoring and ranking.
//
// Everything is published as an immutable Snapshot built by Build off the
// query path. A Snapshot is safe for concurrent use by any number of
// goroutines; the resolver reads one through an atomic pointer per query.
// Build is a pure, deterministic function of its inputs, so two name servers
// given the same configuration answer alike.
//
// mapping does no I/O beyond opening a GeoIP database (OpenGeo).
package mapping
