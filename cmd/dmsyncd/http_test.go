package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/dmsync/dmsync/dmtarget"
	"github.com/dmsync/dmsync/internal/admin"
	"github.com/dmsync/dmsync/internal/adminpb"
	"github.com/dmsync/dmsync/internal/events"
)

// syncBuffer is a bytes.Buffer safe for the daemon's logger and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// runDaemon runs the daemon in-process without the kernel connector until
// the test ends; it returns once the daemon reported READY.
func runDaemon(t *testing.T, args ...string) *syncBuffer {
	logs, _ := runDaemonSocket(t, args...)
	return logs
}

// runDaemonSocket is runDaemon, also returning the admin socket's path.
func runDaemonSocket(t *testing.T, args ...string) (*syncBuffer, string) {
	t.Helper()
	dir := t.TempDir()
	l, sock := notifyListener(t)
	t.Setenv("NOTIFY_SOCKET", sock)
	ctx, cancel := context.WithCancel(context.Background())
	logs := &syncBuffer{}
	done := make(chan error, 1)
	args = append([]string{"--state-dir", dir, "--no-connector", "--admin-socket", filepath.Join(dir, "admin.sock"),
		"--events-dir", filepath.Join(dir, "events.d")}, args...)
	go func() { done <- run(ctx, args, io.Discard, logs) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("daemon: %v\n%s", err, logs)
		}
	})
	for {
		msg := readNotify(t, l)
		if strings.HasPrefix(msg, "READY=1") {
			return logs, filepath.Join(dir, "admin.sock")
		}
	}
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func get(t *testing.T, url string) (string, string) {
	t.Helper()
	var resp *http.Response
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if resp, err = http.Get(url); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %s", url, resp.Status, body)
	}
	return string(body), resp.Header.Get("Content-Type")
}

func TestHTTPListener(t *testing.T) {
	addr := freeAddr(t)
	runDaemon(t, "--http", addr)
	body, _ := get(t, "http://"+addr+"/metrics")
	for _, want := range []string{"dmsync_build_info{", "dmsync_log_stats_up 1", "dmsync_store_syncs_total", "go_goroutines"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, body)
		}
	}
	if body, _ = get(t, "http://"+addr+"/"); !strings.Contains(body, "<title>dmsync</title>") {
		t.Errorf("web view: %s", body)
	}
	if body, _ = get(t, "http://"+addr+"/api/state"); !strings.Contains(body, `"volumes": []`) {
		t.Errorf("/api/state: %s", body)
	}
	req, _ := http.NewRequest("GET", "http://"+addr+"/events", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("/events: %v %v", resp, err)
	}
	resp.Body.Close()
}

// A taken port is logged and retried; the daemon serves on.
func TestHTTPBindFailureDoesNotStopDaemon(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	logs := runDaemon(t, "--http", taken.Addr().String())
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(logs.String(), "HTTP listener not started"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no log of the failed bind:\n%s", logs)
		}
	}
	if !strings.Contains(logs.String(), "address already in use") {
		t.Errorf("the log does not say why:\n%s", logs)
	}
}

func TestVersionFlag(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"--version"}, &out, io.Discard); err != nil || !strings.HasPrefix(out.String(), "dmsyncd ") {
		t.Fatalf("--version: %q %v", out.String(), err)
	}
}

func TestStateNameAndLegHealth(t *testing.T) {
	for k, want := range map[adminpb.SendState]string{
		adminpb.SendState_SEND_STATE_SYNCED: "synced", adminpb.SendState_SEND_STATE_PEER_UNREACHABLE: "peer-unreachable",
		adminpb.SendState_SEND_STATE_UNSPECIFIED: "unknown", adminpb.SendState_SEND_STATE_PEER_FULL: "peer-full",
	} {
		if got := stateName(k); got != want {
			t.Errorf("stateName(%v) = %q, want %q", k, got, want)
		}
	}
	for c, want := range map[byte]string{dmtarget.LegAlive: "alive", dmtarget.LegWriteFailed: "write-failed", dmtarget.LegReadFailed: "read-failed", 'X': "failed", 0: "unknown"} {
		if got := legHealth(c); got != want {
			t.Errorf("legHealth(%q) = %q, want %q", c, got, want)
		}
	}
}

type fakeVerifyReq struct{}

func (fakeVerifyReq) GetVolume() string { return "vol" }

type fakeVerifyResp struct{ equal, applying bool }

func (r fakeVerifyResp) GetEqual() bool           { return r.equal }
func (r fakeVerifyResp) GetReplicaApplying() bool { return r.applying }

// A Verify answer that differs emits an event; equal ones, half-applied
// replicas and other methods do not.
func TestVerifyEvents(t *testing.T) {
	o := &ops{hub: events.NewHub(0)}
	for _, c := range []struct {
		method string
		resp   fakeVerifyResp
		want   bool
	}{
		{"/dmsync.Replication/Verify", fakeVerifyResp{}, true},
		{"/dmsync.Replication/Verify", fakeVerifyResp{equal: true}, false},
		{"/dmsync.Replication/Verify", fakeVerifyResp{applying: true}, false},
		{"/dmsync.Replication/Status", fakeVerifyResp{}, false},
	} {
		before := o.hub.Last()
		_, err := o.verifyEvents(context.Background(), fakeVerifyReq{}, &grpc.UnaryServerInfo{FullMethod: c.method},
			func(context.Context, any) (any, error) { return c.resp, nil })
		if err != nil {
			t.Fatal(err)
		}
		if got := o.hub.Last() > before; got != c.want {
			t.Errorf("%s %+v: event %v, want %v", c.method, c.resp, got, c.want)
		}
	}
	if e := o.hub.Recent(1)[0]; e.Kind != events.VerifyDiffers || e.Volume != "vol" {
		t.Fatalf("event %+v", e)
	}
}

// The daemon serves the Events stream on its admin socket.
func TestAdminEventsStream(t *testing.T) {
	_, sock := runDaemonSocket(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// READY comes before the admin socket's service has bound it.
	var st adminpb.Events_EventsClient
	for {
		c, err := admin.Dial(ctx, sock)
		if err == nil {
			defer c.Close()
			if st, err = adminpb.NewEventsClient(c.Conn()).Events(ctx, &adminpb.EventsRequest{}); err == nil {
				break
			}
		}
		if ctx.Err() != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Nothing happens on an idle node: the stream stays open until cancelled.
	recv := make(chan error, 1)
	go func() { _, err := st.Recv(); recv <- err }()
	select {
	case err := <-recv:
		t.Fatalf("stream ended on an idle node: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
}

// A panic in the operator's surface is logged and the part restarts; the
// daemon does not die.
func TestGuardRecoversPanics(t *testing.T) {
	logs := &syncBuffer{}
	o := &ops{log: slog.New(slog.NewTextHandler(logs, nil)), pause: 10 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	runs := 0
	done := make(chan struct{})
	go func() {
		o.guard(ctx, "test part", func(context.Context) {
			runs++
			if runs == 1 {
				var m map[string]int
				m["boom"] = 1 // panics
			}
			cancel()
		})
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("guard did not restart the part after its panic")
	}
	if runs != 2 || !strings.Contains(logs.String(), "test part panicked") {
		t.Fatalf("runs %d, log %s", runs, logs)
	}
}
