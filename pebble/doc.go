// Package pebble holds all of dmsync's persistent state in CockroachDB's
// Pebble: the dirty log, the chunk index, fingerprints, Merkle nodes and
// replication progress.
//
// # Key schema
//
// Every key starts with a one-byte prefix naming its table. Integers in keys
// are big-endian so that keys sort in numeric order; names (log uuids,
// volume names) are length-prefixed. Prefix ranges belong to subsystems,
// and each subsystem's file documents its keys, values and which keys
// change together in one batch:
//
//	prefix  table                               file           owner
//	0x01    format version (u32)                db.go          Open
//	0x10    dirty log volume record             dirtylog.go    logd
//	0x11    in-sync bitmap chunk                dirtylog.go    logd
//	0x12    marked bitmap chunk                 dirtylog.go    logd
//	0x13    pending region -> generation        dirtylog.go    logd
//	0x20    chunk index volume record           chunkindex.go  rpc (RehashIndex)
//	0x21    chunk by offset                     chunkindex.go  rpc (RehashIndex)
//	0x22    chunk refcount by id                chunkindex.go  rpc (RehashIndex)
//	0x30    replica volume meta                 replica.go     rpc (receiver)
//	0x31    replica chunk by offset             replica.go     rpc (receiver)
//	0x32    replica chunk by id                 replica.go     rpc (receiver)
//	0x33    replica "applying" marker           replica.go     rpc (receiver)
//	0x34    replica point being staged          replicapoint.go  rpc (receiver)
//	0x35    replica staged batch                replicapoint.go  rpc (receiver)
//	0x36    replica recovery point              replicapoint.go  rpc (receiver)
//	0x38    send progress per volume and peer   replica.go     rpc (sender)
//	0x3c    replica image identity              replicaident.go  internal/replicate
//
// dmsyncd keeps two databases of this schema in its state directory, one
// per process: pebble/ holds 0x01 and the dirty log (0x1x) and is opened
// only by the log server; replica/ holds 0x01, the chunk index (0x2x) and
// replication state (0x3x) and is opened only by the replicator. A state
// directory of an older dmsyncd, which kept everything in pebble/, has its
// 0x20..0x3f keys moved to replica/ once, at start (cmd/dmsyncd).
//
// pebble stores; it does not chunk or hash (blockhash computes, rpc moves
// data: TestStorageImportsNoCompute enforces it).
//
// Durability is chosen where each write happens: batches that a reply to
// the kernel or a peer's ack depends on are synced before the reply.
package pebble
