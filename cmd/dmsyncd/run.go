package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/dmsync/dmsync/internal/admin"
	"github.com/dmsync/dmsync/internal/lockfile"
	"github.com/dmsync/dmsync/internal/replicate"
	"github.com/dmsync/dmsync/internal/sdnotify"
	"github.com/dmsync/dmsync/internal/version"
	"github.com/dmsync/dmsync/logd"
	"github.com/dmsync/dmsync/logd/logapi"
	"github.com/dmsync/dmsync/pebble"
	"github.com/dmsync/dmsync/rpc"
)

var (
	errUsage   = errors.New("usage error")
	errRestart = errors.New("restart requested")
	errVersion = errors.New("--version")
)

// DefaultConnectorLock is the host-wide lock of the kernel connector: the
// kernel takes the first reply, so two log servers must never both answer.
const DefaultConnectorLock = "/run/dmsync/connector.lock"

// Files in the state directory.
const (
	logSocketName = "logd.sock" // the log server's local API
	logDirName    = "pebble"    // the dirty log's Pebble
	replicaDir    = "replica"   // the replicator's Pebble
)

// config is the parsed command line.
type config struct {
	args          []string // as given, for the replicator
	stateDir      string
	logLevel      slog.Level
	listen        string // TCP address to receive from peers; "" = none
	adminSocket   string
	noConnector   bool // serve no dirty log (a node that only receives)
	connectorLock string
	watchdog      time.Duration // systemd's WatchdogSec (WATCHDOG_USEC), 0 = off
	ops           opsConfig     // metrics, events, web view (the replicator's)
	chunking      string        // how new replications cut chunks (replicate.Chunking*)
	fsfreeze      bool          // consistency points freeze the file system too
	scrubRate     uint64        // MiB/s all scrubs of replicas here may read together
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	c := config{args: args}
	fs := flag.NewFlagSet("dmsyncd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.stateDir, "state-dir", "/var/lib/dmsync", "directory for the state store and the lock file")
	level := fs.String("log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&c.listen, "listen", "", "receive replicas from peers on this TCP address (e.g. :7420); empty: do not receive")
	fs.StringVar(&c.adminSocket, "admin-socket", admin.DefaultSocket, "unix socket of the admin API (the dmsync CLI)")
	fs.BoolVar(&c.noConnector, "no-connector", false, "do not serve the kernel's dirty log (a node that only receives, or a second daemon in a network namespace)")
	fs.StringVar(&c.connectorLock, "connector-lock", DefaultConnectorLock, "host-wide lock file of the kernel connector (one log server per host)")
	addOpsFlags(fs, &c.ops)
	fs.BoolVar(&c.fsfreeze, "fsfreeze", false, "freeze the file system on a volume for each consistency point too (a clean point, not only crash-consistent; the pause includes writing out its dirty data)")
	fs.StringVar(&c.chunking, "chunking", replicate.ChunkingFixed, "how a new replication cuts changed ranges into chunks: fixed (16 KiB chunks, only their changed 4 KiB blocks sent: ciphertext, in-place writes), cdc (content-defined: plaintext with insertions) or auto (fixed under dm-crypt, else cdc); recorded per volume and peer, a replica keeps its own")
	fs.Uint64Var(&c.scrubRate, "scrub-max-rate", rpc.DefaultScrubRate>>20, "MiB per second that scrubs (dmsync verify from a peer) may read from this node's replica images, all together; a peer asking for more gets this")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return c, err
		}
		return c, fmt.Errorf("%w: %w", errUsage, err)
	}
	if *showVersion {
		return c, errVersion
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	if err := c.logLevel.UnmarshalText([]byte(*level)); err != nil {
		return c, fmt.Errorf("%w: --log-level %q: want debug, info, warn or error", errUsage, *level)
	}
	if c.stateDir == "" {
		return c, fmt.Errorf("%w: --state-dir must not be empty", errUsage)
	}
	if c.scrubRate < rpc.MinScrubRate>>20 || c.scrubRate > 1<<20 {
		return c, fmt.Errorf("%w: --scrub-max-rate %d: want MiB per second from %d to %d", errUsage, c.scrubRate, rpc.MinScrubRate>>20, 1<<20)
	}
	switch c.chunking {
	case replicate.ChunkingFixed, replicate.ChunkingCDC, replicate.ChunkingAuto:
	default:
		return c, fmt.Errorf("%w: --chunking %q: want %s, %s or %s", errUsage, c.chunking, replicate.ChunkingFixed, replicate.ChunkingCDC, replicate.ChunkingAuto)
	}
	c.watchdog = sdnotify.WatchdogInterval()
	return c, nil
}

// run parses args and serves the dirty log until ctx is done (a clean
// exit) or the log server itself fails.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, errVersion) {
		fmt.Fprintln(stdout, version.String("dmsyncd"))
		return nil
	}
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.logLevel}))
	d, err := openDaemon(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer d.close()
	d.childStderr = stderr
	dial := logd.DialConnector
	if cfg.noConnector {
		dial = noConnector
	}
	return d.serve(ctx, dial)
}

