package logapi

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dmsync/dmsync/logd"
	"github.com/dmsync/dmsync/logd/logpb"
)

// Bounds of a freeze's pause.
const (
	// DefaultMaxPause is the auto-thaw of a Freeze that names none.
	DefaultMaxPause = 2 * time.Second
	// MaxPause caps any Freeze's auto-thaw: writes to the volume never
	// block longer for a consistency point.
	MaxPause = 10 * time.Second
)

// ClampPause returns the auto-thaw delay for a requested maxPause.
func ClampPause(maxPause time.Duration) time.Duration {
	switch {
	case maxPause <= 0:
		return DefaultMaxPause
	case maxPause > MaxPause:
		return MaxPause
	}
	return maxPause
}

// Freeze errors. A Freezer's errors wrap one of these (or
// logd.ErrUnknownVolume); the Client maps them back from gRPC codes.
var (
	// ErrFreezeUnavailable: this volume cannot be frozen here, and will
	// not be until the operator changes something (no device above the
	// mirror, no device-mapper, a log server without a freezer).
	// Consistency points are then unavailable.
	ErrFreezeUnavailable = errors.New("freeze unavailable")
	// ErrFrozen: another freeze of the volume is held.
	ErrFrozen = errors.New("volume already frozen")
	// ErrFreezeToken: no freeze of the volume has that token (already
	// thawed, or never made).
	ErrFreezeToken = errors.New("no such freeze")
	// ErrFreezeFailed: a suspend failed or did not finish within the
	// pause; whatever was suspended is (or will be, once its ioctl
	// returns) resumed. Worth trying again later.
	ErrFreezeFailed = errors.New("freeze failed")
)

// Freeze is a held freeze of a volume's top devices.
type Freeze struct {
	// Token names the freeze to Thaw.
	Token uint64
	// Devices are the dm names suspended, in suspend order (top first).
	Devices []string
	// FrozenAt is when the last suspend returned: every write completed
	// before it is on the mirror, none is started after it until Thaw.
	FrozenAt time.Time
}

func freezeStatus(err error) error {
	if err == nil {
		return nil
	}
	code := codes.Unknown
	switch {
	case errors.Is(err, ErrFreezeUnavailable):
		code = codes.Unimplemented
	case errors.Is(err, ErrFrozen):
		code = codes.AlreadyExists
	case errors.Is(err, ErrFreezeToken):
		code = codes.InvalidArgument
	case errors.Is(err, ErrFreezeFailed):
		code = codes.Aborted
	case errors.Is(err, logd.ErrUnknownVolume):
		code = codes.NotFound
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	}
	return status.Error(code, err.Error())
}

func (c *Client) fromFreezeStatus(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	var base error
	switch st.Code() {
	case codes.Unimplemented:
		base = ErrFreezeUnavailable
	case codes.AlreadyExists:
		base = ErrFrozen
	case codes.InvalidArgument:
		base = ErrFreezeToken
	case codes.Aborted:
		base = ErrFreezeFailed
	default:
		return c.fromStatus(err)
	}
	return fmt.Errorf("%w (%s)", base, st.Message())
}

// Freeze implements logpb.LogServer.
func (s *Server) Freeze(ctx context.Context, r *logpb.FreezeRequest) (*logpb.FreezeResponse, error) {
	if s.o.Freezer == nil {
		return nil, freezeStatus(fmt.Errorf("%w: this log server has no freezer (device-mapper is not used here)", ErrFreezeUnavailable))
	}
	f, err := s.o.Freezer.Freeze(ctx, r.GetUuid(), time.Duration(r.GetMaxPauseMs())*time.Millisecond, r.GetFsfreeze())
	if err != nil {
		return nil, freezeStatus(err)
	}
	return &logpb.FreezeResponse{Token: f.Token, Devices: f.Devices, FrozenAtUnixNano: f.FrozenAt.UnixNano()}, nil
}

// Thaw implements logpb.LogServer.
func (s *Server) Thaw(ctx context.Context, r *logpb.ThawRequest) (*logpb.ThawResponse, error) {
	if s.o.Freezer == nil {
		return nil, freezeStatus(fmt.Errorf("%w: this log server has no freezer (device-mapper is not used here)", ErrFreezeUnavailable))
	}
	held, pause, err := s.o.Freezer.Thaw(ctx, r.GetUuid(), r.GetToken())
	if err != nil {
		return nil, freezeStatus(err)
	}
	return &logpb.ThawResponse{Held: held, PauseNs: int64(pause)}, nil
}

var _ Freezer = (*Client)(nil)

// Freeze suspends the volume's top devices (see Freezer). The call is
// bounded by ctx and by the pause: the log server gives up on a suspend
// that takes longer than maxPause.
func (c *Client) Freeze(ctx context.Context, uuid string, maxPause time.Duration, fsfreeze bool) (Freeze, error) {
	ctx, cancel := context.WithTimeout(ctx, ClampPause(maxPause)+30*time.Second)
	defer cancel()
	r, err := c.pb.Freeze(ctx, &logpb.FreezeRequest{Uuid: uuid, MaxPauseMs: uint32(ClampPause(maxPause).Milliseconds()), Fsfreeze: fsfreeze})
	if err != nil {
		return Freeze{}, c.fromFreezeStatus(err)
	}
	return Freeze{Token: r.GetToken(), Devices: r.GetDevices(), FrozenAt: time.Unix(0, r.GetFrozenAtUnixNano())}, nil
}

// Thaw resumes the devices of a freeze (see Freezer). held is true only if
// they stayed suspended from Freeze until this Thaw.
func (c *Client) Thaw(ctx context.Context, uuid string, token uint64) (bool, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	r, err := c.pb.Thaw(ctx, &logpb.ThawRequest{Uuid: uuid, Token: token})
	if err != nil {
		return false, 0, c.fromFreezeStatus(err)
	}
	return r.GetHeld(), time.Duration(r.GetPauseNs()), nil
}
