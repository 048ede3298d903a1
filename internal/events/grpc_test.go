package events

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/dmsync/dmsync/internal/adminpb"
)

func eventsClient(t *testing.T, hub *Hub) adminpb.EventsClient {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	g := grpc.NewServer()
	Register(g, hub)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	cc, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return adminpb.NewEventsClient(cc)
}

func TestEventsRPC(t *testing.T) {
	hub := NewHub(4)
	for range 6 {
		hub.Emit(PeerUp, "v", "old") // 1, 2 dropped from the ring of 4
	}
	c := eventsClient(t, hub)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// since=1: 2 is lost, so 3 comes with gap; then 4..6, then live 7.
	st, err := c.Events(ctx, &adminpb.EventsRequest{Since: 1})
	if err != nil {
		t.Fatal(err)
	}
	var got []*adminpb.Event
	for len(got) < 4 {
		e, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, e)
	}
	if got[0].GetSeq() != 3 || !got[0].GetGap() || got[1].GetGap() || got[3].GetSeq() != 6 {
		t.Fatalf("replay: %v", got)
	}
	hub.Emit(LegFailed, "w", "leg 0 failed")
	e, err := st.Recv()
	if err != nil || e.GetSeq() != 7 || e.GetKind() != string(LegFailed) || e.GetVolume() != "w" || e.GetTimeUnixNano() == 0 {
		t.Fatalf("live: %v %v", e, err)
	}

	// now: nothing replayed.
	st, err = c.Events(ctx, &adminpb.EventsRequest{Now: true})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	hub.Emit(StoreFailed, "", "disk full")
	if e, err := st.Recv(); err != nil || e.GetSeq() != 8 {
		t.Fatalf("now: %v %v", e, err)
	}
}

// A stream whose client does not read loses its subscription but goes on
// from where it was, marking the gap; Emit never waits for it.
func TestEventsRPCSlowClient(t *testing.T) {
	hub := NewHub(DefaultRing)
	c := eventsClient(t, hub)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := c.Events(ctx, &adminpb.EventsRequest{Now: true})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	const n = 20000
	for range n {
		hub.Emit(ConsistentPoint, "v", "a message long enough to fill the transport's buffers quickly ....................")
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Fatalf("emitting %d events took %v: the stream slowed the emitter", n, el)
	}
	var seen, gaps int
	var last uint64
	for last < n {
		e, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if e.GetSeq() <= last {
			t.Fatalf("seq %d after %d", e.GetSeq(), last)
		}
		if e.GetSeq() != last+1 && !e.GetGap() {
			t.Fatalf("seq %d after %d without a gap mark", e.GetSeq(), last)
		}
		if e.GetGap() {
			gaps++
		}
		last = e.GetSeq()
		seen++
	}
	t.Logf("%d of %d events received, %d gaps", seen, n, gaps)
}
