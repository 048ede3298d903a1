package grpctransport

import (
	"sync"
	"testing"

	"github.com/dmsync/dmsync/rpc"
)

// markingReader simulates a kernel write landing in a region while the
// sender reads it: right after the first read touching the region, the
// source changes there and the region is MARKed (its generation bumps).
type markingReader struct {
	s      *senderNode
	region uint64
	once   sync.Once
}

func (m *markingReader) ReadAt(p []byte, off int64) (int, error) {
	n, err := m.s.src.ReadAt(p, off)
	rs := m.region * m.s.regionSize
	if uint64(off) < rs+m.s.regionSize && rs < uint64(off)+uint64(len(p)) {
		m.once.Do(func() {
			if _, err := m.s.src.WriteAt([]byte("written during the read"), int64(rs+100)); err != nil {
				panic(err)
			}
			m.s.log.Write(testVol, m.region)
		})
	}
	return n, err
}

func TestWriteDuringReadGoesAgain(t *testing.T) {
	const size = 2 << 20
	s := newSenderNode(t, size, 128<<10, 16<<10, 21)
	r := newReceiverNode(t, size, s.id.ID)
	r.start()
	mr := &markingReader{s: s, region: 5}
	s.source = mr
	snd := s.sender(s.dial(r, DialOptions{}), r.id.ID)
	st, err := snd.RunOnce(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if st.Requeued != 1 {
		t.Fatalf("requeued %d regions, want 1", st.Requeued)
	}
	if n := s.log.ReplicatedCount(testVol, 5); n != 1 {
		t.Fatalf("region 5 replicated %d times", n)
	}
	equalFiles(t, s.path, r.path)
	allReplicated(t, s)
}

func TestBusyRegionWaits(t *testing.T) {
	const size = 1 << 20
	s := newSenderNode(t, size, 128<<10, 16<<10, 22)
	r := newReceiverNode(t, size, s.id.ID)
	r.start()
	checkReplicatedEarly(t, s, r)
	snd := s.sender(s.dial(r, DialOptions{}), r.id.ID)
	ctx := ctxT(t)
	if _, err := snd.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	s.log.Mark(testVol, 3) // a write in flight: not quiet
	st, err := snd.RunOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.SkippedBusy == 0 {
		t.Fatal("busy region was not skipped")
	}
	if p, _ := s.log.Pending(testVol); len(p) != 1 || p[0].Region != 3 {
		t.Fatalf("pending %v, want region 3 only", p)
	}
	s.randomWrites(0)
	if _, err := s.src.WriteAt([]byte("late"), 3*128<<10+7); err != nil {
		t.Fatal(err)
	}
	s.log.Clear(testVol, 3)
	if _, err := snd.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	equalFiles(t, s.path, r.path)
	allReplicated(t, s)
}

func TestSenderStatus(t *testing.T) {
	const size = 1 << 20
	s := newSenderNode(t, size, 128<<10, 16<<10, 23)
	r := newReceiverNode(t, size, s.id.ID)
	r.start()
	snd := s.sender(s.dial(r, DialOptions{}), r.id.ID)
	st, err := snd.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.PendingRegions != 8 || st.BytesToGo != size || !st.LastAck.IsZero() {
		t.Fatalf("before: %+v", st)
	}
	if _, err := snd.RunOnce(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	s.log.Write(testVol, 2)
	st, err = snd.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.PendingRegions != 1 || st.BytesToGo != 128<<10 || st.LastAck.IsZero() || st.Rate <= 0 || st.ETA <= 0 || st.LastRoot == (rpc.ID{}) {
		t.Fatalf("after: %+v", st)
	}
}
