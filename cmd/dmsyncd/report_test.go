package main

import (
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/dmsync/dmsync/logd/logapi"
	"github.com/dmsync/dmsync/logd/logpb"
)

// TestReportsArriveInOrder: the replicator's problem reports reach the
// log server in the order the problems changed, even when one send is
// slow. (Seen in CI: the bound report, taken before the receiver failed,
// arrived after the receiver's report and wiped the taken listen port
// from health for good.)
func TestReportsArriveInOrder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "logd.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Skipf("unix sockets: %v", err)
	}
	var mu sync.Mutex
	var last []*logpb.Problem
	calls := 0
	g := grpc.NewServer()
	logapi.Register(g, logapi.NewServer(logapi.Options{
		Health: func() *logpb.HealthResponse { return &logpb.HealthResponse{} },
		Report: func(r *logpb.ReportRequest) {
			mu.Lock()
			calls++
			first := calls == 1
			mu.Unlock()
			if first {
				time.Sleep(300 * time.Millisecond) // the first send is slow
			}
			mu.Lock()
			last = r.GetProblems()
			mu.Unlock()
		},
	}))
	go g.Serve(ln)
	defer g.Stop()
	lc, err := logapi.Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	r := &replicator{log: slog.New(slog.DiscardHandler), lc: lc, problems: map[string]string{}, reportDue: make(chan struct{}, 1)}
	ctx := t.Context()
	go r.reportLoop(ctx)

	// Two services change problems at about the same time.
	go r.problem("replication", "off")
	time.Sleep(50 * time.Millisecond) // the first report is on its way
	r.problem("receiver", "address already in use")
	deadline := time.Now().Add(5 * time.Second)
	for {
		time.Sleep(50 * time.Millisecond)
		mu.Lock()
		got := last
		mu.Unlock()
		if len(got) == 2 && got[0].GetComponent() == "receiver" && got[1].GetComponent() == "replication" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the log server's last report: %v; want both problems", got)
		}
	}
	// And the list stays: no older report comes in after it.
	time.Sleep(500 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if len(last) != 2 {
		t.Fatalf("an older report replaced the newest: %v", last)
	}
}
