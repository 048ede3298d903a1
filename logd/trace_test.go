package logd

import (
	"encoding/hex"
	"fmt"
	"math/bits"
	"strconv"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"
)

// traceEnv drives a Core through the commands of testdata/*.txt. Every
// request command steps the core and handles the Ready at once, unless
// it appears inside a "batch" block, which steps all lines and handles one
// Ready (group commit).
type traceEnv struct {
	core  *Core
	store *memStore
	seq   uint32
}

func newTraceEnv() *traceEnv { return &traceEnv{core: NewCore(), store: newMemStore()} }

var traceTypes = map[string]RequestType{
	"ctr": ReqCtr, "dtr": ReqDtr, "presuspend": ReqPresuspend, "postsuspend": ReqPostsuspend,
	"resume": ReqResume, "region-size": ReqGetRegionSize, "is-clean": ReqIsClean, "in-sync": ReqInSync,
	"flush": ReqFlush, "mark": ReqMarkRegion, "clear": ReqClearRegion, "resync-work": ReqGetResyncWork,
	"set-sync": ReqSetRegionSync, "sync-count": ReqGetSyncCount, "status-info": ReqStatusInfo,
	"status-table": ReqStatusTable, "remote-recovering": ReqIsRemoteRecovering,
}

// parseReq builds a request from "cmd key=val ..." words. Keys: uuid (default
// A), luid (default 1), r (region list, comma separated), in (0/1), args
// (CTR text, underscores for spaces is not needed: the rest of the line after
// args= is taken verbatim), type (raw numeric type), hex (raw data).
func (e *traceEnv) parseReq(line string) (Message, error) {
	var m Message
	cmd, rest, _ := strings.Cut(strings.TrimSpace(line), " ")
	uuid, luid := "A", uint64(1)
	var data []byte
	nul := false
	t, ok := traceTypes[cmd]
	if !ok && cmd != "raw" {
		return m, fmt.Errorf("unknown command %q", cmd)
	}
	if i := strings.Index(rest, "args="); i >= 0 {
		data = []byte(rest[i+len("args="):])
		rest = rest[:i]
	}
	for _, kv := range strings.Fields(rest) {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "uuid":
			uuid = v
		case "luid":
			luid, _ = strconv.ParseUint(v, 10, 64)
		case "r":
			for _, s := range strings.Split(v, ",") {
				n, err := strconv.ParseUint(s, 10, 64)
				if err != nil {
					return m, err
				}
				data = AppendU64(data, n)
			}
		case "in":
			n, _ := strconv.ParseInt(v, 10, 64)
			data = AppendU64(data, uint64(n))
		case "type":
			n, _ := strconv.ParseUint(v, 10, 32)
			t = RequestType(n)
		case "nul": // the kernel's reconnect CTR ends in a NUL
			nul = true
		case "hex":
			b, err := hex.DecodeString(v)
			if err != nil {
				return m, err
			}
			data = b
		default:
			return m, fmt.Errorf("unknown key %q", k)
		}
	}
	if nul {
		data = append(data, 0)
	}
	e.seq++
	m.CnSeq = e.seq
	m.Req = Request{Luid: luid, Version: 3, Seq: e.seq, RequestType: uint32(t), Data: data}
	m.Req.SetUUID(uuid)
	return m, nil
}

func (e *traceEnv) handleReady(b *strings.Builder) {
	if !e.core.HasReady() {
		return
	}
	rd := e.core.Ready()
	e.store.apply(rd)
	for i := range rd.Replies {
		r := &rd.Replies[i]
		fmt.Fprintf(b, "reply %s seq=%d err=%d%s\n", r.Msg.Req.Type(), r.Msg.Req.Seq, r.Msg.Req.Error, fmtPayload(r))
	}
	for _, ch := range rd.Changes {
		fmt.Fprintf(b, "  write %s\n", fmtChange(ch))
	}
	if rd.MustSync {
		b.WriteString("  sync\n")
	}
	for _, n := range rd.Notes {
		lvl := "info"
		if n.Level == NoteWarn {
			lvl = "warn"
		}
		fmt.Fprintf(b, "  log %s %s %s: %s\n", lvl, n.UUID, n.Type, n.Msg)
	}
	for _, u := range rd.Notify {
		fmt.Fprintf(b, "  notify %s\n", u)
	}
	e.core.Advance(rd)
}

