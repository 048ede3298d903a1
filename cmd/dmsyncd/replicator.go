package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dmsync/dmsync/dmtarget"
	"github.com/dmsync/dmsync/internal/admin"
	"github.com/dmsync/dmsync/internal/events"
	"github.com/dmsync/dmsync/logd/logapi"
	"github.com/dmsync/dmsync/logd/logpb"
	"github.com/dmsync/dmsync/pebble"
)

// adminFD is the fd of the admin socket's listener in the replicator
// (ExtraFiles[0]).
const adminFD = 3

// oomScoreAdj is the replicator's oom_score_adj: well above the log
// server's, so the OOM killer takes it first.
const oomScoreAdj = 500

// raiseOOMScore raises this process's oom_score_adj to oomScoreAdj (never
// lowers it); raising needs no privilege.
func raiseOOMScore(log *slog.Logger) {
	const path = "/proc/self/oom_score_adj"
	b, err := os.ReadFile(path)
	if err != nil {
		log.Debug("oom_score_adj not available", "err", err)
		return
	}
	if cur, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && cur >= oomScoreAdj {
		return
	}
	if err := os.WriteFile(path, []byte(strconv.Itoa(oomScoreAdj)), 0); err != nil {
		log.Warn("cannot raise the replicator's oom_score_adj: under memory pressure the OOM killer may pick the log server", "err", err)
	}
}

// configRecheck is how often a replicator whose configuration or identity
// failed to load looks again.
const configRecheck = 10 * time.Second

// runReplicator is the replicator process (see the package doc): the admin
// API, volumes and replication, over the log server's local API.
func runReplicator(ctx context.Context, args []string, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.logLevel})).With("process", "replicator")
	lc, err := logapi.Dial(filepath.Join(cfg.stateDir, logSocketName))
	if err != nil {
		return err
	}
	defer lc.Close()
	installTestHooks(cfg, log)
	// Under memory pressure the kernel's OOM killer must pick the
	// replicator, never the log server (the unit gives both -900).
	raiseOOMScore(log)
	r := &replicator{cfg: cfg, log: log, lc: lc, problems: map[string]string{}, ops: newOps(cfg.ops, log),
		reportDue: make(chan struct{}, 1)}
	rctx, stopReports := context.WithCancel(ctx)
	defer stopReports()
	go r.reportLoop(rctx)
	return r.run(ctx)
}

// replicator is the state of the replicator process.
type replicator struct {
	cfg config
	log *slog.Logger
	lc  *logapi.Client
	ops *ops // metrics, events, web view (http.go)

	mu       sync.Mutex
	problems map[string]string // component -> one line
	bound    bool

	// reportDue wakes reportLoop, the only sender of reports: reports
	// sent from several goroutines could arrive out of order, and an
	// older list would then replace a newer one at the log server.
	reportDue chan struct{}
}

// problem records (msg != "") or clears a problem and reports the list to
// the log server.
func (r *replicator) problem(component, msg string) {
	r.mu.Lock()
	if r.problems[component] == msg {
		r.mu.Unlock()
		return
	}
	if msg == "" {
		delete(r.problems, component)
	} else {
		r.problems[component] = msg
	}
	r.mu.Unlock()
	r.report()
}

// report asks reportLoop to send the current problem list.
func (r *replicator) report() {
	select {
	case r.reportDue <- struct{}{}:
	default: // a send is due already; it takes the list as it is then
	}
}

// reportLoop sends the problem list to the log server whenever it
// changed, in order, and sends it again until the log server took it.
func (r *replicator) reportLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.reportDue:
		}
		for {
			r.mu.Lock()
			req := &logpb.ReportRequest{ListenersBound: r.bound}
			for _, c := range slices.Sorted(maps.Keys(r.problems)) {
				req.Problems = append(req.Problems, &logpb.Problem{Component: c, Message: r.problems[c]})
			}
			r.mu.Unlock()
			err := r.lc.Report(ctx, req)
			if err == nil || ctx.Err() != nil {
				break
			}
			r.log.Warn("cannot report to the log server; retrying", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}
}

