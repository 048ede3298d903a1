// Package opstate is the operator's view of one dmsync node at one moment:
// its volumes with their legs and replication, the volumes it receives, and
// the log server's counters, as plain data. The metrics exporter
// (internal/metrics), the web view (internal/webview) and the event
// watcher (internal/events) read it.
//
// The daemon fills a Snapshot from its components' own status snapshots
// (replication's Status, the log server's Stats, the leg watcher), at the
// moment one is asked for; nothing here counts anything on the kernel's
// I/O path. A Tracker adds what only a sequence of snapshots shows: the
// last consistent point of each volume.
package opstate
