package logd

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// shellFiles are the files of package logd allowed to do I/O. Everything
// else is the pure core and must not import what a clock, a socket or a
// disk needs.
var shellFiles = map[string]bool{
	"server.go": true, "store.go": true, "feed.go": true,
	"connector_linux.go": true, "connector_others.go": true, "stats.go": true,
	"storefault.go": true, "failflag.go": true, "fdatasync_linux.go": true, "fdatasync_others.go": true,
}

var forbiddenImports = []string{
	"os", "time", "net", "syscall", "sync", "log", "log/slog", "io/fs",
	"golang.org/x/sys/", "github.com/cockroachdb/pebble", "github.com/dmsync/dmsync/pebble",
}

func TestCoreForbiddenImports(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	core := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") || shellFiles[f] {
			continue
		}
		core++
		af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range af.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			for _, bad := range forbiddenImports {
				if p == bad || strings.HasPrefix(p, strings.TrimSuffix(bad, "/")+"/") {
					t.Errorf("%s imports %q: the core must stay pure (move I/O to a shell file)", f, p)
				}
			}
		}
	}
	if core < 5 {
		t.Fatalf("only %d core files found: is the test running in the package directory?", core)
	}
}

func mkMsg(t RequestType, uuid string, luid uint64, data []byte) Message {
	var m Message
	m.Req = Request{Luid: luid, Version: 3, RequestType: uint32(t), Data: data}
	m.Req.SetUUID(uuid)
	return m
}

func TestInSyncNoAlloc(t *testing.T) {
	c := NewCore()
	ctr := mkMsg(ReqCtr, "A", 1, []byte("1048576 core 128 nosync"))
	c.Step(&ctr)
	c.Advance(c.Ready())
	in := mkMsg(ReqInSync, "A", 1, AppendU64(nil, 77))
	allocs := testing.AllocsPerRun(1000, func() {
		c.Step(&in)
		rd := c.Ready()
		if len(rd.Replies) != 1 || rd.Replies[0].Data()[0] != 1 {
			t.Fatal("bad reply")
		}
		c.Advance(rd)
	})
	if allocs != 0 {
		t.Fatalf("IN_SYNC allocates %.1f times per request", allocs)
	}
}

func TestParseCtrArgs(t *testing.T) {
	a, err := ParseCtrArgs([]byte("1048577 core 1024 sync\x00"))
	if err != nil || a.Regions() != 1025 || a.Sync != SyncForce || a.Table != "core 1024 sync" {
		t.Fatalf("%+v %v", a, err)
	}
	for _, bad := range []string{"", "0 core 8", "x core 8", "8 core", "8 disk", "8 disk /dev/x", "8 core 12", "8 core 8 sync nosync",
		"8 core -8", strconv.FormatUint(uint64(MaxRegions)*8+1, 10) + " core 8"} {
		if _, err := ParseCtrArgs([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// FuzzCore steps random request sequences (with crashes) and checks that
// nothing panics, that bad requests change nothing and that the invariants
// hold: marked and in-sync counts match their bitmaps, every pending
// generation is at most NextGen, every acknowledged FLUSH survives a crash.
func FuzzCore(f *testing.F) {
	f.Add([]byte{1, 0, 10, 3, 9, 0, 11, 3, 200, 8, 3})
	f.Add([]byte{0, 5, 10, 1, 10, 2, 9, 0, 250, 5, 0, 13, 1})
	f.Fuzz(func(t *testing.T, prog []byte) {
		c := NewCore()
		st := newMemStore()
		uuids := []string{"A", "B"}
		for _, u := range uuids[:1] {
			m := mkMsg(ReqCtr, u, 1, []byte("1000 core 8"))
			c.Step(&m)
		}
		var acked map[string]map[uint64]uint64 // pending after the last acked FLUSH
		seenGen := map[[2]uint64]bool{}        // (region, gen) handed out, ever
		for i := 0; i+2 < len(prog); i += 3 {
			op, a, b := prog[i], prog[i+1], prog[i+2]
			uuid := uuids[a&1]
			if op >= 200 { // crash and restart
				if c.HasReady() {
					rd := c.Ready()
					c.Advance(rd) // lost: not applied
				}
				c = NewCore()
				if err := c.Restore(st.crash()); err != nil {
					t.Fatal(err)
				}
				for u, p := range acked {
					got, _ := c.Pending(u)
					for r, g := range p {
						found := false
						for _, x := range got {
							found = found || x.Region == r
						}
						if !found {
							t.Fatalf("acked mark of %s region %d gen %d lost in crash", u, r, g)
						}
					}
				}
				continue
			}
			var data []byte
			switch RequestType(op % 18) {
			case ReqCtr:
				data = []byte(strconv.Itoa(int(b)*8+1) + " core " + strconv.Itoa(8<<(a%3)))
			case ReqSetRegionSync:
				data = AppendPair(nil, int64(b), uint64(a&2)/2)
			default:
				data = AppendRegions(nil, uint64(b))
				if a&4 != 0 {
					data = AppendRegions(data, uint64(b)+1)
				}
				if a&8 != 0 {
					data = data[:len(data)-1]
				}
			}
			m := mkMsg(RequestType(op%18), uuid, uint64(a>>4), data)
			before, _ := c.Snapshot(uuid)
			c.Step(&m)
			if op&0x40 != 0 {
				continue // leave it for a later Ready: group commit
			}
			rd := c.Ready()
			st.apply(rd)
			for i := range rd.Replies {
				r := &rd.Replies[i]
				if r.Msg.Req.Error != 0 && r.Msg.Req.Type() != ReqCtr && len(rd.Replies) == 1 {
					after, _ := c.Snapshot(uuid)
					if !reflect.DeepEqual(before, after) {
						t.Fatalf("failed %s changed state", r.Msg.Req.Type())
					}
				}
				if r.Msg.Req.Type() == ReqFlush && r.Msg.Req.Error == 0 && rd.MustSync {
					acked = map[string]map[uint64]uint64{}
					for _, u := range c.Volumes() {
						p, _ := c.Pending(u)
						acked[u] = map[uint64]uint64{}
						for _, x := range p {
							acked[u][x.Region] = x.Gen
						}
					}
				}
			}
			c.Advance(rd)
			for _, v := range c.vols {
				checkInvariants(t, v)
				if v.uuid == uuid && RequestType(op%18) == ReqMarkRegion {
					for r, g := range v.pending {
						if v.marked.get(r) && g == v.meta.NextGen {
							k := [2]uint64{r, g}
							if seenGen[k] && (before.Pending == nil || before.Pending[r] != g) {
								t.Fatalf("generation %d handed out twice for region %d", g, r)
							}
							seenGen[k] = true
						}
					}
				}
			}
		}
	})
}

func checkInvariants(t *testing.T, v *volume) {
	t.Helper()
	for _, b := range []*bitset{&v.inSync, &v.marked} {
		n := uint64(0)
		for r := b.nextSet(0); r < b.n; r = b.nextSet(r + 1) {
			n++
		}
		if n != b.ones {
			t.Fatalf("%s: bitmap count %d, cached %d", v.uuid, n, b.ones)
		}
	}
	if v.syncHint > v.inSync.nextClear(0) {
		t.Fatalf("%s: sync hint %d above first out-of-sync region %d", v.uuid, v.syncHint, v.inSync.nextClear(0))
	}
	for r, g := range v.pending {
		if r >= v.meta.Regions || g == 0 || g > v.meta.NextGen {
			t.Fatalf("%s: bad pending %d gen %d (next %d)", v.uuid, r, g, v.meta.NextGen)
		}
	}
}
