package pebble

import "errors"

// ErrCorrupt means a stored key or value cannot be decoded or is
// inconsistent with its neighbours. The error wrapping it names the table,
// the volume and the offset or key. A corrupt chunk index is rebuilt from a
// full scan; a corrupt dirty log means the volume must be fully resynced.
var ErrCorrupt = errors.New("pebble: corrupt entry")