func fmtPayload(r *Reply) string {
	d := r.Data()
	switch {
	case len(d) == 0:
		return ""
	case r.text != "":
		return fmt.Sprintf(" text=%q", strings.TrimSuffix(r.text, "\x00"))
	case len(d) == 8:
		return fmt.Sprintf(" %d", int64(RegionAt(d, 0)))
	case len(d) == 16:
		return fmt.Sprintf(" {%d %d}", int64(RegionAt(d, 0)), RegionAt(d, 1))
	}
	return fmt.Sprintf(" %x", d)
}

func fmtBits(words []uint64, base uint64) string {
	var set []string
	n := 0
	for i, w := range words {
		for w != 0 {
			j := bits.TrailingZeros64(w)
			w &= w - 1
			n++
			if len(set) < 12 {
				set = append(set, strconv.FormatUint(base+uint64(64*i+j), 10))
			}
		}
	}
	if n > 12 {
		return fmt.Sprintf("%d set", n)
	}
	return "{" + strings.Join(set, ",") + "}"
}

func fmtChange(ch Change) string {
	switch ch.Kind {
	case ChangeVolume:
		m := ch.Meta
		return fmt.Sprintf("volume %s regions=%d region_sectors=%d next_gen=%d table=%q", ch.UUID, m.Regions, m.RegionSectors, m.NextGen, m.Table)
	case ChangeInSync:
		return fmt.Sprintf("in-sync %s chunk %d %s", ch.UUID, ch.Chunk, fmtBits(ch.Words, ch.Chunk*ChunkBits))
	case ChangeMarked:
		return fmt.Sprintf("marked %s chunk %d %s", ch.UUID, ch.Chunk, fmtBits(ch.Words, ch.Chunk*ChunkBits))
	case ChangePending:
		if ch.Gen == 0 {
			return fmt.Sprintf("pending %s region %d removed", ch.UUID, ch.Region)
		}
		return fmt.Sprintf("pending %s region %d gen %d", ch.UUID, ch.Region, ch.Gen)
	}
	return "?"
}

func (e *traceEnv) run(t *testing.T, d *datadriven.TestData) string {
	var b strings.Builder
	uuid := "A"
	d.MaybeScanArgs(t, "uuid", &uuid)
	switch d.Cmd {
	case "batch":
		for _, line := range strings.Split(strings.TrimSpace(d.Input), "\n") {
			m, err := e.parseReq(line)
			if err != nil {
				d.Fatalf(t, "%v", err)
			}
			e.core.Step(&m)
		}
		e.handleReady(&b)
	case "pending":
		p, err := e.core.Pending(uuid)
		if err != nil {
			return err.Error() + "\n"
		}
		for _, x := range p {
			quiet, _ := e.core.Quiet(uuid, x.Region)
			fmt.Fprintf(&b, "region %d gen %d quiet=%v\n", x.Region, x.Gen, quiet)
		}
		if len(p) == 0 {
			b.WriteString("none\n")
		}
	case "replicated":
		var r, gen uint64
		d.ScanArgs(t, "r", &r)
		d.ScanArgs(t, "gen", &gen)
		ok, err := e.core.Replicated(uuid, r, gen)
		fmt.Fprintf(&b, "replicated=%v err=%v\n", ok, err)
		e.handleReady(&b)
	case "tick":
		n := 1
		d.MaybeScanArgs(t, "n", &n)
		for range n {
			e.core.Tick()
		}
		e.handleReady(&b)
	case "checkpoint":
		e.core.Checkpoint()
		e.handleReady(&b)
	case "crash":
		e.core = NewCore()
		if err := e.core.Restore(e.store.crash()); err != nil {
			return "restore: " + err.Error() + "\n"
		}
		b.WriteString("restarted from durable state\n")
		e.handleReady(&b)
	case "state":
		s, ok := e.core.Snapshot(uuid)
		if !ok {
			return "unknown\n"
		}
		v := e.core.vols[uuid]
		fmt.Fprintf(&b, "regions=%d in_sync=%d marked=%s pending=%d attached=%v luids=%v\n", s.Meta.Regions,
			v.inSync.ones, fmtBits(v.marked.words, 0), len(s.Pending), v.attached, v.luids)
	default:
		line := d.Cmd
		for _, a := range d.CmdArgs {
			line += " " + a.Key
			if len(a.Vals) > 0 {
				line += "=" + strings.Join(a.Vals, ",")
			}
		}
		if d.Input != "" {
			line += " args=" + d.Input
		}
		m, err := e.parseReq(line)
		if err != nil {
			d.Fatalf(t, "%v", err)
		}
		e.core.Step(&m)
		e.handleReady(&b)
	}
	return b.String()
}

func TestTraces(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		e := newTraceEnv()
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			return e.run(t, d)
		})
	})
}
