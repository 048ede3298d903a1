package blockhash

import (
	"errors"
	"fmt"
)

// FormatVersion is the chunking format this package implements. Chunk
// boundaries are shared by peers and stored in the index: any change to the
// gear table, the cut rule or the hash functions must bump it, and the golden
// vectors in testdata/ must fail until it is bumped.
//
// Version 1: 64-byte gear rolling hash (table from splitmix64 seeded with
// GearSeed), normalized chunking (level 2), cut when the top bits of the
// hash are zero; chunk identity BLAKE3-256, fingerprint XXH64.
const FormatVersion = 1

// Limits on chunk sizes accepted by Params.Validate.
const (
	// MinChunkLimit is the smallest allowed Params.Min: the gear hash
	// window, so that every cut decision sees a full window of bytes.
	MinChunkLimit = 64
	// MaxChunkLimit bounds Params.Max and so the memory one chunker holds.
	MaxChunkLimit = 16 << 20
)

// Params are the chunking parameters of a volume. Together with Version
// they fix the chunk boundaries of any input, so they are stored with the
// index and must match between peers.
type Params struct {
	// Version is the chunking format, FormatVersion for this package.
	Version uint32
	// Min is the smallest chunk length; only a volume's last chunk may
	// be shorter.
	Min uint32
	// Avg is the target average chunk length (normalized chunking makes
	// the actual mean close to it).
	Avg uint32
	// Max is the largest chunk length; a chunk is cut there if no content
	// boundary was found.
	Max uint32
}

// DefaultParams returns the default parameters: 16/64/256 KiB. README.md
// gives the measurements behind the choice.
func DefaultParams() Params {
	return Params{Version: FormatVersion, Min: 16 << 10, Avg: 64 << 10, Max: 256 << 10}
}

// ErrParams is wrapped by every error from Params.Validate.
var ErrParams = errors.New("invalid chunking parameters")

// Validate reports every problem with p at once, or nil.
func (p Params) Validate() error {
	var errs []error
	if p.Version != FormatVersion {
		errs = append(errs, fmt.Errorf("version %d is not supported (this build implements version %d)", p.Version, FormatVersion))
	}
	if p.Min < MinChunkLimit {
		errs = append(errs, fmt.Errorf("min %d is below %d bytes", p.Min, MinChunkLimit))
	}
	if p.Avg <= p.Min {
		errs = append(errs, fmt.Errorf("avg %d must be greater than min %d", p.Avg, p.Min))
	}
	if p.Max <= p.Avg {
		errs = append(errs, fmt.Errorf("max %d must be greater than avg %d", p.Max, p.Avg))
	}
	if p.Max > MaxChunkLimit {
		errs = append(errs, fmt.Errorf("max %d exceeds %d bytes", p.Max, MaxChunkLimit))
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w %s: %w", ErrParams, p, errors.Join(errs...))
}

// String formats p as "v1 min/avg/max".
func (p Params) String() string {
	return fmt.Sprintf("v%d %d/%d/%d", p.Version, p.Min, p.Avg, p.Max)
}
