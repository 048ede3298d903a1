package main

// The operator's surface of dmsyncd: the event hub and its handlers, and
// the opt-in HTTP listener (--http) with /metrics, /events (Server-Sent
// Events) and the live web view. None of it can stop the daemon: a failed
// bind is logged, shown in the unit's status and retried; handlers run on
// their own goroutine with a timeout.
//
// Wiring notes for the daemon split (log server and replicator in separate
// processes): all of this belongs in the replicator process, never in the
// log server's. nodeSource reads logd.Server.Stats in-process today; over
// the log server's local API it becomes one call returning the same
// logd.Stats struct (plain data, JSON tags).

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	"google.golang.org/grpc"

	"github.com/dmsync/dmsync/dmtarget"
	"github.com/dmsync/dmsync/internal/adminpb"
	"github.com/dmsync/dmsync/internal/events"
	"github.com/dmsync/dmsync/internal/metrics"
	"github.com/dmsync/dmsync/internal/opstate"
	"github.com/dmsync/dmsync/internal/replicate"
	"github.com/dmsync/dmsync/internal/sdnotify"
	"github.com/dmsync/dmsync/internal/version"
	"github.com/dmsync/dmsync/internal/webview"
	"github.com/dmsync/dmsync/logd"
)

// DefaultHTTP is the address the docs suggest for --http.
const DefaultHTTP = "127.0.0.1:9741"

// opsConfig is the command line of the operator's surface.
type opsConfig struct {
	http         string // "" = no HTTP listener
	eventsDir    string
	eventTimeout time.Duration
}

func addOpsFlags(fs *flag.FlagSet, c *opsConfig) {
	fs.StringVar(&c.http, "http", "", "serve /metrics (Prometheus), /events and the web view on this address (e.g. "+DefaultHTTP+"; keep it on loopback: no authentication); empty: off")
	fs.StringVar(&c.eventsDir, "events-dir", events.DefaultHandlerDir, "run each executable in this directory on every event (the event in DMSYNC_EVENT_* and as JSON on stdin)")
	fs.DurationVar(&c.eventTimeout, "event-timeout", events.DefaultHandlerTimeout, "kill an event handler that runs longer than this")
}

// ops is what the operator's surface shares. It lives in the replicator
// process: the hub exists from the start (the admin API's interceptor and
// the leg watcher emit into it), the sources once replication is built.
type ops struct {
	cfg opsConfig
	hub *events.Hub
	src opstate.Source
	log *slog.Logger
	// pause is how long a part that panicked waits before it runs again.
	pause time.Duration
}

// newOps makes the event hub; start adds what reads the node's state.
func newOps(cfg opsConfig, log *slog.Logger) *ops {
	return &ops{cfg: cfg, hub: events.NewHub(0), log: log.With("component", "ops"), pause: 5 * time.Second}
}

// start returns the event watcher, the event handlers and, with --http,
// the HTTP listener, as services of the replicator.
func (o *ops) start(repl *replicate.Manager, dm *dmtarget.Control, selfID string, log logStatus) []service {
	var legs legSource
	if dm != nil {
		legs = dmLegs{b: &dmtarget.Builder{DM: dm, Host: dmtarget.SystemHost{}, Logger: o.log}}
	}
	o.src = opstate.NewTracker(&nodeSource{self: selfID, repl: repl, log: log, legs: legs})
	cfg := o.cfg
	svcs := []service{{"events", func(ctx context.Context) error {
		go o.guard(ctx, "event handlers", func(ctx context.Context) {
			events.Handlers{Dir: cfg.eventsDir, Timeout: cfg.eventTimeout, Logger: o.log}.Run(ctx, o.hub)
		})
		// Leg events come from dmtarget's leg watcher (legEvent), not from
		// comparing snapshots.
		o.guard(ctx, "event watcher", func(ctx context.Context) {
			events.Watch(ctx, o.src, o.hub, time.Second, events.LegFailed, events.LegRepaired)
		})
		return nil
	}}}
	if cfg.http != "" {
		svcs = append(svcs, service{"http listener", func(ctx context.Context) error {
			o.guard(ctx, "http listener", func(ctx context.Context) { o.serveHTTP(ctx, cfg.http) })
			return nil // never stops the daemon
		}})
	}
	return svcs
}

// legEvent turns the leg watcher's events into the hub's.
func (o *ops) legEvent(e dmtarget.LegEvent) {
	kind := events.LegFailed
	switch e.Kind {
	case dmtarget.EventRepaired:
		kind = events.LegRepaired
	case dmtarget.EventRepairStarted:
		kind = events.LegRepairStarted
	}
	o.hub.Emit(kind, e.Volume, e.Message)
}

