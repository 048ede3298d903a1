package admin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dmsync/dmsync/dmtarget"
)

// TestKindsRoundTrip sends every kind of error through ToStatus and
// FromStatus, as an RPC does: the kind and the text survive, the daemon
// package's sentinel does not reach the client.
func TestKindsRoundTrip(t *testing.T) {
	mine := Define(ErrNotFound, "no such replicated volume")
	for _, tc := range []struct {
		err  error
		code codes.Code
		kind error
	}{
		{fmt.Errorf("volume v: %w: /dev/nope does not exist", dmtarget.ErrInvalid), codes.InvalidArgument, ErrInvalid},
		{fmt.Errorf("%w: no volume named v", dmtarget.ErrNoVolume), codes.NotFound, ErrNotFound},
		{fmt.Errorf("%w: v", dmtarget.ErrNotFound), codes.NotFound, ErrNotFound},
		{fmt.Errorf("%w: v", dmtarget.ErrExists), codes.AlreadyExists, ErrExists},
		{fmt.Errorf("%w: unmount it", dmtarget.ErrBusy), codes.Aborted, ErrBusy},
		{dmtarget.ErrUnsupported, codes.Unimplemented, ErrUnsupported},
		{fmt.Errorf("%w: %w", dmtarget.ErrInvalid, dmtarget.DaemonNotRunning("/s")), codes.InvalidArgument, ErrInvalid},
		{fmt.Errorf("wait: %w", mine), codes.NotFound, ErrNotFound},
		{Errorf(ErrNotReady, "no identity: run `dmsync init`"), codes.FailedPrecondition, ErrNotReady},
		{Errorf(ErrPermission, "x"), codes.PermissionDenied, ErrPermission},
		{context.Canceled, codes.Canceled, context.Canceled},
		{fmt.Errorf("verify: %w", context.DeadlineExceeded), codes.DeadlineExceeded, context.DeadlineExceeded},
		{errors.New("disk on fire"), codes.Internal, nil},
	} {
		st := ToStatus(tc.err)
		if s, _ := status.FromError(st); s.Code() != tc.code || s.Message() != tc.err.Error() {
			t.Errorf("%v: status %v, want code %v", tc.err, s, tc.code)
		}
		back := FromStatus(st, "/s")
		if back.Error() != tc.err.Error() {
			t.Errorf("%v: text after the trip %q", tc.err, back)
		}
		if tc.kind != nil && !errors.Is(back, tc.kind) {
			t.Errorf("%v: after the trip it does not match %v", tc.err, tc.kind)
		}
		if Kind(back) != tc.kind {
			t.Errorf("%v: Kind after the trip %v, want %v", tc.err, Kind(back), tc.kind)
		}
		for _, d := range []error{dmtarget.ErrInvalid, dmtarget.ErrNoVolume, dmtarget.ErrBusy, mine} {
			if errors.Is(back, d) {
				t.Errorf("%v: the client sees the daemon's sentinel %v", tc.err, d)
			}
		}
	}
	if !errors.Is(mine, ErrNotFound) || mine.Error() != "no such replicated volume" {
		t.Fatalf("Define: %v", mine)
	}
	if c := Classify(fmt.Errorf("%w: x", dmtarget.ErrInvalid)); !errors.Is(c, ErrInvalid) || !errors.Is(c, dmtarget.ErrInvalid) {
		t.Fatalf("Classify lost a kind: %v", c)
	}
}

func TestFromStatusUnavailable(t *testing.T) {
	err := FromStatus(status.Error(codes.Unavailable, "connection reset"), "/run/dmsync/dmsync.sock")
	if !errors.Is(err, ErrNotRunning) {
		t.Fatal(err)
	}
	want := "dmsyncd is not running: /run/dmsync/dmsync.sock does not answer (connection reset): see `systemctl status dmsyncd` and `journalctl -u dmsyncd`"
	if err.Error() != want {
		t.Fatalf("%q\nwant %q", err, want)
	}
}

func TestDialErrors(t *testing.T) {
	const sock = "/run/dmsync/dmsync.sock"
	for _, tc := range []struct {
		err  error
		kind error
		want string
	}{
		{&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.EACCES)}, ErrPermission, "permission denied on /run/dmsync/dmsync.sock: run as root"},
		{&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ENOENT)}, ErrNotRunning, "dmsyncd is not running (no socket at /run/dmsync/dmsync.sock): start it with `systemctl start dmsyncd`"},
		{&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, ErrNotRunning, "dmsyncd is not running (/run/dmsync/dmsync.sock refuses connections): start it with `systemctl start dmsyncd`"},
	} {
		err := dialError(sock, tc.err)
		if !errors.Is(err, tc.kind) || err.Error() != tc.want {
			t.Errorf("%v: %q, want %q", tc.err, err, tc.want)
		}
	}
}

// TestDialStaleSocket: a socket file nobody listens on (dmsyncd was killed)
// is "not running", found by a real connect.
func TestDialStaleSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "dmsync.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	_, err = Dial(context.Background(), sock)
	if !errors.Is(err, ErrNotRunning) || err.Error() != "dmsyncd is not running ("+sock+" refuses connections): start it with `systemctl start dmsyncd`" {
		t.Fatalf("%v", err)
	}
}

// FuzzRoundTrip: any message of any kind crosses ToStatus and FromStatus
// with its text and kind intact.
func FuzzRoundTrip(f *testing.F) {
	f.Add(0, "no volume named v")
	f.Add(3, "")
	f.Add(7, "a\nb: %w %s")
	kinds := []error{ErrInvalid, ErrNotFound, ErrExists, ErrBusy, ErrNotReady, ErrUnsupported, ErrPermission, context.Canceled, context.DeadlineExceeded}
	f.Fuzz(func(t *testing.T, k int, msg string) {
		if k < 0 {
			k = -k
		}
		kind := kinds[k%len(kinds)]
		err := Define(kind, msg)
		back := FromStatus(ToStatus(err), "/s")
		if !errors.Is(back, kind) || Kind(back) != kind {
			t.Fatalf("%v %q: came back as %v (kind %v)", kind, msg, back, Kind(back))
		}
		if s, _ := status.FromError(ToStatus(err)); s.Message() != msg {
			t.Fatalf("message %q became %q", msg, s.Message())
		}
	})
}
