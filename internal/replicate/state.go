package replicate

import (
	"context"
	"errors"
	"strings"
	"syscall"

	"github.com/dmsync/dmsync/internal/adminpb"
	"github.com/dmsync/dmsync/internal/identity"
	"github.com/dmsync/dmsync/logd"
	"github.com/dmsync/dmsync/rpc"
)

// classifySend classifies a send for machines (adminpb.SendState). A
// failing send carries its error (SendStatus.Err): the kind comes from the
// sentinels it wraps (errors.Is). Errors from below that wrap no sentinel
// (a TLS alert, a dial error as text from gRPC) and a State without an Err
// fall back to the text.
func classifySend(s SendStatus) adminpb.SendState {
	if s.Err != nil {
		if k, ok := classifyErr(s.Err); ok {
			return k
		}
	}
	t := s.State
	has := func(errs ...error) bool {
		for _, e := range errs {
			if strings.Contains(t, e.Error()) {
				return true
			}
		}
		return false
	}
	hasText := func(subs ...string) bool {
		for _, sub := range subs {
			if strings.Contains(t, sub) {
				return true
			}
		}
		return false
	}
	switch {
	case strings.HasPrefix(t, "stopped"):
		return adminpb.SendState_SEND_STATE_REPLICATOR_DOWN
	case t == "starting":
		return adminpb.SendState_SEND_STATE_STARTING
	case !strings.HasPrefix(t, "retrying"):
		if s.Passes > 0 && s.PendingRegions == 0 {
			return adminpb.SendState_SEND_STATE_SYNCED
		}
		return adminpb.SendState_SEND_STATE_SYNCING
	case has(rpc.ErrPermission, identity.ErrRefused, rpc.ErrUnknownVolume, rpc.ErrVolumeMismatch, rpc.ErrParamsMismatch) ||
		hasText("certificate", "tls: "):
		return adminpb.SendState_SEND_STATE_REFUSED
	case has(rpc.ErrNoSpace):
		return adminpb.SendState_SEND_STATE_PEER_FULL
	case has(rpc.ErrUnavailable) || hasText("connection refused", "no route to host", "i/o timeout", "connection reset",
		"network is unreachable", "code = Unavailable", "deadline exceeded", "context deadline"):
		return adminpb.SendState_SEND_STATE_PEER_UNREACHABLE
	case hasText("pebble", "dirty log", "store"):
		return adminpb.SendState_SEND_STATE_STORE_FAILED
	}
	return adminpb.SendState_SEND_STATE_FAILING
}

// classifyErr classifies a failure by the sentinel errors it wraps.
// Refusals come first: a TLS handshake the peer refused also reaches the
// sender as "unavailable".
func classifyErr(err error) (adminpb.SendState, bool) {
	is := func(errs ...error) bool {
		for _, e := range errs {
			if errors.Is(err, e) {
				return true
			}
		}
		return false
	}
	switch {
	case is(ErrNoIdentity):
		return adminpb.SendState_SEND_STATE_REPLICATOR_DOWN, true
	case is(rpc.ErrPermission, identity.ErrRefused, rpc.ErrUnknownVolume, rpc.ErrVolumeMismatch, rpc.ErrParamsMismatch):
		return adminpb.SendState_SEND_STATE_REFUSED, true
	case is(rpc.ErrNoSpace):
		return adminpb.SendState_SEND_STATE_PEER_FULL, true
	case is(logd.ErrStore):
		return adminpb.SendState_SEND_STATE_STORE_FAILED, true
	case is(rpc.ErrUnavailable, context.DeadlineExceeded, syscall.ECONNREFUSED, syscall.EHOSTUNREACH,
		syscall.ENETUNREACH, syscall.ECONNRESET, syscall.ETIMEDOUT):
		if t := err.Error(); strings.Contains(t, "tls: ") || strings.Contains(t, "certificate") {
			return adminpb.SendState_SEND_STATE_REFUSED, true
		}
		return adminpb.SendState_SEND_STATE_PEER_UNREACHABLE, true
	}
	return 0, false
}
