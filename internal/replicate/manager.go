package replicate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/dmsync/dmsync/internal/identity"
	"github.com/dmsync/dmsync/logd"
	"github.com/dmsync/dmsync/pebble"
	"github.com/dmsync/dmsync/rpc"
	"github.com/dmsync/dmsync/rpc/grpctransport"
)

// Source is a local volume resolved for sending.
type Source struct {
	// LogUUID is the userspace log's uuid: the volume's name in the dirty
	// log and on the peer.
	LogUUID string
	// Path is the device read (with O_DIRECT) for the volume's bytes: the
	// mirror device, below dm-crypt, so the peer only gets ciphertext.
	Path string
	// Size is the volume size in bytes.
	Size uint64
}

// Options configure a Manager.
type Options struct {
	// StateDir holds config.json.
	StateDir string
	// Listen is the TCP address to receive on; empty: this node does not
	// receive.
	Listen string
	// Self is the node's identity; nil: replication is off until
	// `dmsync init` made one and the daemon restarted.
	Self *identity.Identity
	// Log is the dirty log.
	Log logd.Replicator
	// Store holds replicas' indexes and send progress.
	Store *pebble.ReplicaStore
	// Resolve finds a local volume by name.
	Resolve func(ctx context.Context, volume string) (Source, error)
	// Chunker cuts changed ranges into chunks; peers must agree on it.
	Chunker rpc.Chunker
	// Logger receives the manager's logs.
	Logger *slog.Logger
	// Dial tunes the connections to peers (tests inject faults here).
	Dial grpctransport.DialOptions
	// RetryDelay is the wait before a failed sender starts over (default 2 s).
	RetryDelay time.Duration
}

// Errors callers branch on.
var (
	ErrNoIdentity = errors.New("this node has no identity: run `dmsync init` and restart dmsyncd")
	ErrNoVolume   = errors.New("no such replicated volume")
	ErrInvalid    = errors.New("invalid request")
)

// fullSyncer is the dirty log's way to make a whole volume pending
// (*logd.Server implements it): a new peer needs all of it.
type fullSyncer interface {
	PendAll(uuid string) error
}

// Manager runs a node's senders and receiver.
type Manager struct {
	opts Options
	path string
	log  *slog.Logger

	mu      sync.Mutex
	cfg     Config
	sends   map[string]*sendState // by Send.Volume
	recv    *rpc.Receiver
	runCtx  context.Context
	wg      sync.WaitGroup
	restart chan struct{} // receiver configuration changed
}

