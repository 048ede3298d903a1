package events

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// readEvents reads n SSE events from url.
func readEvents(t *testing.T, url string, n int, during func()) []Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	if during != nil {
		go during()
	}
	var out []Event
	sc := bufio.NewScanner(resp.Body)
	for len(out) < n && sc.Scan() {
		if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			var e Event
			if err := json.Unmarshal([]byte(d), &e); err != nil {
				t.Fatalf("data %q: %v", d, err)
			}
			out = append(out, e)
		}
	}
	if len(out) < n {
		t.Fatalf("got %d events, want %d (%v)", len(out), n, sc.Err())
	}
	return out
}

func TestSSE(t *testing.T) {
	hub := NewHub(0)
	for range 25 {
		hub.Emit(PeerUp, "v", "old")
	}
	srv := httptest.NewServer(SSEHandler(hub))
	defer srv.Close()

	// No since: the latest 20, then live ones.
	got := readEvents(t, srv.URL, 21, func() {
		time.Sleep(50 * time.Millisecond)
		hub.Emit(LegFailed, "v", "live")
	})
	if got[0].Seq != 6 || got[19].Seq != 25 || got[20].Kind != LegFailed || got[20].Seq != 26 {
		t.Fatalf("events %d..%d, last %+v", got[0].Seq, got[19].Seq, got[20])
	}
	// since=24: 25 and 26.
	got = readEvents(t, srv.URL+"?since=24", 2, nil)
	if got[0].Seq != 25 || got[1].Seq != 26 {
		t.Fatalf("since=24: %+v", got)
	}
	resp, err := http.Get(srv.URL + "?since=x")
	if err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad since: %v %v", resp.StatusCode, err)
	}
}
