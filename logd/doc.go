// Package logd serves the device-mapper userspace dirty log
// (dm-log-userspace). A mirror target created with a "userspace" log sends
// every MARK, CLEAR and FLUSH to it over the kernel connector; from those
// requests logd knows which regions of a volume changed.
//
// The core is a pure state machine: decoded requests in, replies and a batch
// of state changes out. The netlink transport and Pebble persistence are thin
// shells around it.
//
//	codec.go, payload.go   wire format: nlmsghdr + cn_msg + dm_ulog_request
//	ctrargs.go             CTR arguments and their validation
//	core.go, volume.go     Core: Step, Ready/Advance, Tick (no I/O, no clock)
//	unseen.go              writes the kernel never MARKs (resync): pending at SET_REGION_SYNC
//	snapshot.go            Restore from the store; replicator queries
//	server.go, store.go    the shell: commit (sync) before replying; Replicator
//	connector_linux.go     the NETLINK_CONNECTOR socket
//	kerneltest/            a fake kernel speaking the wire format
//	testdata/*.txt         datadriven traces of request sequences
//
// # Durability
//
// A FLUSH is answered only after every region MARKed before it is durably
// marked and pending; in-sync bit changes are synced by the next FLUSH too.
// CLEARs stay in memory until a sync happens anyway or a checkpoint every
// CheckpointTicks ticks, so a re-MARK of a region still marked on disk needs
// no sync. After a
// crash of the machine, the table load's RESUME makes every region still
// marked on disk out of sync, and the kernel resyncs it.
//
// # Restarts of the daemon alone
//
// The kernel finds a restarted daemon in one of two ways: a request it sent
// to the dead daemon times out and is re-sent, and the restored log serves
// it at once; or a send failed while no daemon listened, and the kernel
// reconnects with CTR (with a trailing NUL, unlike a table load) and RESUME.
// Either way the kernel keeps its own region state, so no in-sync bit
// changes; marks whose CLEAR was lost expire after StaleMarkTicks unless the
// region is written again. A MARK is synced before its reply: the kernel
// re-sends only the unanswered request, never the MARKs before a FLUSH.
// A log the daemon has no state for answers -ESRCH (with a zeroed payload
// of the answer's size: the kernel keeps the reply size as the room for its
// retry). Generations jump to a new epoch at every restore, so a replicator
// never sees one reused.
//
// # Store failures
//
// A commit that fails (ENOSPC, EIO, a Pebble fatal error) or does not
// return within the commit timeout fails the store for the rest of the
// run (storefault.go): the server goes on answering the kernel from
// memory, writes nothing more, and refuses Replicated, PendAll and PendRegions, so no
// region is acknowledged that the disk does not hold as pending. Before
// that it sets the fail flag (failflag.go), a preallocated file written in
// place, which works on a full file system; the next start finds it and
// makes every region pending and marked (ResyncAll), as DRBD resyncs in
// full after losing its bitmap, and clears it only once that is stored.
package logd
