package replicate

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/dmsync/dmsync/blockhash"
	"github.com/dmsync/dmsync/dmtarget"
	"github.com/dmsync/dmsync/rpc"
)

// Chunking names how a volume's changed ranges are cut into chunks. It is
// part of the replica's format: the peer's replica is made with the
// chunking of its first batch, and the sender records it per volume and
// peer, so it never changes under a replica.
const (
	// ChunkingFixed cuts 4 KiB blocks at multiples of 4 KiB. It fits
	// ciphertext (dm-crypt on top), where writes happen in place, and lets
	// the sender skip blocks whose fingerprint did not move.
	ChunkingFixed = "fixed"
	// ChunkingCDC is blockhash's content-defined chunker with its resync
	// pass (avg 64 KiB). It fits plaintext volumes, where insertions
	// shift data.
	ChunkingCDC = "cdc"
	// ChunkingAuto picks fixed if a dm-crypt device sits on top of the
	// volume when it is first sent, cdc otherwise.
	ChunkingAuto = "auto"
)

// ErrChunkingChanged: the volume is already replicated to the peer with
// another chunking.
var ErrChunkingChanged = errors.New("chunking differs from the one the replica was made with")

// chunkerFor returns the chunker src is sent to peer with: the chunking
// recorded for them, or on first use the send's (replicate --chunking) or
// else the node's (Options.Chunking), resolved for auto and recorded
// durably before any batch.
func (m *Manager) chunkerFor(src Source, peer, sendChunking string) (rpc.Chunker, error) {
	if m.opts.Chunker != nil {
		return m.opts.Chunker, nil
	}
	want := sendChunking
	if want == "" {
		want = m.opts.Chunking
	}
	if want == "" {
		want = ChunkingFixed
	}
	p, _, err := m.opts.Store.Progress(src.LogUUID, peer)
	if err != nil {
		return nil, err
	}
	switch {
	case p.Chunking != "" && (want == p.Chunking || want == ChunkingAuto):
		want = p.Chunking
	case p.Chunking != "":
		return nil, fmt.Errorf("%w: volume %s is replicated to %s with %s chunking, and this node is set to %s: set it back to %s (or %s), or replicate the volume to a new replica",
			ErrChunkingChanged, src.LogUUID, peer, p.Chunking, want, p.Chunking, ChunkingAuto)
	case want == ChunkingAuto:
		want = ChunkingCDC
		if cryptOnTop(src.Path) {
			want = ChunkingFixed
		}
	}
	c, err := newChunker(want)
	if err != nil {
		return nil, err
	}
	if p.Chunking == "" {
		if err := m.opts.Store.RecordChunking(src.LogUUID, peer, want); err != nil {
			return nil, fmt.Errorf("record the chunking of %s: %w", src.LogUUID, err)
		}
	}
	return c, nil
}

// newChunker returns a chunker for a chunking name.
func newChunker(name string) (rpc.Chunker, error) {
	switch name {
	case ChunkingFixed:
		return rpc.FixedChunker{Size: blockhash.BlockSize}, nil
	case ChunkingCDC:
		c, err := blockhash.NewChunker(blockhash.DefaultParams())
		if err != nil {
			return nil, err
		}
		return rpc.NewCDCChunker(c, nil), nil
	}
	return nil, fmt.Errorf("%w: chunking %q: want %s, %s or %s", ErrInvalid, name, ChunkingFixed, ChunkingCDC, ChunkingAuto)
}

// cryptOnTop reports whether a dm-crypt device holds the device at path
// (its sysfs holder's dm uuid starts with "CRYPT-").
func cryptOnTop(path string) bool {
	dev, err := filepath.EvalSymlinks(path)
	if err != nil {
		return false
	}
	holders, err := dmtarget.Holders("", filepath.Base(dev))
	if err != nil {
		return false
	}
	for _, h := range holders {
		if strings.HasPrefix(h.UUID, "CRYPT-") {
			return true
		}
	}
	return false
}
