package main

import (
	"log/slog"
	"testing"

	"github.com/dmsync/dmsync/logd/logpb"
)

// TestHealthKeepsEarlyReport: a new replicator can report its problems
// before the supervisor records it as started (seen under load: the taken
// listen port never showed in health); they must survive that, and go
// when the replicator exits.
func TestHealthKeepsEarlyReport(t *testing.T) {
	h := newHealth(slog.New(slog.DiscardHandler))
	h.report(&logpb.ReportRequest{Problems: []*logpb.Problem{{Component: "receiver", Message: "address already in use"}}})
	h.replicatorUp(42)
	if ps := h.problemsLocked(); len(ps) != 1 || ps[0].GetMessage() != "address already in use" {
		t.Fatalf("problems after the supervisor saw the start: %v", ps)
	}
	h.replicatorDown("down: exit status 1, restarting in 1s")
	for _, p := range h.problemsLocked() {
		if p.GetComponent() == "receiver" {
			t.Fatalf("the exited replicator's problem stayed: %v", p)
		}
	}
}
