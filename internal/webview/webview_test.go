package webview

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"

	"github.com/dmsync/dmsync/internal/events"
)

func TestWebSocketProtocol(t *testing.T) {
	node := newFakeNode()
	hub := events.NewHub(0)
	for range RecentEvents + 5 {
		hub.Emit(events.PeerUp, "db", "up")
	}
	srv := httptest.NewServer(Handler(Options{Source: node, Events: hub, Interval: 50 * time.Millisecond, MaxClients: 1}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	c.SetReadLimit(1 << 20)
	var m Message
	if err := wsjson.Read(ctx, c, &m); err != nil {
		t.Fatal(err)
	}
	if m.Type != "hello" || m.State == nil || len(m.State.Volumes) != 2 || len(m.Events) != RecentEvents || m.Events[0].Seq != 6 {
		t.Fatalf("hello: type %q, %d events from %d", m.Type, len(m.Events), m.Events[0].Seq)
	}
	// A second page is refused while one is connected (MaxClients 1).
	if resp, err := http.Get(srv.URL + "/ws"); err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("second client: %v %v", resp.Status, err)
	}
	hub.Emit(events.LegFailed, "home", "leg 1 failed")
	sawState := false
	for {
		if err := wsjson.Read(ctx, c, &m); err != nil {
			t.Fatal(err)
		}
		sawState = sawState || m.Type == "state"
		if m.Type == "event" {
			if m.Event.Kind != events.LegFailed || m.Event.Seq != RecentEvents+6 {
				t.Fatalf("event %+v", m.Event)
			}
			break
		}
	}
	for !sawState {
		if err := wsjson.Read(ctx, c, &m); err != nil {
			t.Fatal(err)
		}
		sawState = m.Type == "state"
	}
}

func TestStaticAndState(t *testing.T) {
	srv := httptest.NewServer(Handler(Options{Source: newFakeNode()}))
	defer srv.Close()
	for path, want := range map[string]string{"/": "<title>dmsync</title>", "/app.js": "new WebSocket", "/style.css": ".map"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("%s: %s, body lacks %q", path, resp.Status, want)
		}
	}
	resp, err := http.Get(srv.URL + "/api/state")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s struct {
		Volumes []struct {
			Name       string    `json:"name"`
			PendingMap []float32 `json:"pending_map"`
		} `json:"volumes"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil || len(s.Volumes) != 2 || len(s.Volumes[0].PendingMap) != 256 {
		t.Fatalf("/api/state: %+v %v", s, err)
	}
}
