package opstate

import (
	"context"
	"time"

	"github.com/dmsync/dmsync/logd"
)

// Snapshot is the state of one node at Time.
type Snapshot struct {
	Time    time.Time `json:"time"`
	Node    string    `json:"node,omitempty"` // node id; "" before `dmsync init`
	Version string    `json:"version"`        // dmsyncd's release (internal/version)
	// Volumes are the local volumes: replicated ones and those with legs.
	Volumes []Volume `json:"volumes"`
	// Receives are the replicas this node receives from peers.
	Receives []Receive `json:"receives"`
	// Log is the log server's counters; nil when they are not available
	// (a log server in another process that did not answer).
	Log *logd.Stats `json:"log,omitempty"`
	// Errors lists what could not be read for this snapshot, one line each.
	Errors []string `json:"errors,omitempty"`
}

// Volume is one local volume.
type Volume struct {
	Name    string `json:"name"`
	LogUUID string `json:"log_uuid,omitempty"`
	// Peer is the node id the volume replicates to; "" when not replicated.
	Peer     string `json:"peer,omitempty"`
	PeerAddr string `json:"peer_addr,omitempty"`
	// PeerUp is true while the sender is connected and the peer answers.
	PeerUp bool `json:"peer_up"`
	// State is replication's one-line account of the sender; StateKind
	// its class, as `dmsync status --json` names it (synced, syncing,
	// starting, peer-unreachable, refused, failing, peer-full, ...).
	State     string `json:"state,omitempty"`
	StateKind string `json:"state_kind,omitempty"`
	// Synced: at least one pass completed and no region is pending, so
	// the peer holds the volume as of Time.
	Synced bool `json:"synced"`

	Size       uint64 `json:"size"`        // bytes
	RegionSize uint64 `json:"region_size"` // bytes
	Regions    uint64 `json:"regions"`

	// PendingRegions are regions written and not yet acknowledged by the
	// peer; PendingBytes is their size.
	PendingRegions uint64 `json:"pending_regions"`
	PendingBytes   uint64 `json:"pending_bytes"`
	// PendingMap is the volume cut into len(PendingMap) equal cells, each
	// the fraction of its regions that are pending (0 to 1).
	PendingMap []float32 `json:"pending_map,omitempty"`

	BytesRead uint64        `json:"bytes_read"` // read from the volume to replicate
	BytesSent uint64        `json:"bytes_sent"` // chunk payload sent to the peer
	Rate      float64       `json:"rate"`       // bytes read per second
	ETA       time.Duration `json:"eta_ns"`
	// LastAck is when the peer last durably acknowledged a batch.
	LastAck time.Time `json:"last_ack,omitzero"`
	// LastConsistent is the last moment the peer's replica equalled the
	// volume (every write before it acknowledged): the recovery point.
	// Set by a Tracker; zero while none was seen.
	LastConsistent time.Time `json:"last_consistent,omitzero"`
	// PointSeq numbers the peer's consistency points (0: none); the peer's
	// replica is exactly the volume as it was at PointTakenAt, and making
	// that point paused the volume's writes for PointPause.
	PointSeq     uint64        `json:"point_seq,omitempty"`
	PointTakenAt time.Time     `json:"point_taken_at,omitzero"`
	PointPause   time.Duration `json:"point_pause_ns,omitempty"`

	// Legs are the mirror's legs, when the leg watcher reports them.
	Legs []Leg `json:"legs,omitempty"`
}

// Leg is one mirror leg.
type Leg struct {
	Index  int    `json:"index"`
	Device string `json:"device"` // major:minor or path
	// Health is the kernel's word for it: "alive", "write-failed",
	// "sync-failed", "read-failed", "flush-failed" or "failed".
	Health string `json:"health"`
	OK     bool   `json:"ok"`
}

// Receive is one replica this node receives.
type Receive struct {
	Volume string `json:"volume"`
	From   string `json:"from"` // sender's node id
	Image  string `json:"image"`
	Size   uint64 `json:"size"`
	// Root is the replica's root (its Merkle tree's, rpc.RootInfo) (hex); Applying is true while
	// a batch is half applied.
	Root     string `json:"root,omitempty"`
	Applying bool   `json:"applying"`
	Err      string `json:"error,omitempty"`
}

// Source produces snapshots. Implementations must not block the log
// server: they read status snapshots, never hold its lock for long.
type Source interface {
	Snapshot(ctx context.Context) Snapshot
}

// SourceFunc adapts a function to a Source.
type SourceFunc func(ctx context.Context) Snapshot

// Snapshot implements Source.
func (f SourceFunc) Snapshot(ctx context.Context) Snapshot { return f(ctx) }

// Volume returns the volume named name, or false.
func (s *Snapshot) Volume(name string) (*Volume, bool) {
	for i := range s.Volumes {
		if s.Volumes[i].Name == name {
			return &s.Volumes[i], true
		}
	}
	return nil, false
}

type pendingMapKey struct{}

// WithPendingMap asks the Source for each volume's PendingMap, which costs
// a copy of the volume's pending regions from the dirty log: only the web
// view asks for it, not the once-a-second event watcher nor a scrape.
func WithPendingMap(ctx context.Context) context.Context {
	return context.WithValue(ctx, pendingMapKey{}, true)
}

// WantsPendingMap reports whether ctx asks for pending maps.
func WantsPendingMap(ctx context.Context) bool {
	v, _ := ctx.Value(pendingMapKey{}).(bool)
	return v
}