// guard runs f until ctx is done. A panic in f is logged and f runs again
// after a pause: nothing of the operator's surface may take the replicator
// (and with it the admin socket and replication) down.
func (o *ops) guard(ctx context.Context, name string, f func(context.Context)) {
	for ctx.Err() == nil {
		func() {
			defer func() {
				if p := recover(); p != nil {
					o.log.Error(name+" panicked; restarting it", "in", o.pause, "panic", p, "stack", string(debug.Stack()))
				}
			}()
			f(ctx)
		}()
		select {
		case <-ctx.Done():
		case <-time.After(o.pause):
		}
	}
}

// grpcOptions hook the admin API: a verify that finds differences emits
// an event.
func (o *ops) grpcOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(o.verifyEvents)}
}

// verifyEvents emits VerifyDiffers when a Verify call's answer says the
// replica differs from the volume.
func (o *ops) verifyEvents(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	if err != nil || !strings.HasSuffix(info.FullMethod, "/Verify") {
		return resp, err
	}
	type verifyResp interface {
		GetEqual() bool
		GetReplicaApplying() bool
	}
	type volumeReq interface{ GetVolume() string }
	r, ok := resp.(verifyResp)
	if !ok || r.GetEqual() || r.GetReplicaApplying() {
		return resp, err
	}
	vol := ""
	if v, ok := req.(volumeReq); ok {
		vol = v.GetVolume()
	}
	o.hub.Emit(events.VerifyDiffers, vol, vol+": verify found differences between the volume and its replica (`dmsync verify "+vol+"` lists them)")
	return resp, err
}

// serveHTTP serves the listener until ctx is done. A failed bind is
// logged, put in the unit's status and retried; it never ends the daemon.
func (o *ops) serveHTTP(ctx context.Context, addr string) {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics.Handler(o.src))
	mux.Handle("GET /events", events.SSEHandler(o.hub))
	mux.Handle("/", webview.Handler(webview.Options{Source: o.src, Events: o.hub, Logger: o.log}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(o.log.Handler(), slog.LevelDebug)}
	if host, _, err := net.SplitHostPort(addr); err == nil {
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			o.log.Warn("--http is not a loopback address: metrics, events and the web view are served without authentication", "addr", addr)
		}
	}
	delay := 5 * time.Second
	for ctx.Err() == nil {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			o.log.Error("HTTP listener not started; the daemon runs on without it", "addr", addr, "err", err, "retry_in", delay)
			_, _ = sdnotify.Send(sdnotify.Socket(), fmt.Sprintf("STATUS=serving; --http %s failed: %v (retrying)", addr, err))
			select {
			case <-ctx.Done():
			case <-time.After(delay):
			}
			delay = min(2*delay, time.Minute)
			continue
		}
		o.log.Info("serving metrics, events and the web view", "addr", "http://"+ln.Addr().String()+"/")
		done := make(chan error, 1)
		go func() { done <- srv.Serve(ln) }()
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = srv.Shutdown(sctx)
			cancel()
			<-done
			return
		case err := <-done:
			if errors.Is(err, http.ErrServerClosed) {
				return
			}
			o.log.Error("HTTP listener failed; restarting it", "addr", addr, "err", err)
		}
	}
}

// nodeSource builds the node's opstate.Snapshot from the components' own
// status snapshots.
type nodeSource struct {
	self string
	repl *replicate.Manager
	log  logStatus
	legs legSource // nil without device-mapper
}

// logStatus is what a snapshot reads of the dirty log (*logd.Server). After
// the daemon split it is the log server's local API.
type logStatus interface {
	Stats() logd.Stats
	RegionSize(uuid string) (size, regions uint64, err error)
	Pending(uuid string) ([]logd.PendingRegion, error)
}

// legSource reports the local dm volumes and their legs.
//
// Wiring note: dmtarget's leg watcher (another branch) keeps this state as
// it changes; once it lands, implement legSource on it and drop dmLegs,
// which asks the kernel for every mirror's status at each snapshot.
type legSource interface {
	Legs(ctx context.Context) ([]legVolume, error)
}

// legVolume is a local dm volume with its legs.
type legVolume struct {
	Name, LogUUID string
	Size          uint64
	Legs          []opstate.Leg
}

