package logd

import "context"

// PendingRegion is a region that changed since a peer last acknowledged it.
// Gen is bumped on every MARK of the region; a replicator records it before
// reading the region and passes it back to Replicated.
type PendingRegion struct {
	Region uint64
	Gen    uint64
}

// Replicator is what the replication side (package rpc) sees of the dirty
// log. A region the kernel CLEARs stays pending: CLEAR only means the mirror
// legs agree. A region leaves the pending set only through Replicated, after
// the peer durably acknowledged its data.
type Replicator interface {
	// Volumes lists the UUIDs of the logs known to the daemon.
	Volumes() []string
	// RegionSize reports a volume's region size in bytes and region count.
	RegionSize(uuid string) (size uint64, count uint64, err error)
	// Pending lists the volume's pending regions in ascending order.
	Pending(uuid string) ([]PendingRegion, error)
	// Quiet reports whether the region has no outstanding MARK (no write
	// in flight). A replicator reads a region only while it is quiet.
	Quiet(uuid string, region uint64) (bool, error)
	// Replicated durably removes each region whose generation is still the
	// one given from the pending set, with one sync for the whole batch, and
	// reports how many it removed. A MARK since a generation was read leaves
	// that region pending.
	Replicated(uuid string, regions []PendingRegion) (int, error)
	// Changes returns a channel that receives a volume UUID whenever that
	// volume gains pending regions or becomes quiet. The channel is closed
	// when ctx is done. Sends never block the log: a slow reader may see
	// notifications coalesced.
	Changes(ctx context.Context) <-chan string
}
