package grpctransport

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dmsync/dmsync/rpc"
)

// blackhole models a network blackout: while it is on, new connections
// hang in the dial (SYNs dropped) and connections that carried traffic
// during it are dead for good, with no reset: their writes vanish and
// their reads block until closed. Connections made after it are fine.
type blackhole struct {
	on    atomic.Bool
	mu    sync.Mutex
	lift  chan struct{}
	conns []*holeConn
	// trigger, if set, runs once when the connections have carried
	// triggerAt bytes.
	written   atomic.Int64
	triggerAt int64
	trigger   sync.Once
	at        func()
}

func newBlackhole() *blackhole { return &blackhole{lift: make(chan struct{})} }

func (b *blackhole) start() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.on.Store(true)
	b.lift = make(chan struct{})
	for _, c := range b.conns {
		c.kill()
	}
}

func (b *blackhole) stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.on.Store(false)
	close(b.lift)
}

func (b *blackhole) dial(ctx context.Context, addr string) (net.Conn, error) {
	b.mu.Lock()
	lift := b.lift
	b.mu.Unlock()
	if b.on.Load() {
		select {
		case <-lift:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	hc := &holeConn{Conn: c, dead: make(chan struct{}), b: b}
	b.mu.Lock()
	b.conns = append(b.conns, hc)
	b.mu.Unlock()
	return hc, nil
}

type holeConn struct {
	net.Conn
	once sync.Once
	dead chan struct{}
	b    *blackhole
}

func (c *holeConn) kill() { c.once.Do(func() { close(c.dead) }) }

func (c *holeConn) Read(p []byte) (int, error) {
	type res struct {
		n   int
		err error
	}
	select {
	case <-c.dead:
		<-make(chan struct{}) // never: a dead path delivers nothing
	default:
	}
	n, err := c.Conn.Read(p)
	select {
	case <-c.dead:
		// Data that arrived after the blackout began is lost; wait for
		// the close that keepalive must trigger.
		buf := make([]byte, 1)
		for {
			if _, err := c.Conn.Read(buf); err != nil {
				return 0, err
			}
		}
	default:
	}
	return n, err
}

func (c *holeConn) Write(p []byte) (int, error) {
	select {
	case <-c.dead:
		return len(p), nil // dropped on the floor, no error
	default:
	}
	if b := c.b; b.at != nil && b.written.Add(int64(len(p))) >= b.triggerAt {
		b.trigger.Do(func() { go b.at() })
	}
	return c.Conn.Write(p)
}

// Close ends a dead connection's blocked reads too.
func (c *holeConn) Close() error {
	err := c.Conn.Close()
	return err
}

// TestBlackoutResumes: a blackout mid-pass (packets dropped, no reset)
// on a connection both sides consider open. Keepalive notices it on both
// sides, the sender retries, and once the path is back the pass completes
// with no restart of either side; nothing is marked replicated early.
func TestBlackoutResumes(t *testing.T) {
	const size = 4 << 20
	live := Liveness{Ping: 100 * time.Millisecond, PingTimeout: 300 * time.Millisecond, Stall: 2 * time.Second}
	s := newSenderNode(t, size, 128<<10, 16<<10, 7)
	r := newReceiverNode(t, size, s.id.ID)
	r.live = live
	r.start()
	checkReplicatedEarly(t, s, r)
	hole := newBlackhole()
	blackout := 2 * time.Second
	var lifted atomic.Int64
	hole.triggerAt = size / 3 // mid-pass, on a connection in use
	hole.at = func() {
		hole.start()
		time.AfterFunc(blackout, func() {
			lifted.Store(time.Now().UnixNano())
			hole.stop()
		})
	}
	snd := s.sender(s.dial(r, DialOptions{Dialer: hole.dial, MaxReconnectDelay: 200 * time.Millisecond, Liveness: live}), r.id.ID)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := snd.RunOnce(ctx); err != nil {
		t.Fatalf("the pass did not complete after a %v blackout: %v", blackout, err)
	}
	if lifted.Load() == 0 {
		t.Fatal("the blackout never started: the test did not exercise it")
	}
	resumed := time.Since(time.Unix(0, lifted.Load()))
	if snd.Stats().Failures == 0 {
		t.Fatal("no batch failed during the blackout: the dead connection was not noticed")
	}
	equalFiles(t, s.path, r.path)
	allReplicated(t, s)
	t.Logf("blackout %v: %d failed attempts; pass complete %v after the path came back", blackout, snd.Stats().Failures, resumed.Round(time.Millisecond))
}

// TestReceiverAbortsSilentSender: a sender that opens a batch and then
// goes silent on a healthy connection does not hold the batch's ranges
// past the stall bound; another batch over the same ranges then succeeds.
func TestReceiverAbortsSilentSender(t *testing.T) {
	const size = 1 << 20
	s := newSenderNode(t, size, 128<<10, 16<<10, 8)
	r := newReceiverNode(t, size, s.id.ID)
	r.live = Liveness{Stall: 500 * time.Millisecond}
	r.start()
	c := s.dial(r, DialOptions{Liveness: Liveness{Stall: time.Minute}})
	ctx := ctxT(t)
	st, err := c.Apply(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ch := rpc.FixedChunker{Size: 16 << 10}
	rng, _, err := ch.Cut(s.src, size, 0, size)
	if err != nil {
		t.Fatal(err)
	}
	offer := &rpc.Offer{Volume: testVol, VolumeSize: size, Params: ch.Params(), Ranges: []rpc.Range{rng}}
	need, err := st.Offer(offer)
	if err != nil {
		t.Fatal(err)
	}
	if need.Count() == 0 {
		t.Fatal("the receiver needs nothing: the test would not hold a batch open")
	}
	time.Sleep(1500 * time.Millisecond) // silent, far past the receiver's stall bound
	_, _, err = st.Finish(false)
	if err == nil || !errors.Is(err, rpc.ErrUnavailable) || !strings.Contains(err.Error(), "no message from the sender") {
		t.Fatalf("a batch silent past the stall bound: Finish = %v, want the receiver's stall error", err)
	}
	snd := s.sender(c, r.id.ID)
	if _, err := snd.RunOnce(ctx); err != nil {
		t.Fatalf("a batch after the aborted one: %v", err)
	}
	equalFiles(t, s.path, r.path)
}
