package admin

import (
	"context"
	"errors"
	"fmt"
	"io/fs"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dmsync/dmsync/dmtarget"
	"github.com/dmsync/dmsync/internal/identity"
)

// The admin API's error vocabulary: what the CLI (and any other client)
// branches on. Every error an admin RPC returns matches exactly one of
// these with errors.Is once it has crossed the socket (see FromStatus);
// the daemon's packages either wrap them (Define) or are classified here
// (Kind). This file is the one place that maps errors to gRPC codes and
// back.
var (
	// ErrInvalid: the request is wrong (a bad name, size, path, flag).
	ErrInvalid = errors.New("invalid request")
	// ErrNotFound: no such volume, peer, replication or device.
	ErrNotFound = errors.New("not found")
	// ErrExists: the thing to create is already there.
	ErrExists = errors.New("already exists")
	// ErrBusy: the thing is in use (an open device, a running operation).
	ErrBusy = errors.New("busy")
	// ErrNotReady: the node is not set up for the request (no identity,
	// no --listen).
	ErrNotReady = errors.New("not ready")
	// ErrUnsupported: this host or daemon cannot do it (no
	// device-mapper, an older daemon).
	ErrUnsupported = errors.New("unsupported")
	// ErrNotRunning: dmsyncd does not answer on its socket.
	ErrNotRunning = errors.New("dmsyncd is not running")
	// ErrPermission: the caller may not use the admin socket.
	ErrPermission = errors.New("permission denied")
)

// codes pairs each kind with its gRPC code; both directions use it.
var kindCodes = []struct {
	kind error
	code codes.Code
}{
	{ErrInvalid, codes.InvalidArgument},
	{ErrNotFound, codes.NotFound},
	{ErrExists, codes.AlreadyExists},
	{ErrBusy, codes.Aborted},
	{ErrNotReady, codes.FailedPrecondition},
	{ErrUnsupported, codes.Unimplemented},
	{ErrPermission, codes.PermissionDenied},
	{ErrNotRunning, codes.Unavailable},
	{context.Canceled, codes.Canceled},
	{context.DeadlineExceeded, codes.DeadlineExceeded},
}

// Kind returns the vocabulary error (or context.Canceled or
// context.DeadlineExceeded) that err belongs to, or nil for an error
// outside it (an internal failure). Errors of packages dmtarget and
// identity, and permission errors, are classified here; others wrap a
// kind themselves (see Define).
func Kind(err error) error {
	if err == nil {
		return nil
	}
	// Order matters: an invalid request that mentions a missing daemon
	// (dmtarget's plan checks) is still an invalid request.
	for _, k := range kindCodes {
		if errors.Is(err, k.kind) {
			return k.kind
		}
	}
	switch {
	case errors.Is(err, dmtarget.ErrInvalid):
		return ErrInvalid
	case errors.Is(err, dmtarget.ErrNoVolume), errors.Is(err, dmtarget.ErrNotFound):
		return ErrNotFound
	case errors.Is(err, dmtarget.ErrExists):
		return ErrExists
	case errors.Is(err, dmtarget.ErrBusy):
		return ErrBusy
	case errors.Is(err, dmtarget.ErrUnsupported):
		return ErrUnsupported
	case errors.Is(err, dmtarget.ErrDaemonNotRunning):
		return ErrNotRunning
	case errors.Is(err, identity.ErrExists):
		return ErrExists
	case errors.Is(err, identity.ErrNoIdentity):
		return ErrNotReady
	case errors.Is(err, identity.ErrBadID):
		return ErrInvalid
	case errors.Is(err, fs.ErrPermission):
		return ErrPermission
	}
	return nil
}

// Classify returns err so that it also matches its kind with errors.Is,
// keeping its text: for errors raised in the CLI itself (dmtarget's plan
// for `volume create --print`), which never crossed the socket.
func Classify(err error) error {
	k := Kind(err)
	if k == nil || errors.Is(err, k) {
		return err
	}
	return &kindError{msg: err.Error(), kind: k, cause: err}
}

// ToStatus turns a server-side error into a gRPC status with its kind's
// code and the error's text as message. An error outside the vocabulary
// becomes codes.Internal.
func ToStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codes.Internal
	k := Kind(err)
	for _, kc := range kindCodes {
		if kc.kind == k {
			code = kc.code
		}
	}
	return status.Error(code, err.Error())
}

// FromStatus turns the error of an admin RPC back into an error that
// matches its kind with errors.Is and reads as the daemon's message. A
// transport failure (codes.Unavailable without a daemon's message) names
// the socket; see Dial for a socket that does not exist.
func FromStatus(err error, socket string) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	var kind error
	for _, kc := range kindCodes {
		if kc.code == st.Code() {
			kind = kc.kind
		}
	}
	if st.Code() == codes.Unavailable {
		return fmt.Errorf("%w: %s does not answer (%s): see `systemctl status dmsyncd` and `journalctl -u dmsyncd`", ErrNotRunning, socket, st.Message())
	}
	return &kindError{msg: st.Message(), kind: kind}
}

// Define returns a sentinel error with text msg that also matches kind
// with errors.Is: how a daemon package puts its own sentinels into the
// vocabulary.
func Define(kind error, msg string) error {
	return &kindError{msg: msg, kind: kind}
}

// kindError carries a message verbatim and matches its kind (and the
// error it was classified from) with errors.Is.
type kindError struct {
	msg   string
	kind  error
	cause error
}

func (e *kindError) Error() string { return e.msg }

func (e *kindError) Unwrap() []error {
	var errs []error
	if e.kind != nil {
		errs = append(errs, e.kind)
	}
	if e.cause != nil {
		errs = append(errs, e.cause)
	}
	return errs
}

// Errorf formats an error (with fmt.Errorf, so %w works) that also
// matches kind with errors.Is; its text carries no prefix of the kind.
func Errorf(kind error, format string, a ...any) error {
	cause := fmt.Errorf(format, a...)
	return &kindError{msg: cause.Error(), kind: kind, cause: cause}
}
