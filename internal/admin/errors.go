package admin

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dmsync/dmsync/dmtarget"
)

func invalidf(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{dmtarget.ErrInvalid}, a...)...)
}

// toStatus maps an error to a gRPC status: the one place where dmtarget's
// sentinels become codes. The message is the error text.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	code := codes.Internal
	switch {
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, dmtarget.ErrInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, dmtarget.ErrNoVolume), errors.Is(err, dmtarget.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, dmtarget.ErrBusy):
		code = codes.FailedPrecondition
	case errors.Is(err, dmtarget.ErrExists):
		code = codes.AlreadyExists
	case errors.Is(err, dmtarget.ErrUnsupported):
		code = codes.Unimplemented
	}
	return status.Error(code, err.Error())
}

// FromStatus turns an error from an admin RPC back into an error that
// wraps the matching dmtarget sentinel (or ErrDaemonNotRunning for an
// unreachable daemon), with the daemon's message as text.
func FromStatus(err error, socket string) error {
	st, ok := status.FromError(err)
	if !ok || err == nil {
		return err
	}
	var sentinel error
	switch st.Code() {
	case codes.InvalidArgument:
		sentinel = dmtarget.ErrInvalid
	case codes.NotFound:
		sentinel = dmtarget.ErrNoVolume
	case codes.FailedPrecondition:
		sentinel = dmtarget.ErrBusy
	case codes.AlreadyExists:
		sentinel = dmtarget.ErrExists
	case codes.Canceled:
		sentinel = context.Canceled
	case codes.DeadlineExceeded:
		sentinel = context.DeadlineExceeded
	case codes.Unavailable:
		return fmt.Errorf("%w (socket %s does not answer: %s): start or restart it with `systemctl restart dmsyncd`", dmtarget.ErrDaemonNotRunning, socket, st.Message())
	}
	if sentinel == nil {
		return &remoteError{msg: st.Message()}
	}
	return &remoteError{msg: st.Message(), sentinel: sentinel}
}

// remoteError carries the daemon's message verbatim and matches its
// sentinel with errors.Is.
type remoteError struct {
	msg      string
	sentinel error
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.sentinel }
