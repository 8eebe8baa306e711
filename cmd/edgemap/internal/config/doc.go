// Package config is the configuration as people write it and read it: the
// specs of the admin API's request bodies and of the world file (ZoneSpec,
// EdgeSpec, PropertySpec, TargetSpec, RecordSpec, WorldSpec), the records
// it answers with (Zone, Edge, Property, Target, Record, Key: the wire
// format, converted from the store's records so that the two can change
// apart), every validation rule an operator's input meets, the edits the
// API makes, apply (a world file merged into a configuration), and the
// Diff between two configurations.
//
// Validation happens at two levels, each rule written once: a spec checks
// its own fields (names, addresses, IDs, ranges; rules.go and mapping's
// CheckID, CheckAnswers and ParseAllDownPolicy), and Check checks a whole
// configuration the way the map reads it (mapping.Build), for what no
// single record shows. Errors are mapping.FieldErrors naming the field as
// the request or the file spells it ("edges[2].lat").
//
// Everything here is a pure function of its arguments, safe for concurrent
// use; edits change only the store.Config they are given. The running node
// (package node) commits configurations; this package never touches a
// store.
package config
