package rpc

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff is the one retry policy of replication: the wait after a
// failure starts at Min, doubles per consecutive failure up to Max, and is
// jittered to [wait/2, wait]; Reset after progress starts it over. The
// sender uses it between failed passes and the daemon between failed
// attempts to open a volume or its peer.
type Backoff struct {
	Min, Max time.Duration
	next     time.Duration
}

// Next returns the wait before the next attempt and doubles the one after.
func (b *Backoff) Next() time.Duration {
	if b.Min <= 0 {
		b.Min = 100 * time.Millisecond
	}
	if b.Max < b.Min {
		b.Max = b.Min
	}
	if b.next < b.Min {
		b.next = b.Min
	}
	w := b.next/2 + rand.N(b.next/2+1)
	b.next = min(2*b.next, b.Max)
	return w
}

// Reset makes the next wait Min again.
func (b *Backoff) Reset() { b.next = 0 }

// Wait sleeps for Next() or until ctx is done, and returns ctx's error.
func (b *Backoff) Wait(ctx context.Context) error {
	t := time.NewTimer(b.Next())
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
