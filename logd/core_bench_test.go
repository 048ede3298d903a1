package logd

import "testing"

// BenchmarkCoreInSync is the hottest request: Step + Ready + Advance for
// one IN_SYNC, no I/O. Compare with BenchmarkCoreMarkFlush in the same run.
func BenchmarkCoreInSync(b *testing.B) {
	c := NewCore()
	ctr := mkMsg(ReqCtr, "A", 1, []byte("1048576 core 128 nosync"))
	c.Step(&ctr)
	c.Advance(c.Ready())
	in := mkMsg(ReqInSync, "A", 1, AppendU64(nil, 77))
	b.ReportAllocs()
	for b.Loop() {
		c.Step(&in)
		c.Advance(c.Ready())
	}
}

// BenchmarkCoreMarkFlush: MARK of one region then FLUSH, each in its own
// Ready, no I/O (the store's cost is in BenchmarkMarkFlush).
func BenchmarkCoreMarkFlush(b *testing.B) {
	c := NewCore()
	ctr := mkMsg(ReqCtr, "A", 1, []byte("1048576 core 128 nosync"))
	c.Step(&ctr)
	c.Advance(c.Ready())
	mark := mkMsg(ReqMarkRegion, "A", 1, AppendU64(nil, 0))
	flush := mkMsg(ReqFlush, "A", 1, nil)
	b.ReportAllocs()
	i := uint64(0)
	for b.Loop() {
		i = (i + 7919) % 8192
		mark.Req.Data = AppendU64(mark.Req.Data[:0], i)
		c.Step(&mark)
		c.Advance(c.Ready())
		c.Step(&flush)
		c.Advance(c.Ready())
	}
}
