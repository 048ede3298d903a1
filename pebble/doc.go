// Package pebble holds all of dmsync's persistent state in CockroachDB's
// Pebble: the dirty log, the chunk index, fingerprints, Merkle nodes and
// replication progress.
//
// # Key schema
//
// Every key starts with a one-byte prefix naming its table. Integers in keys
// are big-endian so that keys sort in numeric order. Prefix ranges are
// allocated per subsystem:
//
//	0x01        format version (value: u32 big-endian)
//	0x10..0x1f  dirty log (package logd)
//	0x20..0x2f  chunk index, refcounts, Merkle nodes (package blockhash)
//	0x30..0x3f  replication progress (package rpc)
//
// Each subsystem's file documents its own keys in detail.
package pebble