func (n *nodeSource) Snapshot(ctx context.Context) opstate.Snapshot {
	s := opstate.Snapshot{Time: time.Now(), Node: n.self, Version: version.Version,
		Volumes: []opstate.Volume{}, Receives: []opstate.Receive{}}
	st := n.log.Stats()
	s.Log = &st
	byUUID := map[string]int{} // index in s.Volumes
	if n.legs != nil {
		vols, err := n.legs.Legs(ctx)
		if err != nil {
			s.Errors = append(s.Errors, "mirror legs: "+err.Error())
		}
		for _, v := range vols {
			if v.LogUUID != "" {
				byUUID[v.LogUUID] = len(s.Volumes)
			}
			s.Volumes = append(s.Volumes, opstate.Volume{Name: v.Name, LogUUID: v.LogUUID, Size: v.Size, Legs: v.Legs})
		}
	}
	peers := map[string]string{}
	for _, p := range n.repl.Config().Peers {
		peers[p.ID] = p.Addr
	}
	for _, ss := range n.repl.Status() {
		var v *opstate.Volume
		if i, ok := byUUID[ss.Source.LogUUID]; ok && ss.Source.LogUUID != "" {
			v = &s.Volumes[i]
		} else {
			s.Volumes = append(s.Volumes, opstate.Volume{})
			v = &s.Volumes[len(s.Volumes)-1]
		}
		fillSend(v, ss, peers[ss.Peer])
		if v.LogUUID == "" {
			continue
		}
		if _, regions, err := n.log.RegionSize(v.LogUUID); err == nil {
			v.Regions = regions
			if !opstate.WantsPendingMap(ctx) {
				continue
			}
			if p, err := n.log.Pending(v.LogUUID); err == nil {
				rs := make([]uint64, len(p))
				for i := range p {
					rs[i] = p[i].Region
				}
				v.PendingMap = opstate.PendingMap(rs, regions, opstate.MapCells)
			}
		}
	}
	for _, r := range n.repl.Receiving() {
		rc := opstate.Receive{Volume: r.Volume, From: r.From, Image: r.Image, Size: r.Size, Applying: r.Root.Applying}
		if r.Err != nil {
			rc.Err = r.Err.Error()
		} else {
			rc.Root = hex.EncodeToString(r.Root.Root[:])
		}
		s.Receives = append(s.Receives, rc)
	}
	return s
}

// fillSend copies replication's status of one sent volume.
func fillSend(v *opstate.Volume, ss replicate.SendStatus, addr string) {
	v.Name = ss.Volume // the name the operator replicates it by
	if ss.Source.LogUUID != "" {
		v.LogUUID = ss.Source.LogUUID
	}
	if ss.Source.Size != 0 {
		v.Size = ss.Source.Size
	}
	kind := ss.StateKind()
	v.Peer, v.PeerAddr, v.State, v.StateKind = ss.Peer, addr, ss.State, stateName(kind)
	v.PeerUp = kind == adminpb.SendState_SEND_STATE_SYNCED || kind == adminpb.SendState_SEND_STATE_SYNCING
	v.Synced = kind == adminpb.SendState_SEND_STATE_SYNCED && ss.Source.LogUUID != ""
	v.RegionSize, v.PendingRegions, v.PendingBytes = ss.RegionSize, ss.PendingRegions, ss.BytesToGo
	v.BytesRead, v.BytesSent = ss.Stats.BytesRead, ss.Stats.BytesSent
	v.Rate, v.ETA, v.LastAck = ss.Rate, ss.ETA, ss.LastAck
	if p := ss.Points; p.Last.Seq > 0 {
		v.PointSeq, v.PointTakenAt, v.PointPause = p.Last.Seq, p.Last.TakenAt, p.LastPause
	}
}

// stateName is the JSON name of a send state, as `dmsync status --json`
// spells it: SEND_STATE_PEER_UNREACHABLE is "peer-unreachable".
func stateName(k adminpb.SendState) string {
	if k == adminpb.SendState_SEND_STATE_UNSPECIFIED {
		return "unknown"
	}
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(k.String(), "SEND_STATE_")), "_", "-")
}

// dmLegs reads the legs from each mirror's dm status.
type dmLegs struct{ b *dmtarget.Builder }

func (l dmLegs) Legs(ctx context.Context) ([]legVolume, error) {
	vols, err := l.b.List(ctx)
	if err != nil {
		return nil, err
	}
	var out []legVolume
	var errs []error
	for _, v := range vols {
		lv := legVolume{Name: v.Name, LogUUID: v.LogUUID, Size: v.Sectors * 512}
		st, err := l.b.Status(ctx, v.Name)
		if err != nil {
			errs = append(errs, err)
		}
		for i, leg := range st.Mirror.Legs {
			lv.Legs = append(lv.Legs, opstate.Leg{Index: i, Device: leg.Dev, Health: legHealth(leg.Health), OK: leg.Health == dmtarget.LegAlive})
		}
		out = append(out, lv)
	}
	return out, errors.Join(errs...)
}

// legHealth names a mirror status health character.
func legHealth(c byte) string {
	switch c {
	case dmtarget.LegAlive:
		return "alive"
	case dmtarget.LegWriteFailed:
		return "write-failed"
	case dmtarget.LegSyncFailed:
		return "sync-failed"
	case dmtarget.LegReadFailed:
		return "read-failed"
	case dmtarget.LegFlushFailed:
		return "flush-failed"
	case 0:
		return "unknown"
	default:
		return "failed"
	}
}
