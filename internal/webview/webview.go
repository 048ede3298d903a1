// Package webview is dmsyncd's live web page: the node's volumes, their
// legs, a map of each volume's pending regions, the replication rate, the
// recovery point and the latest events, updated over a websocket. The
// page's assets are embedded in the binary; it loads nothing from
// elsewhere.
//
// The page is read-only. It is served on dmsyncd's opt-in --http listener,
// which should stay on the loopback address (or behind an authenticating
// proxy): it shows the node's state to whoever can reach it.
package webview

import (
	"context"
	"embed"
	"encoding/json"
	"io/fs"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"

	"github.com/dmsync/dmsync/internal/events"
	"github.com/dmsync/dmsync/internal/opstate"
)

//go:embed assets
var assets embed.FS

// Options configure the web view.
type Options struct {
	// Source gives the node's state; Events its event hub.
	Source opstate.Source
	Events *events.Hub
	// Interval is how often a connected page gets a new state (default 1 s).
	Interval time.Duration
	// MaxClients bounds the pages connected at once (default 16): each
	// costs a snapshot per Interval.
	MaxClients int
	Logger     *slog.Logger
}

// RecentEvents is how many events a page gets when it connects.
const RecentEvents = 50

// Message is what the websocket carries, one JSON object per message:
// Type "hello" (with State and Events: the latest ones), "state" (State),
// or "event" (Event).
type Message struct {
	Type   string            `json:"type"`
	State  *opstate.Snapshot `json:"state,omitempty"`
	Events []events.Event    `json:"events,omitempty"`
	Event  *events.Event     `json:"event,omitempty"`
}

type handler struct {
	opts    Options
	clients atomic.Int32
	mux     *http.ServeMux
}

// Handler serves the page at "/", its state as JSON at "/api/state" and
// the websocket at "/ws".
func Handler(opts Options) http.Handler {
	if opts.Interval <= 0 {
		opts.Interval = time.Second
	}
	if opts.MaxClients <= 0 {
		opts.MaxClients = 16
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	h := &handler{opts: opts, mux: http.NewServeMux()}
	static, _ := fs.Sub(assets, "assets")
	h.mux.Handle("GET /", http.FileServerFS(static))
	h.mux.HandleFunc("GET /api/state", h.state)
	h.mux.HandleFunc("GET /ws", h.ws)
	return h
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

func (h *handler) snapshot(ctx context.Context) opstate.Snapshot {
	ctx, cancel := context.WithTimeout(opstate.WithPendingMap(ctx), 5*time.Second)
	defer cancel()
	return h.opts.Source.Snapshot(ctx)
}

func (h *handler) state(w http.ResponseWriter, r *http.Request) {
	s := h.snapshot(r.Context())
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(s)
}

func (h *handler) ws(w http.ResponseWriter, r *http.Request) {
	if n := h.clients.Add(1); int(n) > h.opts.MaxClients {
		h.clients.Add(-1)
		http.Error(w, "too many web view clients; close another page", http.StatusServiceUnavailable)
		return
	}
	defer h.clients.Add(-1)
	c, err := websocket.Accept(w, r, nil) // same origin only
	if err != nil {
		return
	}
	defer c.CloseNow()
	ctx := c.CloseRead(r.Context()) // the page sends nothing; this also notices its close
	if err := h.serveWS(ctx, c); err != nil && ctx.Err() == nil {
		h.opts.Logger.Debug("web view client gone", "remote", r.RemoteAddr, "err", err)
	}
	c.Close(websocket.StatusNormalClosure, "")
}

func (h *handler) serveWS(ctx context.Context, c *websocket.Conn) error {
	write := func(m Message) error {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return wsjson.Write(wctx, c, m)
	}
	var evC <-chan events.Event
	hello := Message{Type: "hello"}
	if h.opts.Events != nil {
		last := h.opts.Events.Last()
		sub := h.opts.Events.Subscribe(last - min(last, RecentEvents))
		defer sub.Close()
		hello.Events, evC = sub.Replay, sub.C
	}
	s := h.snapshot(ctx)
	hello.State = &s
	if err := write(hello); err != nil {
		return err
	}
	t := time.NewTicker(h.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			s := h.snapshot(ctx)
			if err := write(Message{Type: "state", State: &s}); err != nil {
				return err
			}
		case e, ok := <-evC:
			if !ok {
				return write(Message{Type: "reload"}) // fell behind: the page reconnects
			}
			if err := write(Message{Type: "event", Event: &e}); err != nil {
				return err
			}
		}
	}
}