func (r *replicator) run(ctx context.Context) error {
	var ln net.Listener
	if f := os.NewFile(adminFD, "admin-socket"); f != nil {
		l, err := net.FileListener(f)
		f.Close()
		if err != nil {
			r.problem("admin", fmt.Sprintf("admin socket %s: %v", r.cfg.adminSocket, err))
		} else {
			ln = admin.RootOnly(l, r.log)
		}
	}
	// Pebble cannot open read-write on a full file system (it retries for
	// good): fail at once, and the log server starts this again later.
	if err := probeWritable(r.cfg.stateDir); err != nil {
		r.problem("replica store", fmt.Sprintf("state directory %s: %v: replication waits; free space in it", r.cfg.stateDir, err))
		return fmt.Errorf("replica store: state directory %s: %w", r.cfg.stateDir, err)
	}
	// The replicator of a log server killed a moment ago may still hold
	// the store's lock for the instant it takes to die.
	var store *pebble.DB
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(250 * time.Millisecond) {
		store, err = pebble.Open(filepath.Join(r.cfg.stateDir, replicaDir), &pebble.Options{Logger: r.log, OnFatal: exitOnFatal(r.log), CacheSize: pebble.ReplicaCacheSize})
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("replica store: %w", err)
	}
	defer store.Close()

	g := grpc.NewServer(append(r.ops.grpcOptions(), grpc.UnknownServiceHandler(r.unavailable))...)
	logapi.RegisterDaemon(g, func(ctx context.Context) (*logpb.HealthResponse, error) { return r.lc.Health(ctx) })
	events.Register(g, r.ops.hub) // dmsync events: served even while replication is off
	svcs, err := r.addServices(g, store)
	if err != nil {
		// Replication is off (config.json or the node key): the admin
		// socket answers with why; look again every configRecheck.
		r.problem("replication", err.Error())
		r.log.Error("replication is off", "err", err)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	restart := false
	if ln != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := g.Serve(ln); err != nil && ctx.Err() == nil {
				r.problem("admin", fmt.Sprintf("admin socket %s: %v", r.cfg.adminSocket, err))
			}
		}()
	}
	for _, s := range svcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.runService(ctx, s)
		}()
	}
	if err != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r.waitConfigFixed(ctx, store) {
				restart = true
				cancel()
			}
		}()
	}
	r.mu.Lock()
	r.bound = true // the admin socket was inherited bound; the receiver reports its own failures
	r.mu.Unlock()
	r.report()
	<-ctx.Done()
	slow := time.AfterFunc(slowStop, func() { dumpSlowStop(r.log, os.Stderr) })
	defer slow.Stop()
	if stopHook != nil {
		stopHook()
	}
	g.Stop()
	wg.Wait()
	if restart {
		return errRestart
	}
	return nil
}

