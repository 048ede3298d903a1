package replicate

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/dmsync/dmsync/internal/adminpb"
	"github.com/dmsync/dmsync/internal/identity"
	"github.com/dmsync/dmsync/logd"
	"github.com/dmsync/dmsync/rpc"
)

func TestSendState(t *testing.T) {
	for _, tc := range []struct {
		state   string
		passes  int
		pending uint64
		want    adminpb.SendState
	}{
		{"starting", 0, 10, adminpb.SendState_SEND_STATE_STARTING},
		{"sending", 0, 10, adminpb.SendState_SEND_STATE_SYNCING},
		{"idle", 1, 0, adminpb.SendState_SEND_STATE_SYNCED},
		{"idle", 1, 3, adminpb.SendState_SEND_STATE_SYNCING},
		{"sending (2 regions busy or new)", 4, 2, adminpb.SendState_SEND_STATE_SYNCING},
		{"stopped: " + ErrNoIdentity.Error(), 0, 5, adminpb.SendState_SEND_STATE_REPLICATOR_DOWN},
		{"retrying in 2s: " + fmt.Errorf("dial: %w", rpc.ErrUnavailable).Error(), 0, 5, adminpb.SendState_SEND_STATE_PEER_UNREACHABLE},
		{"retrying: rpc error: code = Unavailable desc = connection error: dial tcp 10.0.0.2:7420: connect: connection refused", 1, 5, adminpb.SendState_SEND_STATE_PEER_UNREACHABLE},
		{"retrying in 4s: " + fmt.Errorf("offer: volume %q: %w", "x", rpc.ErrVolumeMismatch).Error(), 0, 5, adminpb.SendState_SEND_STATE_REFUSED},
		{"retrying in 4s: " + fmt.Errorf("handshake: %w: not pinned", identity.ErrRefused).Error(), 0, 5, adminpb.SendState_SEND_STATE_REFUSED},
		{"retrying in 4s: " + rpc.ErrNoSpace.Error(), 0, 5, adminpb.SendState_SEND_STATE_PEER_FULL},
		{"retrying in 4s: pebble: disk full", 0, 5, adminpb.SendState_SEND_STATE_STORE_FAILED},
		{"retrying: 3 failed attempts in this pass (the dmsyncd log has each error)", 1, 5, adminpb.SendState_SEND_STATE_FAILING},
	} {
		got := classifySend(SendStatus{State: tc.state, Passes: tc.passes, PendingRegions: tc.pending})
		if got != tc.want {
			t.Errorf("%q: %v, want %v", tc.state, got, tc.want)
		}
	}
}

// TestSendStateFromErr: a failing send is classified by the sentinel its
// error wraps, whatever the text says.
func TestSendStateFromErr(t *testing.T) {
	refusedConn := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	for _, tc := range []struct {
		err  error
		want adminpb.SendState
	}{
		{fmt.Errorf("peer b: %w", refusedConn), adminpb.SendState_SEND_STATE_PEER_UNREACHABLE},
		{fmt.Errorf("batch: %w", context.DeadlineExceeded), adminpb.SendState_SEND_STATE_PEER_UNREACHABLE},
		// The text would say "store" (a failed store), the sentinel says the peer is full.
		{fmt.Errorf("receiver store: %w", rpc.ErrNoSpace), adminpb.SendState_SEND_STATE_PEER_FULL},
		{fmt.Errorf("mark 3 regions replicated: %w", logd.ErrStore), adminpb.SendState_SEND_STATE_STORE_FAILED},
		{fmt.Errorf("handshake: %w", identity.ErrRefused), adminpb.SendState_SEND_STATE_REFUSED},
		{fmt.Errorf("%w: tls: bad certificate", rpc.ErrUnavailable), adminpb.SendState_SEND_STATE_REFUSED},
		{ErrNoIdentity, adminpb.SendState_SEND_STATE_REPLICATOR_DOWN},
		{errors.New("something new"), adminpb.SendState_SEND_STATE_FAILING},
	} {
		s := SendStatus{State: "retrying in 2s: " + tc.err.Error(), Err: tc.err, PendingRegions: 1}
		if got := classifySend(s); got != tc.want {
			t.Errorf("%v: %v, want %v", tc.err, got, tc.want)
		}
	}
}