// daemon is the log server process: the store, the dirty log server, the
// local API and the supervisor of the replicator.
type daemon struct {
	cfg      config
	log      *slog.Logger
	lock     *lockfile.Lock
	connLock *lockfile.Lock
	adminLn  *net.UnixListener // nil if the admin socket could not be bound
	db       *pebble.DB
	flag     *logd.FailFlag
	logd     *logd.Server
	health   *health
	freezer  *freezer // suspends top devices for consistency points (freeze.go)
	reexec   bool     // the store failed and the state dir takes writes again
	// recoverEvery is how often a failed store's directory is probed.
	recoverEvery time.Duration

	// spawn starts the replicator; tests replace it.
	spawn       func(ctx context.Context, extra []*os.File, stderr io.Writer) (*child, error)
	childStderr io.Writer
}

// openDaemon takes the single-instance locks (state dir, kernel
// connector, admin socket), opens the dirty log's store and recovers the
// dirty log. Nothing talks to the kernel yet.
func openDaemon(ctx context.Context, cfg config, log *slog.Logger) (*daemon, error) {
	if err := os.MkdirAll(cfg.stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create state directory %s: %w", cfg.stateDir, err)
	}
	d := &daemon{cfg: cfg, log: log, childStderr: os.Stderr, recoverEvery: recoverEvery}
	d.spawn = func(ctx context.Context, extra []*os.File, stderr io.Writer) (*child, error) {
		return spawnReplicator(ctx, extra, stderr, cfg.args)
	}
	ok := false
	defer func() {
		if !ok {
			d.close()
		}
	}()
	var err error
	d.lock, err = lockfile.Acquire(filepath.Join(cfg.stateDir, "dmsyncd.lock"))
	if err != nil {
		return nil, fmt.Errorf("another dmsyncd serves %s: %w", cfg.stateDir, err)
	}
	if !cfg.noConnector {
		if err := os.MkdirAll(filepath.Dir(cfg.connectorLock), 0o755); err != nil {
			return nil, fmt.Errorf("connector lock directory: %w", err)
		}
		d.connLock, err = lockfile.Acquire(cfg.connectorLock)
		if err != nil {
			return nil, fmt.Errorf("another dmsyncd serves the kernel connector on this host (start this one with --no-connector if it only receives): %w", err)
		}
	}
	// A replicator of a log server killed a moment ago may still hold the
	// socket for the instant it takes to die (Pdeathsig): ask for a while.
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		d.adminLn, err = admin.ListenUnix(cfg.adminSocket)
		if !errors.Is(err, admin.ErrSocketInUse) || time.Now().After(deadline) {
			break
		}
	}
	if errors.Is(err, admin.ErrSocketInUse) {
		return nil, err
	}
	d.health = newHealth(log)
	d.freezer = newFreezer(log.With("component", "freeze"))
	d.freezer.dir = filepath.Join(cfg.stateDir, frozenDirName)
	d.freezer.resumeLeftovers() // a log server killed while frozen
	if err != nil {
		// The CLI cannot reach this daemon, but the kernel can.
		log.Error("no admin socket: the dmsync CLI cannot reach this daemon", "err", err)
		d.health.setProblem("admin", err.Error())
	}
	db, degraded, err := openStore(ctx, cfg.stateDir, log)
	if err != nil {
		return nil, err
	}
	d.db = db
	var store logd.Store = logd.PebbleStore{DB: d.db}
	if degraded != nil {
		degraded = fmt.Errorf("state directory %s cannot take writes: %w", cfg.stateDir, degraded)
		store = readOnlyStore{store, degraded}
	}
	d.logd, err = logd.NewServer(store, log.With("component", "logd"))
	if err != nil {
		return nil, fmt.Errorf("recover dirty log from %s: %w", cfg.stateDir, err)
	}
	d.health.volumes = func() int { return len(d.logd.Volumes()) }
	d.health.store = func() error {
		if err := d.logd.StoreError(); err != nil {
			return errors.New(storeFailed(cfg.stateDir, err))
		}
		return nil
	}
	d.logd.OnStoreFailure(func(error) { go d.health.publish() })
	if degraded != nil {
		log.Error("the state directory cannot take writes: serving the dirty log from memory (degraded); free space in it or remount it read-write, and dmsyncd restarts by itself",
			"state_dir", cfg.stateDir, "why", degraded)
		d.logd.FailStore(degraded)
	}
	flag, err := logd.OpenFailFlag(filepath.Join(cfg.stateDir, flagName))
	if err != nil {
		log.Error("no store fail flag: a store failure in this run cannot be remembered across a restart", "err", err)
	} else {
		d.flag = flag
		if err := d.logd.UseFailFlag(flag); err != nil {
			return nil, err
		}
	}
	ok = true
	return d, nil
}

