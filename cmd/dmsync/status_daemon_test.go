package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dmsync/dmsync/internal/admin"
	"github.com/dmsync/dmsync/internal/adminpb"
	"github.com/dmsync/dmsync/logd/logapi"
	"github.com/dmsync/dmsync/logd/logpb"
)

// serveWithHealth serves d (nil: only the log server answers, as while
// the replicator is down) and the daemon's Health with h.
func serveWithHealth(t *testing.T, d *cannedDaemon, h *logpb.HealthResponse) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "dmsync.sock")
	ln, err := admin.Listen(sock, nil)
	if err != nil {
		t.Fatal(err)
	}
	var opts []grpc.ServerOption
	if d == nil {
		// The log server's own answer to everything but Health.
		opts = append(opts, grpc.UnknownServiceHandler(func(any, grpc.ServerStream) error {
			return status.Error(codes.Unavailable, "dmsyncd's replicator is down: "+h.GetSummary())
		}))
	}
	g := grpc.NewServer(opts...)
	if d != nil {
		adminpb.RegisterVolumesServer(g, d)
		adminpb.RegisterReplicationServer(g, d)
	}
	logapi.RegisterDaemon(g, func(context.Context) (*logpb.HealthResponse, error) { return h, nil })
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	return sock
}

// TestStatusNamesDaemonFaults: what the log server knows of the daemon —
// a failed store, a replicator that is down, a part of the replicator that
// failed alone — is a problem in `dmsync status`, which still prints and
// exits 1 instead of failing.
func TestStatusNamesDaemonFaults(t *testing.T) {
	for _, tc := range []struct {
		name   string
		d      *cannedDaemon
		h      *logpb.HealthResponse
		want   []string // problem "name:state" pairs
		inText string
		vols   int
	}{
		{"healthy", healthyDaemon(), &logpb.HealthResponse{Summary: "serving 2 volumes", ReplicatorUp: true, Volumes: 2},
			nil, "", 1},
		{"store failed", healthyDaemon(), &logpb.HealthResponse{Summary: "state store failed: no space left on device; serving from memory", StoreFailed: true, ReplicatorUp: true},
			[]string{"store:store-failed"}, "state store failed: no space left on device", 1},
		{"listen port taken", healthyDaemon(), &logpb.HealthResponse{Summary: "serving; receiver: listen failed", ReplicatorUp: true,
			Problems: []*logpb.Problem{{Component: "receiver", Message: "listen for peers on :7420: address already in use (free the port or change --listen)"}}},
			[]string{"receiver:failed"}, "address already in use", 1},
		{"replicator down", nil, &logpb.HealthResponse{Summary: "replicator down: panic: boom, restarting in 4s", StoreFailed: false, ReplicatorUp: false,
			Problems: []*logpb.Problem{{Component: "replicator", Message: "replicator down: panic: boom, restarting in 4s"}}},
			[]string{"replicator:replicator-down"}, "replicator down: panic: boom", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sock := serveWithHealth(t, tc.d, tc.h)
			out, stderr, code := runSock(sock, "status", "--json")
			var doc statusDoc
			if err := json.Unmarshal([]byte(out), &doc); err != nil {
				t.Fatalf("status --json: exit %d, %q: not JSON: %v\n%s", code, stderr, err, out)
			}
			var got []string
			for _, p := range doc.Problems {
				if p.Kind == "daemon" {
					got = append(got, p.Name+":"+p.State)
				}
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("daemon problems %v, want %v", got, tc.want)
			}
			wantCode := exitOK
			if len(tc.want) > 0 {
				wantCode = exitFailure
			}
			if code != wantCode || doc.OK != (len(tc.want) == 0) {
				t.Errorf("exit %d ok=%v, want exit %d", code, doc.OK, wantCode)
			}
			if doc.Daemon == nil || doc.Daemon.Summary != tc.h.GetSummary() || len(doc.Volumes) != tc.vols {
				t.Errorf("daemon %+v, %d volumes (want %d)", doc.Daemon, len(doc.Volumes), tc.vols)
			}
			if tc.inText != "" {
				text, _, _ := runSock(sock, "status", "-x")
				if !strings.Contains(text, tc.inText) {
					t.Errorf("status -x does not name the fault %q:\n%s", tc.inText, text)
				}
			}
		})
	}
}
