package logapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/dmsync/dmsync/logd"
	"github.com/dmsync/dmsync/logd/logpb"
)

// fakeFreezer answers from its fields and records what it was asked.
type fakeFreezer struct {
	err      error
	gotPause time.Duration
	gotFS    bool
}

func (f *fakeFreezer) Freeze(_ context.Context, uuid string, maxPause time.Duration, fsfreeze bool) (Freeze, error) {
	f.gotPause, f.gotFS = maxPause, fsfreeze
	if f.err != nil {
		return Freeze{}, f.err
	}
	return Freeze{Token: 42, Devices: []string{"top", "crypt"}, FrozenAt: time.Unix(100, 5)}, nil
}

func (f *fakeFreezer) Thaw(_ context.Context, uuid string, token uint64) (bool, time.Duration, error) {
	if f.err != nil {
		return false, 0, f.err
	}
	return token == 42, 1500 * time.Microsecond, nil
}

func serveFreezer(t *testing.T, fz Freezer) *Client {
	t.Helper()
	path := filepath.Join(t.TempDir(), "log.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Skipf("unix sockets: %v", err)
	}
	g := grpc.NewServer()
	Register(g, NewServer(Options{Log: &fakeLog{}, Health: func() *logpb.HealthResponse { return &logpb.HealthResponse{} }, Freezer: fz}))
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	c, err := Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestFreezeOverSocket(t *testing.T) {
	ctx := context.Background()
	fz := &fakeFreezer{}
	c := serveFreezer(t, fz)
	f, err := c.Freeze(ctx, "v", 500*time.Millisecond, true)
	if err != nil || f.Token != 42 || !slices.Equal(f.Devices, []string{"top", "crypt"}) || !f.FrozenAt.Equal(time.Unix(100, 5)) {
		t.Fatalf("freeze %+v %v", f, err)
	}
	if fz.gotPause != 500*time.Millisecond || !fz.gotFS {
		t.Fatalf("server got pause %v fsfreeze %v", fz.gotPause, fz.gotFS)
	}
	if _, err := c.Freeze(ctx, "v", time.Hour, false); err != nil || fz.gotPause != MaxPause {
		t.Fatalf("pause not capped: %v %v", fz.gotPause, err)
	}
	if held, pause, err := c.Thaw(ctx, "v", 42); !held || pause != 1500*time.Microsecond || err != nil {
		t.Fatalf("thaw %v %v %v", held, pause, err)
	}
	// Each error keeps its meaning across the socket.
	for _, want := range []error{ErrFreezeUnavailable, ErrFrozen, ErrFreezeToken, ErrFreezeFailed, logd.ErrUnknownVolume} {
		fz.err = fmt.Errorf("%w: volume v: the reason", want)
		if _, err := c.Freeze(ctx, "v", 0, false); !errors.Is(err, want) {
			t.Errorf("freeze: %v, want %v", err, want)
		}
		if _, _, err := c.Thaw(ctx, "v", 1); !errors.Is(err, want) {
			t.Errorf("thaw: %v, want %v", err, want)
		}
	}
}

func TestFreezeWithoutFreezer(t *testing.T) {
	c := serveFreezer(t, nil)
	if _, err := c.Freeze(context.Background(), "v", 0, false); !errors.Is(err, ErrFreezeUnavailable) {
		t.Fatalf("freeze: %v", err)
	}
	if _, _, err := c.Thaw(context.Background(), "v", 1); !errors.Is(err, ErrFreezeUnavailable) {
		t.Fatalf("thaw: %v", err)
	}
}
