package grpctransport

import (
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dmsync/dmsync/rpc"
)

// The one place where rpc's sentinel errors meet gRPC status codes. The
// code alone cannot tell every sentinel apart, so the sentinel's text leads
// the status message and fromStatus matches on both.
var table = []struct {
	err  error
	code codes.Code
}{
	{rpc.ErrPermission, codes.PermissionDenied},
	{rpc.ErrUnknownVolume, codes.NotFound},
	{rpc.ErrVolumeMismatch, codes.FailedPrecondition},
	{rpc.ErrParamsMismatch, codes.FailedPrecondition},
	{rpc.ErrBadOffer, codes.InvalidArgument},
	{rpc.ErrChunkSize, codes.InvalidArgument},
	{rpc.ErrHashMismatch, codes.DataLoss},
	{rpc.ErrProtocol, codes.InvalidArgument},
	{rpc.ErrNoSpace, codes.ResourceExhausted},
	{rpc.ErrUnavailable, codes.Unavailable},
	{rpc.ErrStaged, codes.FailedPrecondition},
	{rpc.ErrPointLost, codes.Aborted},
}

// toStatus turns a receiver error into a gRPC status error.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	for _, t := range table {
		if errors.Is(err, t.err) {
			return status.Error(t.code, t.err.Error()+": "+err.Error())
		}
	}
	if errors.Is(err, context.Canceled) {
		return status.Error(codes.Canceled, err.Error())
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// sentinelError keeps a status's message while wrapping the sentinel.
type sentinelError struct {
	sentinel error
	msg      string
}

func (e *sentinelError) Error() string { return e.msg }
func (e *sentinelError) Unwrap() error { return e.sentinel }

// fromStatus turns an error from a gRPC call into one that wraps an rpc
// sentinel, so the sender can branch with errors.Is.
func fromStatus(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("stream ended early: %w", rpc.ErrUnavailable)
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	msg := "peer: " + st.Message()
	for _, t := range table {
		if st.Code() == t.code && len(st.Message()) >= len(t.err.Error()) && st.Message()[:len(t.err.Error())] == t.err.Error() {
			return &sentinelError{t.err, msg}
		}
	}
	switch st.Code() {
	case codes.Unavailable, codes.Canceled, codes.DeadlineExceeded, codes.Aborted:
		return &sentinelError{rpc.ErrUnavailable, msg}
	}
	return &sentinelError{errors.New(st.Code().String()), msg}
}
