package rpc

import "errors"

// Sentinel errors. Transports carry them across the wire (see
// rpc/grpctransport/status.go, the one place they map to gRPC codes), so a
// sender can branch on errors.Is whatever the transport.
var (
	// ErrPermission: the peer is not on the volume's allowlist.
	ErrPermission = errors.New("peer not allowed for this volume")
	// ErrUnknownVolume: the receiver has no replica configured by that name.
	ErrUnknownVolume = errors.New("unknown volume")
	// ErrVolumeMismatch: the volume sizes differ.
	ErrVolumeMismatch = errors.New("volume size differs")
	// ErrParamsMismatch: the chunker parameters differ.
	ErrParamsMismatch = errors.New("chunk parameters differ")
	// ErrBadOffer: an offer's ranges or chunks are malformed.
	ErrBadOffer = errors.New("malformed offer")
	// ErrChunkSize: chunk data of the wrong length (e.g. oversized).
	ErrChunkSize = errors.New("chunk data has the wrong length")
	// ErrHashMismatch: chunk data does not hash to its id.
	ErrHashMismatch = errors.New("chunk data does not match its BLAKE3-256 id")
	// ErrProtocol: messages out of order, unrequested or duplicate chunks,
	// or a batch finished before every needed chunk arrived.
	ErrProtocol = errors.New("protocol violation")
	// ErrNoSpace: the receiver's disk is full.
	ErrNoSpace = errors.New("receiver out of space")
	// ErrUnavailable: the peer cannot be reached or the connection broke.
	ErrUnavailable = errors.New("peer unavailable")
	// ErrRootMismatch: the peer acknowledged with a root other than the
	// sender computed for its own chunk list.
	ErrRootMismatch = errors.New("replica root differs from source")
	// ErrStaged: the replica holds a consistent point, so a batch written
	// in place would tear it; the sender must stage its batches
	// (Offer.Point) and commit them as a point.
	ErrStaged = errors.New("replica holds a consistent point: batches must be staged")
	// ErrPointLost: the receiver does not hold the point being committed
	// as the sender sent it (it restarted, or another point replaced it);
	// the sender starts the point again.
	ErrPointLost = errors.New("point not staged on the receiver")
)

// Permanent reports whether retrying err cannot help without an operator:
// the sender stops instead of backing off.
func Permanent(err error) bool {
	return errors.Is(err, ErrPermission) || errors.Is(err, ErrUnknownVolume) ||
		errors.Is(err, ErrVolumeMismatch) || errors.Is(err, ErrParamsMismatch)
}

// ErrSource wraps a failure to read or chunk the source volume: the sender
// stops, and its owner reopens the volume before starting it again.
var ErrSource = errors.New("cannot read the source volume")
