package main

import (
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/dmsync/dmsync/internal/sdnotify"
	"github.com/dmsync/dmsync/logd/logpb"
)

// health is the log server's view of the whole daemon: its own problems,
// the replicator's state and the problems the replicator reports. It feeds
// the Health call (and so `dmsync status`) and systemd's STATUS= line.
type health struct {
	log     *slog.Logger
	volumes func() int
	store   func() error // the dirty log store's failure, if any

	mu         sync.Mutex
	own        map[string]string // component -> problem
	replUp     bool
	replState  string // "up (pid N)" or "down: ..."
	child      []*logpb.Problem
	bound      chan struct{} // closed at the replicator's first listeners_bound report or exit
	boundOnce  sync.Once
	isReady    bool
	lastStatus string
}

func newHealth(log *slog.Logger) *health {
	return &health{log: log, own: map[string]string{}, bound: make(chan struct{}),
		volumes: func() int { return 0 }, replState: "starting"}
}

func (h *health) setProblem(component, msg string) {
	h.mu.Lock()
	if msg == "" {
		delete(h.own, component)
	} else {
		h.own[component] = msg
	}
	h.mu.Unlock()
	h.publish()
}

// replicatorUp records a started replicator. Its problem list is not
// cleared here: the new child may already have reported (it can run
// before the supervisor gets here), and the old child's list was cleared
// when it exited.
func (h *health) replicatorUp(pid int) {
	h.mu.Lock()
	h.replUp, h.replState = true, fmt.Sprintf("up (pid %d)", pid)
	h.mu.Unlock()
	h.publish()
}

// replicatorDown records an exited replicator and when it restarts; the
// problems it reported went with it.
func (h *health) replicatorDown(state string) {
	h.mu.Lock()
	h.replUp, h.replState = false, state
	h.child = nil
	h.mu.Unlock()
	h.boundOnce.Do(func() { close(h.bound) })
	h.publish()
}

// report takes the replicator's problem list.
func (h *health) report(r *logpb.ReportRequest) {
	h.mu.Lock()
	h.child = slices.Clone(r.GetProblems())
	h.mu.Unlock()
	if r.GetListenersBound() {
		h.boundOnce.Do(func() { close(h.bound) })
	}
	h.publish()
}

// ready sends READY=1 with the status line.
func (h *health) ready() {
	h.mu.Lock()
	h.isReady = true
	h.lastStatus = h.summaryLocked(h.problemsLocked())
	st := h.lastStatus
	h.mu.Unlock()
	if _, err := sdnotify.Ready(sdnotify.Socket(), st); err != nil {
		h.log.Warn("sd_notify failed", "err", err)
	}
}

// publish sends STATUS= when the summary changed (after READY).
func (h *health) publish() {
	h.mu.Lock()
	st := h.summaryLocked(h.problemsLocked())
	send := h.isReady && st != h.lastStatus
	h.lastStatus = st
	h.mu.Unlock()
	if send {
		_, _ = sdnotify.Send(sdnotify.Socket(), "STATUS="+st)
	}
}

func (h *health) problemsLocked() []*logpb.Problem {
	var ps []*logpb.Problem
	if h.store != nil {
		if err := h.store(); err != nil {
			ps = append(ps, &logpb.Problem{Component: "store", Message: err.Error()})
		}
	}
	for _, c := range slices.Sorted(maps.Keys(h.own)) {
		ps = append(ps, &logpb.Problem{Component: c, Message: h.own[c]})
	}
	if !h.replUp && h.replState != "starting" {
		ps = append(ps, &logpb.Problem{Component: "replicator", Message: "replicator " + h.replState})
	}
	return append(ps, h.child...)
}

func (h *health) summaryLocked(ps []*logpb.Problem) string {
	var b strings.Builder
	fmt.Fprintf(&b, "serving %d volumes; replicator %s", h.volumes(), h.replState)
	switch len(ps) {
	case 0:
	case 1:
		fmt.Fprintf(&b, "; 1 problem: %s: %s", ps[0].GetComponent(), ps[0].GetMessage())
	default:
		fmt.Fprintf(&b, "; %d problems, first: %s: %s", len(ps), ps[0].GetComponent(), ps[0].GetMessage())
	}
	return b.String()
}

// snapshot is the Health answer.
func (h *health) snapshot() *logpb.HealthResponse {
	h.mu.Lock()
	defer h.mu.Unlock()
	ps := h.problemsLocked()
	r := &logpb.HealthResponse{Summary: h.summaryLocked(ps), Problems: ps, ReplicatorUp: h.replUp, Volumes: uint32(h.volumes())}
	if h.store != nil && h.store() != nil {
		r.StoreFailed = true
	}
	return r
}
