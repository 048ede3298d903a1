// Package logapi is the dirty log's local API: Server serves a
// logd.Replicator (the log server) over gRPC on a root-only unix socket,
// and Client implements logd.Replicator (and PendAll) over it for the
// replicator process. The replication code does not know which side of the
// socket it runs on.
//
// The log server and the replicator are separate processes so that nothing
// the replicator does (a panic, a runtime fatal error, a deadlock, the OOM
// killer, long GC pauses) can stop the log server answering the kernel; see
// cmd/dmsyncd.
package logapi
