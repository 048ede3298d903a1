package metrics

import (
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dmsync/dmsync/internal/opstate"
	"github.com/dmsync/dmsync/logd"
)

func fakeSnapshot() opstate.Snapshot {
	var lat logd.RequestStats
	lat.Type, lat.Name, lat.Count, lat.Sum = logd.ReqMarkRegion, "MARK_REGION", 3, 30*time.Microsecond
	lat.Buckets[3], lat.Buckets[4] = 1, 2 // <8µs, <16µs
	return opstate.Snapshot{
		Version: "1.0.0", Node: "abc",
		Volumes: []opstate.Volume{{
			Name: "vol", Peer: "peer1", PeerUp: true, Size: 1 << 30, PendingBytes: 4 << 20, PendingRegions: 8,
			BytesRead: 100, BytesSent: 50, Rate: 10,
			LastAck: time.Unix(1700000000, 0), LastConsistent: time.Unix(1699999990, 0),
			Legs: []opstate.Leg{{Index: 0, Device: "8:16", Health: "alive", OK: true}, {Index: 1, Device: "8:32", Health: "write-failed"}},
		}, {
			Name: "local", Size: 1 << 20, // not replicated: no replication series
		}},
		Receives: []opstate.Receive{{Volume: "r", From: "peer2", Applying: true}},
		Log:      &logd.Stats{Requests: []logd.RequestStats{lat}, Syncs: 7, SyncTime: 2 * time.Second},
	}
}

func TestCollector(t *testing.T) {
	snap := fakeSnapshot()
	c := NewCollector(opstate.SourceFunc(func(context.Context) opstate.Snapshot { return snap }), 0)
	want := `
# HELP dmsync_leg_up 1 while the mirror leg is healthy, else 0 (the health label says how it failed).
# TYPE dmsync_leg_up gauge
dmsync_leg_up{device="8:16",health="alive",leg="0",volume="vol"} 1
dmsync_leg_up{device="8:32",health="write-failed",leg="1",volume="vol"} 0
# HELP dmsync_pending_bytes Bytes of the volume written and not yet durably acknowledged by the peer.
# TYPE dmsync_pending_bytes gauge
dmsync_pending_bytes{volume="vol"} 4.194304e+06
# HELP dmsync_peer_up 1 while the volume's sender is connected to its peer, else 0.
# TYPE dmsync_peer_up gauge
dmsync_peer_up{peer="peer1",volume="vol"} 1
# HELP dmsync_last_ack_timestamp_seconds When the peer last durably acknowledged a batch (Unix time; absent before the first).
# TYPE dmsync_last_ack_timestamp_seconds gauge
dmsync_last_ack_timestamp_seconds{volume="vol"} 1.7e+09
# HELP dmsync_last_consistent_timestamp_seconds The recovery point: the last moment the peer's replica equalled the volume (Unix time; absent before the first).
# TYPE dmsync_last_consistent_timestamp_seconds gauge
dmsync_last_consistent_timestamp_seconds{volume="vol"} 1.69999999e+09
# HELP dmsync_store_syncs_total Synced commits of the dirty log's state store.
# TYPE dmsync_store_syncs_total counter
dmsync_store_syncs_total 7
# HELP dmsync_read_bytes_total Bytes read from the volume to replicate it (resets when the sender reconnects).
# TYPE dmsync_read_bytes_total counter
dmsync_read_bytes_total{volume="vol"} 100
# HELP dmsync_sent_bytes_total Chunk bytes sent to the peer (resets when the sender reconnects).
# TYPE dmsync_sent_bytes_total counter
dmsync_sent_bytes_total{volume="vol"} 50
`
	names := []string{"dmsync_leg_up", "dmsync_pending_bytes", "dmsync_peer_up", "dmsync_last_ack_timestamp_seconds",
		"dmsync_last_consistent_timestamp_seconds", "dmsync_store_syncs_total", "dmsync_read_bytes_total", "dmsync_sent_bytes_total"}
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(c, "dmsync_pending_regions"); n != 1 {
		t.Fatalf("%d pending_regions series, want 1 (only the replicated volume)", n)
	}
	if err := testutil.CollectAndCompare(c, strings.NewReader(`
# HELP dmsync_store_failed 1 once the dirty log's state store failed (the log server stopped), else 0.
# TYPE dmsync_store_failed gauge
dmsync_store_failed 0
`), "dmsync_store_failed"); err != nil {
		t.Fatal(err)
	}
}

// The latency histogram is cumulative over 2^i µs bounds.
func TestCollectorLatencyHistogram(t *testing.T) {
	snap := fakeSnapshot()
	h := Handler(opstate.SourceFunc(func(context.Context) opstate.Snapshot { return snap }))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, line := range []string{
		`dmsync_log_request_duration_seconds_bucket{type="MARK_REGION",le="4e-06"} 0`,
		`dmsync_log_request_duration_seconds_bucket{type="MARK_REGION",le="8e-06"} 1`,
		`dmsync_log_request_duration_seconds_bucket{type="MARK_REGION",le="1.6e-05"} 3`,
		`dmsync_log_request_duration_seconds_bucket{type="MARK_REGION",le="+Inf"} 3`,
		`dmsync_log_request_duration_seconds_count{type="MARK_REGION"} 3`,
		`dmsync_log_request_duration_seconds_sum{type="MARK_REGION"} 3e-05`,
		`dmsync_build_info{node="abc",version="1.0.0"} 1`,
		`go_goroutines `,
	} {
		if !strings.Contains(string(body), line) {
			t.Errorf("/metrics lacks %q", line)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", body)
	}
}

// Without the log server's counters, the log metrics are absent and
// dmsync_log_stats_up says so.
func TestCollectorNoLogStats(t *testing.T) {
	snap := fakeSnapshot()
	snap.Log = nil
	c := NewCollector(opstate.SourceFunc(func(context.Context) opstate.Snapshot { return snap }), 0)
	if n := testutil.CollectAndCount(c, "dmsync_store_syncs_total", "dmsync_log_request_duration_seconds"); n != 0 {
		t.Fatalf("%d log series without log stats", n)
	}
	if v := testutil.ToFloat64(onlyMetric(c, "dmsync_log_stats_up")); v != 0 {
		t.Fatalf("log_stats_up %v", v)
	}
}

func onlyMetric(c *Collector, name string) *filtered { return &filtered{c, name} }
