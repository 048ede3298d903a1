package logd

import (
	"context"
	"testing"
	"time"
)

// nopStore keeps nothing: the benchmark measures the server's CPU path.
type nopStore struct{}

func (nopStore) Load() ([]VolumeSnapshot, error)    { return nil, nil }
func (nopStore) Commit(c []Change, sync bool) error { return nil }

// nopConn drops replies.
type nopConn struct{}

func (nopConn) Receive(ctx context.Context) ([][]byte, error) { <-ctx.Done(); return nil, ctx.Err() }
func (nopConn) Send([]byte) error                             { return nil }
func (nopConn) Close() error                                  { return nil }

// BenchmarkServerInSync is the server's whole CPU path for the hottest
// request, one IN_SYNC per datagram: decode, step, ready, encode, send
// (dropped), and the latency histogram. Compare with
// BenchmarkStatsObserve in the same run: the histogram's share of a
// request.
func BenchmarkServerInSync(b *testing.B) {
	s, err := NewServer(nopStore{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	enc := func(t RequestType, data []byte) [][]byte {
		m := mkMsg(t, "A", 1, data)
		out, err := AppendMessage(nil, &m, data)
		if err != nil {
			b.Fatal(err)
		}
		return [][]byte{out}
	}
	s.handle(nopConn{}, enc(ReqCtr, []byte("1048576 core 128 nosync")))
	in := enc(ReqInSync, AppendU64(nil, 77))
	b.ReportAllocs()
	for b.Loop() {
		s.handle(nopConn{}, in)
	}
	if st := s.Stats(); len(st.Requests) != 2 {
		b.Fatalf("stats %+v", st)
	}
}

// BenchmarkStatsObserve is what the histogram adds to each reply.
func BenchmarkStatsObserve(b *testing.B) {
	var st serverStats
	b.ReportAllocs()
	for b.Loop() {
		st.observe(ReqInSync, 37*time.Microsecond)
	}
}
