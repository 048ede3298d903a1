package events

import "time"

// Kind is what happened.
type Kind string

// The kinds of event.
const (
	LegFailed        Kind = "leg-failed"         // a mirror leg reports a failure
	LegRepaired      Kind = "leg-repaired"       // a failed leg is healthy again
	LegRepairStarted Kind = "leg-repair-started" // a new leg was loaded and resyncs
	PeerUp           Kind = "peer-up"            // a volume's sender reached its peer
	PeerDown         Kind = "peer-down"          // a volume's sender lost its peer
	ConsistentPoint  Kind = "consistent-point"   // the peer's replica equals the volume again
	VerifyDiffers    Kind = "verify-differences"
	StoreFailed      Kind = "store-failed" // the dirty log's state store failed
)

// Kinds lists every kind, for documentation and validation.
var Kinds = []Kind{LegFailed, LegRepaired, LegRepairStarted, PeerUp, PeerDown, ConsistentPoint, VerifyDiffers, StoreFailed}

// Event is one thing that happened on the node.
type Event struct {
	// Seq numbers the hub's events from 1, without gaps.
	Seq     uint64    `json:"seq"`
	Time    time.Time `json:"time"`
	Kind    Kind      `json:"kind"`
	Volume  string    `json:"volume,omitempty"`
	Message string    `json:"message"`
}
