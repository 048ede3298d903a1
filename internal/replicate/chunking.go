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
	// ChunkingFixed cuts 16 KiB chunks at multiples of 16 KiB, each
	// offered with its 4 KiB blocks' fingerprints so that only changed
	// blocks are sent. It fits ciphertext (dm-crypt on top), where writes
	// happen in place, and lets the sender skip chunks whose fingerprint
	// did not move.
	ChunkingFixed = "fixed"
	// ChunkingCDC is blockhash's content-defined chunker with its resync
	// pass (avg 64 KiB). It fits plaintext volumes, where insertions
	// shift data.
	ChunkingCDC = "cdc"
	// ChunkingAuto picks fixed if a dm-crypt device sits on top of the
	// volume when it is first sent, cdc otherwise.
	ChunkingAuto = "auto"
)

// The formats recorded per volume and peer. ChunkingCDC is recorded as
// itself; ChunkingFixed as fixedFormat. A replica recorded as plain
// "fixed" was made when fixed chunks were 4 KiB, and keeps them.
const (
	fixedFormat       = "fixed-16k"
	legacyFixedFormat = "fixed"
	// FixedChunkSize is the chunk of fixed chunking (fixedFormat). 16 KiB rather than 4 KiB:
	// zeebo/blake3 hashes a 4 KiB input on half of its SIMD lanes (as
	// internal/blake3batch does not, on a CPU without AVX-512), and the
	// replica's index holds a quarter of the keys (make bench: full sync
	// 0.43x rsync -W at 4 KiB, 0.84x at 16 KiB, 0.83x at 32 KiB, where
	// the delta after scattered 4 KiB writes got slower: 5.1x rsync
	// against 6.4x).
	FixedChunkSize = 16 << 10
)

// formatOf returns the format a chunking name (not auto) is recorded as.
func formatOf(chunking string) string {
	if chunking == ChunkingFixed {
		return fixedFormat
	}
	return chunking
}

// chunkingKind returns the chunking name (fixed or cdc) of a recorded format.
func chunkingKind(format string) string {
	if format == fixedFormat || format == legacyFixedFormat {
		return ChunkingFixed
	}
	return format
}

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
	var format string
	switch had := chunkingKind(p.Chunking); {
	case p.Chunking != "" && (want == had || want == ChunkingAuto):
		format = p.Chunking
	case p.Chunking != "":
		return nil, fmt.Errorf("%w: volume %s is replicated to %s with %s chunking, and this node is set to %s: set it back to %s (or %s), or replicate the volume to a new replica",
			ErrChunkingChanged, src.LogUUID, peer, had, want, had, ChunkingAuto)
	case want == ChunkingAuto:
		format = formatOf(ChunkingCDC)
		if cryptOnTop(src.Path) {
			format = formatOf(ChunkingFixed)
		}
	default:
		if err := validChunking(want); err != nil {
			return nil, err
		}
		format = formatOf(want)
	}
	if format == fixedFormat && p.Chunking == "" && m.opts.Log != nil {
		// A chunk must not reach past its region: regions are read, and
		// frozen for a consistency point, one by one.
		if rs, _, err := m.opts.Log.RegionSize(src.LogUUID); err == nil && rs < FixedChunkSize {
			format = legacyFixedFormat
		}
	}
	c, err := chunkerOf(format)
	if err != nil {
		return nil, err
	}
	if p.Chunking == "" {
		if err := m.opts.Store.RecordChunking(src.LogUUID, peer, format); err != nil {
			return nil, fmt.Errorf("record the chunking of %s: %w", src.LogUUID, err)
		}
	}
	return c, nil
}

// validChunking checks a chunking name a user gave.
func validChunking(name string) error {
	switch name {
	case ChunkingFixed, ChunkingCDC, ChunkingAuto:
		return nil
	}
	return fmt.Errorf("%w: chunking %q: want %s, %s or %s", ErrInvalid, name, ChunkingFixed, ChunkingCDC, ChunkingAuto)
}

// chunkerOf returns the chunker of a recorded format.
func chunkerOf(format string) (rpc.Chunker, error) {
	switch format {
	case fixedFormat:
		return rpc.FixedChunker{Size: FixedChunkSize}, nil
	case legacyFixedFormat:
		return rpc.FixedChunker{Size: blockhash.BlockSize}, nil
	case ChunkingCDC:
		c, err := blockhash.NewChunker(blockhash.DefaultParams())
		if err != nil {
			return nil, err
		}
		return rpc.NewCDCChunker(c, nil), nil
	}
	return nil, fmt.Errorf("%w: recorded chunking %q is not one this version knows (%s, %s or %s): run the dmsyncd that made the replica, or replicate the volume to a new replica",
		ErrInvalid, format, fixedFormat, legacyFixedFormat, ChunkingCDC)
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
