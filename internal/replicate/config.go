package replicate

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/dmsync/dmsync/internal/admin"
	"github.com/dmsync/dmsync/internal/identity"
)

// Config is a node's replication configuration, kept as JSON in the state
// directory (config.json) so that an operator can read it. It changes only
// through the admin API, which writes it atomically.
type Config struct {
	Peers    []Peer    `json:"peers"`
	Sends    []Send    `json:"sends"`
	Receives []Receive `json:"receives"`
}

// Peer is a node pinned by its id, with the address it receives on.
type Peer struct {
	ID   string `json:"id"`
	Addr string `json:"addr"`
}

// Send replicates a local volume (a dm mirror with a userspace log, named
// as dmsetup names it) to a pinned peer.
type Send struct {
	Volume string `json:"volume"`
	Peer   string `json:"peer"`
	// As is the name the peer receives it under (replicate --as); empty:
	// its log uuid or, if the peer knows no such volume, Volume.
	As string `json:"as,omitempty"`
	// PointInterval is the least time between two consistency points of
	// the volume (replicate --point-interval); zero: a point as soon as
	// everything written was sent.
	PointInterval Duration `json:"point_interval,omitempty"`
	// Chunking is how changes are cut into chunks (replicate --chunking:
	// ChunkingFixed, ChunkingCDC or ChunkingAuto); empty: the node's
	// --chunking. The replica records the chunking of its first send.
	Chunking string `json:"chunking,omitempty"`
}

// Duration is a time.Duration written in config.json as "30s", "5m".
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("duration %q: %w (write it as 30s, 5m or 1h)", b, err)
	}
	if v < 0 {
		return fmt.Errorf("duration %q is negative", b)
	}
	*d = Duration(v)
	return nil
}

// Receive lets a peer send a volume into an image: a block device or a
// file. Volume is the sender's name for it: its log uuid, the name the
// sender's operator replicates it by, or its --as name.
type Receive struct {
	Volume string `json:"volume"`
	From   string `json:"from"`
	Image  string `json:"image"`
	Size   uint64 `json:"size"`
}

// ErrUnknownPeer is returned for a peer id that was not added.
var ErrUnknownPeer = admin.Define(admin.ErrNotFound, "unknown peer")

// Peer returns the pinned peer with the id.
func (c *Config) Peer(id string) (Peer, error) {
	for _, p := range c.Peers {
		if p.ID == id {
			return p, nil
		}
	}
	return Peer{}, fmt.Errorf("%w %s: pin it first with `dmsync peer add %s --addr HOST:PORT`", ErrUnknownPeer, id, id)
}

// Validate reports every problem of the configuration at once.
func (c *Config) Validate() error {
	var errs []error
	ids := map[string]bool{}
	for _, p := range c.Peers {
		if _, err := identity.ParseID(p.ID); err != nil {
			errs = append(errs, fmt.Errorf("peer %q: %w", p.ID, err))
		}
		if p.Addr == "" {
			errs = append(errs, fmt.Errorf("peer %s: no address", p.ID))
		}
		if ids[p.ID] {
			errs = append(errs, fmt.Errorf("peer %s listed twice", p.ID))
		}
		ids[p.ID] = true
	}
	sends := map[string]bool{}
	for _, s := range c.Sends {
		if s.Volume == "" {
			errs = append(errs, errors.New("a send without a volume"))
		}
		if !ids[s.Peer] {
			errs = append(errs, fmt.Errorf("send of %s: %w %s", s.Volume, ErrUnknownPeer, s.Peer))
		}
		key := s.Volume + "\x00" + s.Peer
		if sends[key] {
			errs = append(errs, fmt.Errorf("send of %s to %s listed twice", s.Volume, s.Peer))
		}
		sends[key] = true
	}
	recvs := map[string]bool{}
	for _, r := range c.Receives {
		if r.Volume == "" || r.Image == "" {
			errs = append(errs, fmt.Errorf("receive %q: needs a volume and an image", r.Volume))
		}
		if !filepath.IsAbs(r.Image) {
			errs = append(errs, fmt.Errorf("receive %s: image %q must be an absolute path", r.Volume, r.Image))
		}
		if _, err := identity.ParseID(r.From); err != nil {
			errs = append(errs, fmt.Errorf("receive %s: sender %q: %w", r.Volume, r.From, err))
		}
		if recvs[r.Volume] {
			errs = append(errs, fmt.Errorf("receive %s listed twice", r.Volume))
		}
		recvs[r.Volume] = true
	}
	return errors.Join(errs...)
}

// LoadConfig reads the configuration at path; a missing file is an empty
// configuration.
func LoadConfig(path string) (Config, error) {
	var c Config
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("read replication config: %w", err)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("replication config %s: %w (fix or remove the file)", path, err)
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("replication config %s: %w", path, err)
	}
	return c, nil
}

// Save writes the configuration to path atomically and durably.
func (c *Config) Save(path string) error {
	if err := c.Validate(); err != nil {
		return err
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".config-*.json")
	if err != nil {
		return fmt.Errorf("save replication config: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("save replication config: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("save replication config: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save replication config: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("save replication config: %w", err)
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// clone returns a deep copy, so a failed change leaves the original.
func (c *Config) clone() Config {
	return Config{Peers: slices.Clone(c.Peers), Sends: slices.Clone(c.Sends), Receives: slices.Clone(c.Receives)}
}
