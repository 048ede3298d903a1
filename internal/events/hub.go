package events

import (
	"sync"
	"time"
)

// DefaultRing is how many events a Hub keeps by default.
const DefaultRing = 512

// subBuffer is how many events a subscriber may fall behind before it
// loses its subscription.
const subBuffer = 256

// Hub keeps the latest events and fans them out to subscribers.
type Hub struct {
	now func() time.Time

	mu   sync.Mutex
	ring []Event // ring[next%len] is the oldest once full
	n    uint64  // events emitted; the last one's Seq
	subs map[*Subscription]struct{}
}

// NewHub returns a hub that keeps the last ring events (DefaultRing if
// ring <= 0).
func NewHub(ring int) *Hub {
	if ring <= 0 {
		ring = DefaultRing
	}
	return &Hub{now: time.Now, ring: make([]Event, ring), subs: map[*Subscription]struct{}{}}
}

// Emit records an event and hands it to every subscriber. It never
// blocks: a subscriber whose buffer is full is dropped (see
// Subscription.Lost). It returns the event with its Seq and Time set.
func (h *Hub) Emit(kind Kind, volume, message string) Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.n++
	e := Event{Seq: h.n, Time: h.now(), Kind: kind, Volume: volume, Message: message}
	h.ring[(h.n-1)%uint64(len(h.ring))] = e
	for s := range h.subs {
		select {
		case s.ch <- e:
		default:
			s.lost = true
			h.dropLocked(s)
		}
	}
	return e
}

// Last returns the Seq of the latest event (0 if none).
func (h *Hub) Last() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}

// Recent returns up to n of the latest events, oldest first.
func (h *Hub) Recent(n int) []Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.sinceLocked(0, n)
}

// sinceLocked returns the kept events with Seq > since, at most the last
// max of them, oldest first.
func (h *Hub) sinceLocked(since uint64, max int) []Event {
	first := uint64(1)
	if h.n > uint64(len(h.ring)) {
		first = h.n - uint64(len(h.ring)) + 1
	}
	first = maxU(first, since+1)
	if max >= 0 && h.n >= first && h.n-first+1 > uint64(max) {
		first = h.n - uint64(max) + 1
	}
	var out []Event
	for seq := first; seq <= h.n; seq++ {
		out = append(out, h.ring[(seq-1)%uint64(len(h.ring))])
	}
	return out
}

func maxU(a, b uint64) uint64 {
	if a > b {
		return a
	}
	return b
}

// Subscription receives a hub's events in order, on C.
type Subscription struct {
	// C receives the events; it is closed when the subscription ends.
	C <-chan Event
	// Replay holds the kept events after the Seq given to Subscribe, the
	// ones C will not carry; Missed is true if older ones after it were
	// already dropped from the ring.
	Replay []Event
	Missed bool

	h    *Hub
	ch   chan Event
	lost bool
	done bool
}

// Subscribe starts a subscription. since is the Seq of the last event the
// caller has seen: the kept events after it come in Replay (0: every kept
// event). SubscribeNew replays none.
func (h *Hub) Subscribe(since uint64) *Subscription {
	h.mu.Lock()
	defer h.mu.Unlock()
	ch := make(chan Event, subBuffer)
	s := &Subscription{C: ch, h: h, ch: ch}
	s.Replay = h.sinceLocked(since, -1)
	if since < h.n && (len(s.Replay) == 0 || s.Replay[0].Seq != since+1) {
		s.Missed = true
	}
	h.subs[s] = struct{}{}
	return s
}

// SubscribeNew subscribes to the events from now on.
func (h *Hub) SubscribeNew() *Subscription {
	h.mu.Lock()
	n := h.n
	h.mu.Unlock()
	return h.Subscribe(n)
}

// Close ends the subscription and closes C. It is safe to call twice.
func (s *Subscription) Close() {
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	s.h.dropLocked(s)
}

// Lost reports whether the hub dropped the subscription because the
// subscriber fell behind; resubscribe with the last Seq seen.
func (s *Subscription) Lost() bool {
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	return s.lost
}

func (h *Hub) dropLocked(s *Subscription) {
	if s.done {
		return
	}
	s.done = true
	delete(h.subs, s)
	close(s.ch)
}
