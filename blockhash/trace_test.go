package blockhash

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"
)

// traceEnv is the state of a rehash trace: the device's bytes, the stored
// chunk list and the changes reported since the last rehash.
type traceEnv struct {
	c       *Chunker
	data    []byte
	stored  []Chunk
	changes []Range
}

// TestRehashTraces runs testdata/rehash/*.txt. Commands:
//
//	volume size=N seed=S [params=min/avg/max]   new random volume, fully chunked
//	write off=N len=N [seed=S]                   random bytes, reported as changed
//	zero off=N len=N                             zeros, reported as changed
//	report off=N len=N                           reported as changed, bytes unchanged
//	resize size=N                                the device shrinks or grows
//	rehash [fail-at=N]                           Rehash (reads past offset N fail)
//	chunks                                       the stored chunk list
//
// Every successful rehash is also checked against a full re-chunk.
func TestRehashTraces(t *testing.T) {
	datadriven.Walk(t, "testdata/rehash", func(t *testing.T, path string) {
		var e traceEnv
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			return e.run(t, d)
		})
	})
}

func (e *traceEnv) run(t *testing.T, d *datadriven.TestData) string {
	var off, n, seed uint64
	switch d.Cmd {
	case "volume":
		d.ScanArgs(t, "size", &n)
		d.ScanArgs(t, "seed", &seed)
		p := testParams
		if d.HasArg("params") {
			var s string
			d.ScanArgs(t, "params", &s)
			if _, err := fmt.Sscanf(s, "%d/%d/%d", &p.Min, &p.Avg, &p.Max); err != nil {
				t.Fatal(err)
			}
		}
		e.c = mustChunker(t, p)
		e.data = randomBytes(seed, int(n))
		e.stored = chunkAll(t, e.c, e.data)
		e.changes = nil
		return fmt.Sprintf("%d chunks", len(e.stored))
	case "write", "zero", "report":
		d.ScanArgs(t, "off", &off)
		d.ScanArgs(t, "len", &n)
		seed = off
		d.MaybeScanArgs(t, "seed", &seed)
		end := min(off+n, uint64(len(e.data)))
		switch d.Cmd {
		case "write":
			copy(e.data[off:end], randomBytes(seed, int(end-off)))
		case "zero":
			clear(e.data[off:end])
		}
		e.changes = append(e.changes, Range{off, n})
		return ""
	case "resize":
		d.ScanArgs(t, "size", &n)
		if n < uint64(len(e.data)) {
			e.data = e.data[:n]
		} else {
			e.data = append(e.data, make([]byte, n-uint64(len(e.data)))...)
		}
		return ""
	case "rehash":
		var r interface {
			ReadAt([]byte, int64) (int, error)
		} = bytes.NewReader(e.data)
		if d.HasArg("fail-at") {
			d.ScanArgs(t, "fail-at", &off)
			r = failingReader{bytes.NewReader(e.data), int64(off)}
		}
		list, diff, err := e.c.Rehash(context.Background(), "vol", r, uint64(len(e.data)), e.stored, e.changes)
		if err != nil {
			return "error: " + err.Error()
		}
		var b strings.Builder
		for _, s := range diff.Spans {
			fmt.Fprintf(&b, "span [%d, %d)\n", s.Off, s.End())
		}
		fmt.Fprintf(&b, "removed %d, added %d, read %d bytes\n", len(diff.Removed), len(diff.Added), diff.BytesRead)
		if full := chunkAll(t, e.c, e.data); !equalChunks(list, full) {
			b.WriteString("DIFFERS FROM A FULL RE-CHUNK\n")
		}
		e.stored, e.changes = list, nil
		return b.String()
	case "chunks":
		var b strings.Builder
		for _, c := range e.stored {
			fmt.Fprintf(&b, "%d+%d\n", c.Offset, c.Length)
		}
		return b.String()
	}
	t.Fatalf("unknown command %q", d.Cmd)
	return ""
}
