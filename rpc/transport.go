package rpc

import (
	"context"

	"github.com/dmsync/dmsync/blockhash"
)

// Transport is the sender's seam to a receiver. Package grpctransport
// implements it over mutual-TLS gRPC; tests may wrap it to inject faults.
type Transport interface {
	// Apply opens a stream for one batch.
	Apply(ctx context.Context) (ApplyStream, error)
	// Root asks the receiver for its root over a volume's chunk list.
	Root(ctx context.Context, volume string) (RootInfo, error)
	// Tree returns the receiver's Merkle tree of a volume as a NodeSource
	// that fetches nodes on demand.
	Tree(ctx context.Context, volume string) blockhash.NodeSource
	// Commit applies a point staged by Offer.Point batches to the replica.
	Commit(ctx context.Context, c Commit) (Committed, error)
	// Scrub asks the receiver to re-read its image and calls each with the
	// digests of consecutive pieces, in ascending order (Receiver.Scrub).
	Scrub(ctx context.Context, req ScrubRequest, each func(ScrubDigests) error) error
}

// ApplyStream carries one batch: Offer, then Send for every run of needed
// chunks without waiting for replies, then Finish.
//
// The bytes given to Send and SendBlocks are the transport's to read until
// Finish returns an ack (the receiver then has them all). A stream that
// failed or was closed may go on reading them for a while after (gRPC's
// writer drains what it queued), so the caller must not change them again.
type ApplyStream interface {
	Offer(o *Offer) (Need, error)
	// Send sends chunks index, index+1, ... of one range, back to back.
	Send(index uint32, data []byte) error
	// SendBlocks sends the blocks of chunk index that Need.Blocks asked
	// for, back to back.
	SendBlocks(index uint32, data []byte) error
	// Finish waits for the durable ack; wantRoot asks for the replica's
	// root over its whole chunk list. If the receiver could not verify
	// chunks patched from blocks, it returns no ack but the chunks to send
	// whole, after which Finish is called once more.
	Finish(wantRoot bool) (Ack, []int, error)
	// Close abandons the stream; it is safe after Finish.
	Close()
}
