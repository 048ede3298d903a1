package replicate

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dmsync/dmsync/internal/admin"
)

// TestReceiveByNameAndLifecycle: B receives A's volume under A's name for
// it (not its log uuid); then each verb that undoes something: receive
// checks, replicate stop, receive remove, peer remove (revoke).
func TestReceiveByNameAndLifecycle(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	b := newNode(t, freeAddr(t))
	a := newNode(t, "")
	data := make([]byte, testSize)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	if err := os.WriteFile(a.src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	a.log.AddVolume("uuid-vol", testRegion, testRegions)

	// The replica is a file larger than the volume; --size says how much.
	replica := filepath.Join(b.dir, "replica.img")
	if err := os.WriteFile(replica, make([]byte, 2*testSize), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgBefore := b.m.Config()
	// Mistakes, each refused before anything is saved.
	for _, tc := range []struct {
		r    Receive
		kind error
		want string
	}{
		{Receive{Volume: "vol", From: a.id.ID, Image: replica, Size: 3 * testSize}, admin.ErrInvalid, "use a larger device or file"},
		{Receive{Volume: "vol", From: "nope", Image: replica, Size: testSize}, admin.ErrInvalid, "is not a node id"},
		{Receive{Volume: "a b", From: a.id.ID, Image: replica, Size: testSize}, admin.ErrInvalid, "want one word"},
		{Receive{Volume: "vol", From: a.id.ID, Image: "/dev/dmsync-typo", Size: testSize}, admin.ErrInvalid, "no files under /dev"},
	} {
		_, _, err := b.m.ReceiveVolume(tc.r, false)
		if !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %v %q", tc.r, err, tc.kind, tc.want)
		}
	}
	if c := b.m.Config(); len(c.Receives) != len(cfgBefore.Receives) {
		t.Fatalf("refused receives were saved: %+v", c.Receives)
	}
	size, changed, err := b.m.ReceiveVolume(Receive{Volume: "vol", From: a.id.ID, Image: replica, Size: testSize}, false)
	if err != nil || size != testSize || changed {
		t.Fatalf("receive: %d %v %v", size, changed, err)
	}
	// Again, identical: fine. Into the same image under another name: no.
	if _, _, err := b.m.ReceiveVolume(Receive{Volume: "vol", From: a.id.ID, Image: replica}, false); err != nil {
		t.Fatalf("identical receive again: %v", err)
	}
	if _, _, err := b.m.ReceiveVolume(Receive{Volume: "other", From: a.id.ID, Image: replica, Size: testSize}, false); !errors.Is(err, admin.ErrBusy) {
		t.Fatalf("second volume into the same image: %v", err)
	}
	other := filepath.Join(b.dir, "other.img")
	if _, _, err := b.m.ReceiveVolume(Receive{Volume: "vol", From: a.id.ID, Image: other, Size: testSize}, false); !errors.Is(err, admin.ErrExists) || !strings.Contains(err.Error(), "receive remove vol") {
		t.Fatalf("re-target without --force: %v", err)
	}
	if _, err := os.Stat(other); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused receive created its image: %v", err)
	}

	if err := a.m.AddPeer(Peer{ID: b.id.ID, Addr: b.m.opts.Listen}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.m.Replicate(context.Background(), "vol", b.id.ID); err != nil {
		t.Fatal(err)
	}
	st := waitReplica(t, a, replica, data)
	if st.PendingRegions != 0 || a.m.wireName(st.Send, st.Source) != "vol" {
		t.Fatalf("after wait: %+v, wire name %q", st, a.m.wireName(st.Send, st.Source))
	}

	// A peer in use is not removed without --force.
	if _, _, err := a.m.RemovePeer(b.id.ID, false); !errors.Is(err, admin.ErrBusy) || !strings.Contains(err.Error(), "replicate stop vol") {
		t.Fatalf("remove a peer in use: %v", err)
	}
	if _, err := a.m.StopSend("vol"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.m.StopSend("vol"); !errors.Is(err, admin.ErrNotFound) {
		t.Fatalf("stop twice: %v", err)
	}
	if _, err := a.m.Wait(context.Background(), "vol"); !errors.Is(err, ErrNoVolume) {
		t.Fatalf("wait after stop: %v", err)
	}
	if c := a.m.Config(); len(c.Sends) != 0 {
		t.Fatalf("stopped send still saved: %+v", c.Sends)
	}
	sends, recvs, err := a.m.RemovePeer(b.id.ID, false)
	if err != nil || len(sends)+len(recvs) != 0 || len(a.m.Config().Peers) != 0 {
		t.Fatalf("remove an unused peer: %v %v %v %+v", sends, recvs, err, a.m.Config())
	}

	// On B: revoking A (--force) removes its receive and the receiver
	// refuses it from then on.
	if _, _, err := b.m.RemovePeer(a.id.ID, false); !errors.Is(err, admin.ErrBusy) {
		t.Fatalf("revoke a sender in use: %v", err)
	}
	_, recvs, err = b.m.RemovePeer(a.id.ID, true)
	if err != nil || len(recvs) != 1 || recvs[0] != "vol" || len(b.m.Config().Receives) != 0 {
		t.Fatalf("revoke with --force: %v %v %+v", recvs, err, b.m.Config())
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		b.m.mu.Lock()
		known := b.m.recv != nil && b.m.recv.KnownSender(a.id.ID)
		b.m.mu.Unlock()
		if !known {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the receiver still knows the revoked sender")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := b.m.RemoveReceive("vol"); !errors.Is(err, admin.ErrNotFound) {
		t.Fatalf("remove a removed receive: %v", err)
	}
}