// runService runs one service until ctx is done; a failure is reported
// and the service is started again with backoff, alone.
func (r *replicator) runService(ctx context.Context, s service) {
	backoff := minBackoff
	for ctx.Err() == nil {
		start := time.Now()
		err := s.run(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > stableRun {
			backoff = minBackoff
		}
		msg := fmt.Sprintf("%s stopped: %v; retrying in %s", s.name, err, backoff)
		r.log.Error(s.name+" failed; retrying", "err", err, "retry_in", backoff)
		r.problem(s.name, msg)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// waitConfigFixed reports true once the replication services could be
// built again (so the replicator restarts with them).
func (r *replicator) waitConfigFixed(ctx context.Context, store *pebble.DB) bool {
	for {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(configRecheck):
		}
		if _, err := r.buildCheck(store); err == nil {
			r.log.Info("replication configuration loads again; restarting the replicator")
			return true
		} else {
			r.problem("replication", err.Error())
		}
	}
}

// unavailable answers calls to services this replicator does not serve
// (replication while config.json or the node key cannot be loaded).
func (r *replicator) unavailable(any, grpc.ServerStream) error {
	r.mu.Lock()
	msg := r.problems["replication"]
	r.mu.Unlock()
	if msg == "" {
		return status.Error(codes.Unimplemented, "unknown service")
	}
	return status.Error(codes.FailedPrecondition, "replication is off: "+msg)
}

// slowStop is how long the replicator may take to stop before it says
// what it waits for: under the log server's stopGrace, so the stacks are
// written before it is killed.
var slowStop = stopGrace - 3*time.Second

// dumpSlowStop logs that the replicator is slow to stop and writes every
// goroutine's stack to w: the kill that follows would leave no trace of
// what held it.
func dumpSlowStop(log *slog.Logger, w io.Writer) {
	log.Error("replicator still stopping; goroutine stacks follow (the log server kills it soon)", "after", slowStop)
	_ = pprof.Lookup("goroutine").WriteTo(w, 2)
}

// exitOnFatal ends the replicator when its store meets a fatal error:
// the log server starts a fresh one (Pebble parks the failing goroutine,
// which could hang replication for good).
func exitOnFatal(log *slog.Logger) func(error) {
	return func(err error) {
		log.Error("replica store failed; the replicator exits and the log server starts it again", "err", err)
		fmt.Fprintf(os.Stderr, "dmsyncd: replica store: %v\n", err)
		os.Exit(exitError)
	}
}

// errTestPanic is what the test hook panics with.
var (
	errTestPanic    = errors.New("test hook: panic in Replicated (DMSYNCD_TEST_HOOKS)")
	errTestPanicNow = errors.New("test hook: panic (DMSYNCD_TEST_HOOKS)")
)

// stopHook, when set (test hooks), runs once the replicator was told to
// stop, before it stops its services.
var stopHook func()

// installTestHooks arms the fault-test hooks when DMSYNCD_TEST_HOOKS=1:
// while the file state-dir/test-panic-replicated exists, the replicator
// panics in its next Replicated call (in a sender's goroutine, which has
// no recover); while state-dir/test-panic-now exists, it panics within a
// quarter second in a goroutine of its own; while
// state-dir/test-status-on-stop exists, a stopping replicator first reads
// every mirror's dm status, which waits in the kernel for the log server
// (as its status poll may at any moment of a stop).
func installTestHooks(cfg config, log *slog.Logger) {
	if os.Getenv("DMSYNCD_TEST_HOOKS") != "1" {
		return
	}
	trigger := filepath.Join(cfg.stateDir, "test-panic-replicated")
	now := filepath.Join(cfg.stateDir, "test-panic-now")
	onStop := filepath.Join(cfg.stateDir, "test-status-on-stop")
	log.Warn("fault-test hooks armed", "trigger", trigger, "now", now, "status_on_stop", onStop)
	stopHook = func() {
		if _, err := os.Stat(onStop); err != nil {
			return
		}
		dm, err := dmtarget.Open(dmtarget.Options{Logger: log})
		if err != nil {
			log.Error("test hook: status on stop", "err", err)
			return
		}
		defer dm.Close()
		t0 := time.Now()
		vols, err := dmLegs{b: &dmtarget.Builder{DM: dm, Host: dmtarget.SystemHost{}, Logger: log}}.Legs(context.Background())
		log.Warn("test hook: read the mirrors' dm status while stopping", "volumes", len(vols), "took", time.Since(t0).Round(time.Millisecond), "err", err)
	}
	logapi.ReplicatedHook = func(string) {
		if _, err := os.Stat(trigger); err == nil {
			panic(errTestPanic)
		}
	}
	go func() {
		for {
			if _, err := os.Stat(now); err == nil {
				panic(errTestPanicNow)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}()
}
