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

	"github.com/dmsync/dmsync/internal/admin"
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
	// Chunking is how volumes are cut into chunks when first sent to a
	// peer: ChunkingFixed (the default), ChunkingCDC or ChunkingAuto.
	// Once a volume was sent, its recorded chunking is kept.
	Chunking string
	// ScrubRate caps the bytes per second scrubs from peers read from this
	// node's replica images, all together (0: rpc.DefaultScrubRate).
	ScrubRate uint64
	// Chunker, if set, overrides Chunking for every volume (tests).
	Chunker rpc.Chunker
	// Logger receives the manager's logs.
	Logger *slog.Logger
	// Dial tunes the connections to peers (tests inject faults here).
	Dial grpctransport.DialOptions
	// RetryDelay is the wait before a failed sender starts over (default 2 s).
	RetryDelay time.Duration
	// Freezer, if set, freezes a volume (by its log uuid) for consistency
	// points (rpc/senderpoint.go); nil: replicas are written in place and
	// hold no points.
	Freezer func(logUUID string) rpc.Freezer
}

// Errors callers branch on; each is also one of the admin API's kinds.
var (
	ErrNoIdentity = admin.Define(admin.ErrNotReady, "this node has no identity: run `dmsync init` and restart dmsyncd")
	ErrNoVolume   = admin.Define(admin.ErrNotFound, "no such replicated volume")
	ErrInvalid    = admin.Define(admin.ErrInvalid, "invalid request")
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

	mu       sync.Mutex
	cfg      Config
	sends    map[string]*sendState // by Send.Volume
	recv     *rpc.Receiver
	runCtx   context.Context
	wg       sync.WaitGroup
	restart  chan struct{} // receiver configuration changed
	wire     wireNames     // the names peers accepted for sent volumes
	probs    problems      // what the receiver could not do (problems.go)
	verifies verifies      // the running verifies' progress
	recvGen  chan struct{} // closed and replaced when the receiver is rebuilt
}

// New loads the configuration from StateDir. Nothing runs until Run.
func New(opts Options) (*Manager, error) {
	if opts.Log == nil || opts.Store == nil || opts.Resolve == nil {
		return nil, errors.New("replicate: needs a dirty log, a store and a resolver")
	}
	if opts.Chunking != "" {
		if err := validChunking(opts.Chunking); err != nil {
			return nil, err
		}
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
		recvGen: make(chan struct{}),
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
	return m.ReplicateAs(ctx, volume, peer, "")
}

// ReplicateAs is Replicate with the name the peer receives the volume
// under ("": its log uuid or volume, see wirename.go).
func (m *Manager) ReplicateAs(ctx context.Context, volume, peer, as string) (Source, error) {
	return m.ReplicateSend(ctx, Send{Volume: volume, Peer: peer, As: as})
}

// ReplicateSend starts s: Replicate with all of a send's settings.
func (m *Manager) ReplicateSend(ctx context.Context, s Send) (Source, error) {
	volume, peer, as := s.Volume, s.Peer, s.As
	if err := checkName("--as name", as); as != "" && err != nil {
		return Source{}, err
	}
	if m.opts.Self == nil {
		return Source{}, ErrNoIdentity
	}
	id, err := identity.ParseID(peer)
	if err != nil {
		return Source{}, fmt.Errorf("%w: peer %q: %w", ErrInvalid, peer, err)
	}
	if s.Chunking != "" {
		if err := validChunking(s.Chunking); err != nil {
			return Source{}, fmt.Errorf("replicate %s: --chunking: %w", volume, err)
		}
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
	s.Peer = id
	if s.Chunking != "" && s.Chunking != ChunkingAuto && m.opts.Chunker == nil {
		// A replica keeps the chunking it was made with: refuse another
		// now, not at the first batch.
		if p, _, err := m.opts.Store.Progress(src.LogUUID, id); err != nil {
			return Source{}, err
		} else if had := chunkingKind(p.Chunking); p.Chunking != "" && had != s.Chunking {
			return Source{}, fmt.Errorf("%w: %w: %s is replicated to %s with %s chunking: replicate it with --chunking %s (or auto), or to a new replica",
				ErrInvalid, ErrChunkingChanged, volume, id, had, had)
		}
	}
	if old, ok := m.sends[volume]; ok {
		if old.send == s {
			return src, nil
		}
		return Source{}, admin.Errorf(admin.ErrExists, "%s is already replicated to %s (one peer per volume): stop that first with `dmsync replicate stop %s`", volume, old.send.Peer, volume)
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

// runReceiver serves the receiver until ctx is done, rebuilding it when the
// configuration changes.
func (m *Manager) runReceiver(ctx context.Context) error {
	for {
		m.mu.Lock()
		recvs := slices.Clone(m.cfg.Receives)
		m.mu.Unlock()
		var vols []rpc.ReceiveVolume
		var files []*os.File
		m.probs.clearImages()
		m.probs.keepResets(receiveNames(recvs))
		for _, r := range recvs {
			f, err := m.openImage(r)
			if err != nil {
				m.log.Error("cannot receive volume", "volume", r.Volume, "err", err)
				m.probs.image(r.Volume, err)
				continue
			}
			files = append(files, f)
			vols = append(vols, rpc.ReceiveVolume{Name: r.Volume, Image: f, Size: r.Size, Senders: []string{r.From}})
		}
		vols = m.servable(vols)
		recv, err := rpc.NewReceiver(rpc.ReceiverConfig{Store: m.opts.Store, Log: m.log.With("component", "receiver"), Volumes: vols, StagingDir: m.stagingDir(), MaxScrubRate: m.opts.ScrubRate})
		var lis net.Listener
		if err != nil {
			err = fmt.Errorf("receiver: %w", err)
		} else if lis, err = net.Listen("tcp", m.opts.Listen); err != nil {
			err = fmt.Errorf("listen for peers on %s: %w (free the port or change --listen)", m.opts.Listen, err)
		}
		if err != nil {
			// The receiver fails alone: senders and the admin API go on,
			// and it is tried again.
			for _, f := range files {
				f.Close()
			}
			if !m.probs.receiverFailed(err) {
				m.log.Error("cannot receive from peers; retrying", "err", err)
			}
			select {
			case <-ctx.Done():
				return nil
			case <-m.restart:
			case <-time.After(m.probs.backoff()):
			}
			continue
		}
		m.probs.receiverOK()
		srv := grpctransport.NewServer(m.opts.Self, recv, m.log.With("component", "receiver"))
		m.mu.Lock()
		m.recv = recv
		close(m.recvGen)
		m.recvGen = make(chan struct{})
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