// New loads the configuration from StateDir. Nothing runs until Run.
func New(opts Options) (*Manager, error) {
	if opts.Log == nil || opts.Store == nil || opts.Resolve == nil || opts.Chunker == nil {
		return nil, errors.New("replicate: needs a dirty log, a store, a resolver and a chunker")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.RetryDelay == 0 {
		opts.RetryDelay = 2 * time.Second
	}
	path := filepath.Join(opts.StateDir, "config.json")
	cfg, err := LoadConfig(path)
	if err != nil {
		return nil, err
	}
	return &Manager{
		opts: opts, path: path, log: opts.Logger, cfg: cfg,
		sends: map[string]*sendState{}, restart: make(chan struct{}, 1),
	}, nil
}

// Run runs every configured sender and, if the node listens, the receiver,
// until ctx is done.
func (m *Manager) Run(ctx context.Context) error {
	m.mu.Lock()
	m.runCtx = ctx
	if m.opts.Self == nil && (len(m.cfg.Sends) > 0 || len(m.cfg.Receives) > 0) {
		m.log.Warn("replication configured but this node has no identity; run `dmsync init` and restart dmsyncd")
	}
	for _, s := range m.cfg.Sends {
		m.startSendLocked(s)
	}
	m.mu.Unlock()
	var err error
	if m.opts.Listen != "" && m.opts.Self != nil {
		err = m.runReceiver(ctx)
	} else {
		<-ctx.Done()
	}
	m.wg.Wait()
	return err
}

// Config returns a copy of the current configuration.
func (m *Manager) Config() Config {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cfg.clone()
}

// change applies fn to a copy of the configuration and saves it; only a
// saved configuration takes effect.
func (m *Manager) change(fn func(c *Config) error) error {
	c := m.cfg.clone()
	if err := fn(&c); err != nil {
		return err
	}
	if err := c.Save(m.path); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	m.cfg = c
	return nil
}

// AddPeer pins a peer (or changes its address).
func (m *Manager) AddPeer(p Peer) error {
	id, err := identity.ParseID(p.ID)
	if err != nil {
		return fmt.Errorf("%w: peer id %q: %w (copy it from `dmsync id` on the peer)", ErrInvalid, p.ID, err)
	}
	p.ID = id
	if _, _, err := net.SplitHostPort(p.Addr); err != nil {
		return fmt.Errorf("%w: peer address %q: %w (want HOST:PORT)", ErrInvalid, p.Addr, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.change(func(c *Config) error {
		c.Peers = slices.DeleteFunc(c.Peers, func(q Peer) bool { return q.ID == p.ID })
		c.Peers = append(c.Peers, p)
		return nil
	})
}

// Replicate starts replicating a local volume to a pinned peer and
// remembers it across restarts.
func (m *Manager) Replicate(ctx context.Context, volume, peer string) (Source, error) {
	if m.opts.Self == nil {
		return Source{}, ErrNoIdentity
	}
	id, err := identity.ParseID(peer)
	if err != nil {
		return Source{}, fmt.Errorf("%w: peer %q: %w", ErrInvalid, peer, err)
	}
	src, err := m.opts.Resolve(ctx, volume)
	if err != nil {
		return Source{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, err := m.cfg.Peer(id); err != nil {
		return Source{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	s := Send{Volume: volume, Peer: id}
	if old, ok := m.sends[volume]; ok {
		if old.send == s {
			return src, nil
		}
		return Source{}, fmt.Errorf("%w: %s is already replicated to %s (one peer per volume)", ErrInvalid, volume, old.send.Peer)
	}
	// The peer holds none of the volume yet: every region goes once.
	if p, ok := m.opts.Log.(fullSyncer); ok {
		if err := p.PendAll(src.LogUUID); err != nil {
			return Source{}, fmt.Errorf("start full sync of %s: %w", volume, err)
		}
	}
	if err := m.change(func(c *Config) error { c.Sends = append(c.Sends, s); return nil }); err != nil {
		return Source{}, err
	}
	m.startSendLocked(s)
	return src, nil
}

// Receive lets peer from send volume into image.
func (m *Manager) Receive(r Receive) error {
	if m.opts.Self == nil {
		return ErrNoIdentity
	}
	if m.opts.Listen == "" {
		return fmt.Errorf("%w: dmsyncd does not listen for peers: start it with --listen HOST:PORT", ErrInvalid)
	}
	id, err := identity.ParseID(r.From)
	if err != nil {
		return fmt.Errorf("%w: sender %q: %w", ErrInvalid, r.From, err)
	}
	r.From = id
	size, err := prepareImage(r.Image, r.Size)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	r.Size = size
	m.mu.Lock()
	defer m.mu.Unlock()
	err = m.change(func(c *Config) error {
		c.Receives = slices.DeleteFunc(c.Receives, func(q Receive) bool { return q.Volume == r.Volume })
		c.Receives = append(c.Receives, r)
		return nil
	})
	if err != nil {
		return err
	}
	select {
	case m.restart <- struct{}{}:
	default:
	}
	return nil
}

// prepareImage checks a replica image (creating a missing file of size
// bytes) and returns its size.
func prepareImage(path string, size uint64) (uint64, error) {
	if !filepath.IsAbs(path) {
		return 0, fmt.Errorf("image %q: give an absolute path", path)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		if size == 0 {
			return 0, fmt.Errorf("image %s does not exist: give its size (--size) to create it", path)
		}
		f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			err = f.Truncate(int64(size))
		}
	}
	if err != nil {
		return 0, fmt.Errorf("image %s: %w", path, err)
	}
	defer f.Close()
	n, err := f.Seek(0, 2)
	if err != nil {
		return 0, fmt.Errorf("image %s: %w", path, err)
	}
	if size == 0 {
		size = uint64(n)
	}
	if uint64(n) < size {
		return 0, fmt.Errorf("image %s holds %d bytes, the volume needs %d: use a larger device or file", path, n, size)
	}
	return size, nil
}

// openImage opens a replica image for the receiver.
func openImage(r Receive) (*os.File, error) {
	f, err := os.OpenFile(r.Image, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("replica image of %s: %w", r.Volume, err)
	}
	return f, nil
}

// runReceiver serves the receiver until ctx is done, rebuilding it when the
// configuration changes.
func (m *Manager) runReceiver(ctx context.Context) error {
	for {
		m.mu.Lock()
		recvs := slices.Clone(m.cfg.Receives)
		m.mu.Unlock()
		var vols []rpc.ReceiveVolume
		var files []*os.File
		for _, r := range recvs {
			f, err := openImage(r)
			if err != nil {
				m.log.Error("cannot receive volume", "volume", r.Volume, "err", err)
				continue
			}
			files = append(files, f)
			vols = append(vols, rpc.ReceiveVolume{Name: r.Volume, Image: f, Size: r.Size, Senders: []string{r.From}})
		}
		recv, err := rpc.NewReceiver(rpc.ReceiverConfig{Store: m.opts.Store, Log: m.log.With("component", "receiver"), Volumes: vols})
		if err != nil {
			return fmt.Errorf("receiver: %w", err)
		}
		lis, err := net.Listen("tcp", m.opts.Listen)
		if err != nil {
			return fmt.Errorf("listen for peers on %s: %w", m.opts.Listen, err)
		}
		srv := grpctransport.NewServer(m.opts.Self, recv, m.log.With("component", "receiver"))
		m.mu.Lock()
		m.recv = recv
		m.mu.Unlock()
		m.log.Info("receiving from peers", "listen", lis.Addr().String(), "volumes", len(vols))
		done := make(chan error, 1)
		go func() { done <- srv.Serve(lis) }()
		var serveErr error
		select {
		case <-ctx.Done():
		case <-m.restart:
		case serveErr = <-done:
		}
		srv.Stop()
		for _, f := range files {
			f.Close()
		}
		if ctx.Err() != nil {
			return nil
		}
		if serveErr != nil {
			return fmt.Errorf("receiver on %s: %w", m.opts.Listen, serveErr)
		}
	}
}
