package logd

import (
	"testing"
	"time"
)

func TestLatencyBucket(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want int
	}{
		{0, 0}, {999 * time.Nanosecond, 0}, {time.Microsecond, 1}, {1999 * time.Nanosecond, 1},
		{2 * time.Microsecond, 2}, {3 * time.Microsecond, 2}, {4 * time.Microsecond, 3},
		{LatencyBucketBound(NumLatencyBuckets-2) - 1, NumLatencyBuckets - 2},
		{LatencyBucketBound(NumLatencyBuckets - 2), NumLatencyBuckets - 1},
		{time.Hour, NumLatencyBuckets - 1},
	} {
		got := latencyBucket(uint64(c.d))
		if got != c.want {
			t.Errorf("latencyBucket(%v) = %d, want %d", c.d, got, c.want)
		}
		// The bucket's bounds hold the latency.
		if hi := LatencyBucketBound(got); hi != 0 && c.d >= hi {
			t.Errorf("%v in bucket %d, whose bound is %v", c.d, got, hi)
		}
		if got > 0 && c.d < LatencyBucketBound(got-1) {
			t.Errorf("%v in bucket %d, below the previous bound %v", c.d, got, LatencyBucketBound(got-1))
		}
	}
	if LatencyBucketBound(NumLatencyBuckets-1) != 0 || LatencyBucketBound(-1) != 0 {
		t.Error("the last bucket and bad indexes must have no bound")
	}
}

// The request path must not allocate for its counters.
func TestStatsObserveDoesNotAllocate(t *testing.T) {
	var st serverStats
	if n := testing.AllocsPerRun(1000, func() {
		st.observe(ReqMarkRegion, 37*time.Microsecond)
		st.observe(RequestType(200), time.Millisecond) // unknown: slot 0
		st.synced(time.Millisecond)
	}); n != 0 {
		t.Fatalf("observe allocates %v times per call", n)
	}
	if st.req[ReqMarkRegion].buckets[6].Load() != 1001 || st.req[0].count.Load() != 1001 {
		t.Fatalf("counts: mark bucket 6 = %d, unknown = %d", st.req[ReqMarkRegion].buckets[6].Load(), st.req[0].count.Load())
	}
}