// Replicator is the dirty log as the replication side sees it.
func (d *daemon) Replicator() logd.Replicator { return d.logd }

// serve binds the connector and the local API, starts the replicator,
// reports READY to systemd once every listener is bound (or failed and
// reported), and serves until ctx is done or the log server fails.
func (d *daemon) serve(ctx context.Context, dial func() (logd.Conn, error)) error {
	conn, err := dial()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	localLn, err := listenLocal(filepath.Join(d.cfg.stateDir, logSocketName))
	if err != nil {
		conn.Close()
		return err
	}
	api := grpc.NewServer()
	logapi.Register(api, logapi.NewServer(logapi.Options{
		Log: d.logd, Health: d.health.snapshot, Report: d.health.report, Freezer: d.freezer,
	}))

	// The dirty log is served until the replicator has exited, not only
	// until ctx is done: the replicator's dm status ioctls on a mirror
	// wait in the kernel for this log server's answer (STATUS_INFO), and a
	// process blocked there cannot even be killed.
	logCtx, stopLog := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLog()
	var wg sync.WaitGroup
	var logErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := d.logd.Serve(logCtx, conn); err != nil && logCtx.Err() == nil {
			logErr = fmt.Errorf("dirty log server: %w", err)
			d.log.Error("the dirty log server stopped", "err", err)
		}
		cancel()
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := api.Serve(localLn); err != nil && ctx.Err() == nil {
			d.log.Error("local log API stopped", "err", err)
		}
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		d.watchStore(ctx, func() {
			d.reexec = true
			cancel()
		})
	}()
	if d.cfg.watchdog > 0 {
		d.logd.SetHeartbeat(watchdogPinger(d.cfg.watchdog))
	}
	sup := &supervisor{d: d}
	supDone := make(chan struct{})
	go func() {
		defer close(supDone)
		sup.run(ctx)
	}()

	// READY once the replicator bound its listeners (or reported that it
	// could not), or after a bound wait: the kernel is served either way.
	select {
	case <-d.health.bound:
	case <-time.After(readyWait):
		d.log.Warn("replicator not ready; reporting ready anyway (the dirty log is served)", "waited", readyWait)
	case <-ctx.Done():
	}
	d.log.Info("serving the userspace dirty log", "state_dir", d.cfg.stateDir, "volumes", len(d.logd.Volumes()))
	d.health.ready()

	<-ctx.Done()
	_, _ = sdnotify.Stopping(sdnotify.Socket())
	d.log.Info("log server stopping", "reexec", d.reexec)
	<-supDone // the replicator stops first: it may be acknowledging regions, or waiting on the kernel
	d.freezer.close()
	api.Stop()
	stopLog()
	conn.Close()
	d.log.Info("connector closed; the kernel waits for the next log server")
	wg.Wait()
	if logErr != nil {
		return logErr
	}
	if d.reexec {
		return errReexec
	}
	d.log.Info("stopped")
	return nil
}

// readyWait bounds how long READY waits for the replicator's listeners.
var readyWait = 20 * time.Second

// listenLocal binds the local API socket (0600). The state-dir lock is
// held, so a socket file left there is stale.
func listenLocal(path string) (net.Listener, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale log socket %s: %w", path, err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on log socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod log socket %s: %w", path, err)
	}
	return ln, nil
}

func (d *daemon) close() {
	if d.logd != nil && d.logd.StoreError() != nil {
		// A failed store may hang on close (Pebble parks the goroutine
		// that met a fatal error): leave it to the process exit.
		d.db = nil
	}
	if d.flag != nil {
		d.flag.Close()
	}
	if d.db != nil {
		if err := d.db.Close(); err != nil {
			d.log.Error("close state store", "err", err)
		}
	}
	if d.adminLn != nil {
		d.adminLn.Close()
	}
	d.connLock.Release()
	d.lock.Release()
}
