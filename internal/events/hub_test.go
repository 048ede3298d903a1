package events

import (
	"fmt"
	"testing"
	"time"
)

func TestHubRingAndReplay(t *testing.T) {
	h := NewHub(4)
	for i := range 6 {
		h.Emit(PeerUp, "v", fmt.Sprint(i))
	}
	r := h.Recent(10)
	if len(r) != 4 || r[0].Seq != 3 || r[3].Seq != 6 || r[3].Message != "5" {
		t.Fatalf("recent: %+v", r)
	}
	if r := h.Recent(2); len(r) != 2 || r[0].Seq != 5 {
		t.Fatalf("recent 2: %+v", r)
	}
	s := h.Subscribe(4)
	if len(s.Replay) != 2 || s.Replay[0].Seq != 5 || s.Missed {
		t.Fatalf("replay after 4: %+v missed %v", s.Replay, s.Missed)
	}
	s.Close()
	s = h.Subscribe(1) // 2 fell out of the ring
	if !s.Missed || len(s.Replay) != 4 {
		t.Fatalf("replay after 1: %d events, missed %v", len(s.Replay), s.Missed)
	}
	s.Close()
	s.Close() // twice is fine
	if s = h.SubscribeNew(); len(s.Replay) != 0 || s.Missed {
		t.Fatalf("SubscribeNew replays %+v", s.Replay)
	}
	e := h.Emit(StoreFailed, "", "x")
	if got := <-s.C; got != e || got.Seq != 7 || got.Time.IsZero() {
		t.Fatalf("got %+v, want %+v", got, e)
	}
}

// A subscriber that never reads must not block Emit; it loses its
// subscription and is told so, and others keep theirs.
func TestHubSlowSubscriberDoesNotBlock(t *testing.T) {
	h := NewHub(0)
	slow := h.SubscribeNew()
	fast := h.SubscribeNew()
	read := make(chan struct{})
	go func() {
		for range fast.C {
			read <- struct{}{}
		}
		close(read)
	}()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range subBuffer * 3 {
			h.Emit(ConsistentPoint, "v", "")
			<-read // the fast subscriber keeps up
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Emit blocked on a subscriber that does not read")
	}
	n := 0
	for range slow.C {
		n++
	}
	if !slow.Lost() || n != subBuffer {
		t.Fatalf("slow subscriber: lost %v after %d events, want lost after %d", slow.Lost(), n, subBuffer)
	}
	if fast.Lost() {
		t.Fatal("a subscriber that keeps up lost its subscription")
	}
	fast.Close()
}
