package replicate

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/dmsync/dmsync/rpc"
)

// nameTransport is a peer that knows one volume by one name: every call
// under another name fails with rpc.ErrUnknownVolume, as a receiver's do.
type nameTransport struct {
	rpc.Transport // calls the test does not make panic
	known         string
	calls         []string // the names asked for, in order
}

func (n *nameTransport) check(name string) error {
	n.calls = append(n.calls, name)
	if name != n.known {
		return fmt.Errorf("volume %q: %w (configure it on the receiver)", name, rpc.ErrUnknownVolume)
	}
	return nil
}

func (n *nameTransport) Root(_ context.Context, volume string) (rpc.RootInfo, error) {
	return rpc.RootInfo{}, n.check(volume)
}

func (n *nameTransport) Commit(_ context.Context, c rpc.Commit) (rpc.Committed, error) {
	return rpc.Committed{}, n.check(c.Volume)
}

func (n *nameTransport) Scrub(_ context.Context, req rpc.ScrubRequest, _ func(rpc.ScrubDigests) error) error {
	return n.check(req.Volume)
}

// TestWireNameFallback: whatever a fresh sender calls first (a restarted
// replicator whose first act is to commit a point of no batches, say),
// it finds the name the peer knows the volume by, once, and keeps to it.
// A peer that knows neither name gets each name once per call, and the
// error stays ErrUnknownVolume.
func TestWireNameFallback(t *testing.T) {
	src := Source{LogUUID: "3f0c-uuid", Path: "/dev/mapper/vol-mirror", Size: 1 << 20}
	calls := map[string]func(context.Context, rpc.Transport) error{
		"commit": func(ctx context.Context, tr rpc.Transport) error {
			_, err := tr.Commit(ctx, rpc.Commit{Volume: src.LogUUID, Point: 7})
			return err
		},
		"root": func(ctx context.Context, tr rpc.Transport) error {
			_, err := tr.Root(ctx, src.LogUUID)
			return err
		},
		"scrub": func(ctx context.Context, tr rpc.Transport) error {
			return tr.Scrub(ctx, rpc.ScrubRequest{Volume: src.LogUUID}, nil)
		},
	}
	for _, tc := range []struct {
		send      Send
		known     string
		wantCalls []string // for the first call of a fresh manager
		wantErr   error
	}{
		{Send{Volume: "vol", Peer: "b"}, "3f0c-uuid", []string{"3f0c-uuid"}, nil},
		{Send{Volume: "vol", Peer: "b"}, "vol", []string{"3f0c-uuid", "vol"}, nil},
		{Send{Volume: "vol", Peer: "b"}, "other", []string{"3f0c-uuid", "vol"}, rpc.ErrUnknownVolume},
		{Send{Volume: "vol", Peer: "b", As: "dr-vol"}, "dr-vol", []string{"dr-vol"}, nil},
		{Send{Volume: "vol", Peer: "b", As: "dr-vol"}, "vol", []string{"dr-vol"}, rpc.ErrUnknownVolume},
	} {
		for name, call := range calls {
			t.Run(fmt.Sprintf("%s/as=%s/known=%s", name, tc.send.As, tc.known), func(t *testing.T) {
				m := &Manager{} // a fresh process: no wire name learned yet
				peer := &nameTransport{known: tc.known}
				err := call(context.Background(), m.peerTransport(peer, tc.send, src))
				if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
					t.Fatalf("first %s: %v, want %v", name, err, tc.wantErr)
				}
				if fmt.Sprint(peer.calls) != fmt.Sprint(tc.wantCalls) {
					t.Fatalf("first %s asked for %q, want %q", name, peer.calls, tc.wantCalls)
				}
				if err != nil {
					return
				}
				// The next sender of the same manager goes straight to the
				// accepted name, whichever call comes first.
				peer.calls = nil
				for again, c := range calls {
					if err := c(context.Background(), m.peerTransport(peer, tc.send, src)); err != nil {
						t.Fatalf("%s after a first %s: %v", again, name, err)
					}
				}
				for _, n := range peer.calls {
					if n != tc.known {
						t.Fatalf("after a first %s, calls asked for %q", name, peer.calls)
					}
				}
				if got := m.wireName(tc.send, src); got != tc.known {
					t.Fatalf("wire name %q, want %q", got, tc.known)
				}
			})
		}
	}
}
