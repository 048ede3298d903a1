package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/dmsync/dmsync/internal/admin"
	"github.com/dmsync/dmsync/internal/lockfile"
	"github.com/dmsync/dmsync/internal/sdnotify"
	"github.com/dmsync/dmsync/logd"
	"github.com/dmsync/dmsync/pebble"
)

var errUsage = errors.New("usage error")

// config is the parsed command line.
type config struct {
	stateDir    string
	logLevel    slog.Level
	listen      string // TCP address to receive from peers; "" = none
	adminSocket string
	noConnector bool // serve no dirty log (a node that only receives)
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("dmsyncd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.stateDir, "state-dir", "/var/lib/dmsync", "directory for the state store and the lock file")
	level := fs.String("log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&c.listen, "listen", "", "receive replicas from peers on this TCP address (e.g. :7420); empty: do not receive")
	fs.StringVar(&c.adminSocket, "admin-socket", admin.DefaultSocket, "unix socket of the admin API (the dmsync CLI)")
	fs.BoolVar(&c.noConnector, "no-connector", false, "do not serve the kernel's dirty log (a node that only receives, or a second daemon in a network namespace)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return c, err
		}
		return c, fmt.Errorf("%w: %w", errUsage, err)
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
	return c, nil
}

// run parses args and serves until ctx is done (a clean exit) or a fatal
// error.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.logLevel}))
	d, err := openDaemon(cfg, log)
	if err != nil {
		return err
	}
	defer d.close()
	if err := d.addServices(); err != nil {
		return err
	}
	dial := logd.DialConnector
	if cfg.noConnector {
		dial = noConnector
	}
	return d.serve(ctx, dial)
}

// service is something the daemon runs next to the dirty log server, such
// as an admin gRPC server on a unix socket or the replicator. It runs until
// ctx is done; an error stops the daemon.
type service struct {
	name string
	run  func(ctx context.Context) error
}

// daemon holds what the services share: the store, the dirty log server
// (the Replicator) and the registered services.
type daemon struct {
	cfg      config
	log      *slog.Logger
	lock     *lockfile.Lock
	db       *pebble.DB
	logd     *logd.Server
	services []service
}

// openDaemon takes the single-instance lock, opens the store and recovers
// the dirty log. Nothing talks to the kernel yet.
func openDaemon(cfg config, log *slog.Logger) (*daemon, error) {
	if err := os.MkdirAll(cfg.stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create state directory: %w", err)
	}
	lock, err := lockfile.Acquire(filepath.Join(cfg.stateDir, "dmsyncd.lock"))
	if err != nil {
		return nil, fmt.Errorf("another dmsyncd serves %s: %w", cfg.stateDir, err)
	}
	db, err := pebble.Open(filepath.Join(cfg.stateDir, "pebble"), &pebble.Options{Logger: log})
	if err != nil {
		lock.Release()
		return nil, err
	}
	srv, err := logd.NewServer(logd.PebbleStore{DB: db}, log.With("component", "logd"))
	if err != nil {
		db.Close()
		lock.Release()
		return nil, fmt.Errorf("recover dirty log from %s: %w", cfg.stateDir, err)
	}
	return &daemon{cfg: cfg, log: log, lock: lock, db: db, logd: srv}, nil
}

// Replicator is the dirty log as the replication side sees it.
func (d *daemon) Replicator() logd.Replicator { return d.logd }

// register adds a service to run once the daemon serves.
func (d *daemon) register(name string, run func(ctx context.Context) error) {
	d.services = append(d.services, service{name, run})
}

// serve binds the connector, reports READY to systemd and runs the dirty
// log server and every registered service until ctx is done or one fails.
func (d *daemon) serve(ctx context.Context, dial func() (logd.Conn, error)) error {
	conn, err := dial()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		errMu    sync.Mutex
		firstErr error
	)
	start := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil && ctx.Err() == nil {
				errMu.Lock()
				if firstErr == nil {
					firstErr = fmt.Errorf("%s: %w", name, err)
				}
				errMu.Unlock()
				cancel()
			}
		}()
	}
	start("dirty log server", func(ctx context.Context) error { return d.logd.Serve(ctx, conn) })
	for _, s := range d.services {
		start(s.name, s.run)
	}
	vols := d.logd.Volumes()
	d.log.Info("serving the userspace dirty log", "state_dir", d.cfg.stateDir, "volumes", len(vols))
	if _, err := sdnotify.Ready(sdnotify.Socket(), fmt.Sprintf("serving %d volumes", len(vols))); err != nil {
		d.log.Warn("sd_notify failed", "err", err)
	}
	<-ctx.Done()
	_, _ = sdnotify.Stopping(sdnotify.Socket())
	conn.Close()
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	d.log.Info("stopped")
	return nil
}

func (d *daemon) close() {
	if err := d.db.Close(); err != nil {
		d.log.Error("close state store", "err", err)
	}
	d.lock.Release()
}
