package logd

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// NumLatencyBuckets is the number of buckets of a request latency
// histogram: bucket i < NumLatencyBuckets-1 counts requests answered in
// less than LatencyBucketBound(i) (and at least the previous bound); the
// last bucket counts the rest.
const NumLatencyBuckets = 24

// LatencyBucketBound is the exclusive upper bound of bucket i: 2^i µs, from
// 1 µs to about 4.2 s. The last bucket has no bound (it returns 0).
func LatencyBucketBound(i int) time.Duration {
	if i < 0 || i >= NumLatencyBuckets-1 {
		return 0
	}
	return time.Microsecond << i
}

// latencyBucket is the bucket of a latency of ns nanoseconds.
func latencyBucket(ns uint64) int {
	return min(bits.Len64(ns/1000), NumLatencyBuckets-1)
}

// requestStats counts one request type's answers and their latency.
type requestStats struct {
	count   atomic.Uint64
	sumNs   atomic.Uint64
	buckets [NumLatencyBuckets]atomic.Uint64
}

// serverStats is what the server counts for Stats: only atomics, written on
// the request path without allocating and read without the server's lock,
// so a scrape never waits for the kernel's I/O nor the other way round.
type serverStats struct {
	req      [ReqIsRemoteRecovering + 1]requestStats // index 0: unknown types
	syncs    atomic.Uint64
	syncNs   atomic.Uint64
	storeErr atomic.Pointer[string]
}

// observe records a request answered d after it was received.
func (st *serverStats) observe(t RequestType, d time.Duration) {
	if int(t) >= len(st.req) {
		t = 0
	}
	ns := uint64(max(d, 0))
	r := &st.req[t]
	r.count.Add(1)
	r.sumNs.Add(ns)
	r.buckets[latencyBucket(ns)].Add(1)
}

// synced records a synced commit of the store that took d.
func (st *serverStats) synced(d time.Duration) {
	st.syncs.Add(1)
	st.syncNs.Add(uint64(max(d, 0)))
}

// failed records the store's failure (once; the server stops after it).
func (st *serverStats) failed(err error) {
	msg := err.Error()
	st.storeErr.CompareAndSwap(nil, &msg)
}

// Stats is a snapshot of the log server's counters since it started: what
// the daemon exports as metrics. It is plain data (JSON-encodable) so that
// a log server in its own process can hand it over its local API.
type Stats struct {
	// Requests has one entry per request type answered at least once, in
	// type order.
	Requests []RequestStats `json:"requests"`
	// Syncs counts synced commits of the state store; SyncTime is their
	// total duration.
	Syncs    uint64        `json:"syncs"`
	SyncTime time.Duration `json:"sync_time_ns"`
	// StoreError is the state store's failure; empty while it works. The
	// log server then serves the kernel from memory (see storefault.go).
	StoreError string `json:"store_error,omitempty"`
}

// RequestStats counts the answers to one kernel request type.
type RequestStats struct {
	Type RequestType `json:"type"`
	Name string      `json:"name"`
	// Count is the number of requests answered; Sum is their total latency,
	// from the server's receipt of the datagram to the reply's send.
	Count uint64        `json:"count"`
	Sum   time.Duration `json:"sum_ns"`
	// Buckets[i] counts the answers in bucket i (see LatencyBucketBound);
	// not cumulative.
	Buckets [NumLatencyBuckets]uint64 `json:"buckets"`
}

// Stats returns the server's counters. It takes no lock: the counts may be
// a few requests apart from each other, never torn.
func (s *Server) Stats() Stats {
	st := &s.stats
	var out Stats
	for t := range st.req {
		r := &st.req[t]
		n := r.count.Load()
		if n == 0 {
			continue
		}
		rs := RequestStats{Type: RequestType(t), Name: RequestType(t).String(), Count: n, Sum: time.Duration(r.sumNs.Load())}
		for i := range r.buckets {
			rs.Buckets[i] = r.buckets[i].Load()
		}
		out.Requests = append(out.Requests, rs)
	}
	out.Syncs = st.syncs.Load()
	out.SyncTime = time.Duration(st.syncNs.Load())
	if p := st.storeErr.Load(); p != nil {
		out.StoreError = *p
	}
	return out
}
