package logd

import (
	"context"
	"testing"
	"time"
)

func TestFeedCoalescesAndNeverBlocks(t *testing.T) {
	var f feed
	ctx, cancel := context.WithCancel(context.Background())
	ch := f.subscribe(ctx)
	// Nobody reads: publishing must not block, and repeats coalesce.
	done := make(chan struct{})
	go func() {
		for range 10000 {
			f.publish("a")
			f.publish("b")
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("publish blocked on a slow reader")
	}
	// Each volume is delivered at most twice: the one the feed goroutine
	// held when the burst began, and one coalesced for the whole burst.
	got := map[string]int{}
	for quiet := false; !quiet; {
		select {
		case u := <-ch:
			got[u]++
		case <-time.After(200 * time.Millisecond):
			quiet = true
		}
	}
	if got["a"] < 1 || got["a"] > 2 || got["b"] < 1 || got["b"] > 2 || len(got) != 2 {
		t.Fatalf("got %v, want a and b once or twice each", got)
	}
	f.publish("a")
	if u := <-ch; u != "a" {
		t.Fatalf("got %q", u)
	}
	cancel()
	for range ch {
	}
	f.mu.Lock()
	n := len(f.subs)
	f.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d subscribers left after cancel", n)
	}
}
