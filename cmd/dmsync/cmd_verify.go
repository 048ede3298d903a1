package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/dmsync/dmsync/dmtarget"
	"github.com/dmsync/dmsync/internal/admin"
	"github.com/dmsync/dmsync/internal/adminpb"
)

// minScrubRate is rpc.MinScrubRate (the CLI does not link package rpc):
// the peer refuses slower scrubs.
const minScrubRate = 1 << 20

// verifyOptions are the flags of `dmsync verify`.
type verifyOptions struct {
	Repair bool
	Rate   string
	Index  bool
	JSON   bool
}

// AddFlags binds the options to fs.
func (o *verifyOptions) AddFlags(fs *pflag.FlagSet) {
	fs.BoolVar(&o.Repair, "repair", false, "make the regions that differ pending again, so they are sent again")
	fs.StringVar(&o.Rate, "rate", "", "bound the peer's read of its image to this many bytes per second (e.g. 50M; default 200M)")
	fs.BoolVar(&o.Index, "index", false, "also compare the chunk list with the peer's index (reads the volume a second time)")
	fs.BoolVar(&o.JSON, "json", false, "print the result as JSON")
}

func newVerifyCommand(g *globalOptions) *cobra.Command {
	var o verifyOptions
	cmd := &cobra.Command{
		Use:   "verify VOLUME [--repair] [--rate N] [--index] [--json]",
		Short: "Compare a volume with its replica's bytes; --repair sends what differs again",
		Long: `Compare a volume with the bytes of its replica: the peer re-reads its image
at a bounded rate (--rate, default 200M per second) and hashes it in 1 MiB
pieces, straight from the image, never from its index; this node reads the
volume in the same pieces. Pieces that differ are compared once more in
4 KiB pieces, and the byte ranges that differ are listed. Run it on a quiet
volume (after ` + "`dmsync wait`" + `): bytes written while it reads show as different.

With --repair the regions holding those ranges become pending again (the
peer first forgets its index over them), so they are sent again: then run
` + "`dmsync wait VOLUME`" + ` and verify again. With --index the chunk list is also
compared with the peer's stored index (the Merkle roots), which says whether
the index still describes the image.

Exits 0 if equal, 1 if the replica differs or is applying a batch (also with
--repair: it differs until the regions are sent).`,
		Example: `  dmsync wait data && dmsync verify data
  dmsync verify data --repair && dmsync wait data && dmsync verify data
  dmsync verify data --json | jq '.differ'`,
		Args: args("VOLUME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runVerify(cmd.Context(), o, g, a[0], cmd.OutOrStdout())
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

// verifyJSON is what `dmsync verify --json` prints.
type verifyJSON struct {
	Volume          string           `json:"volume"`
	Equal           bool             `json:"equal"`
	Applying        bool             `json:"replica_applying"`
	Differ          []rangeJSON      `json:"differ"`
	DifferBytes     uint64           `json:"differ_bytes"`
	ScrubbedBytes   uint64           `json:"scrubbed_bytes"`
	ScrubSeconds    float64          `json:"scrub_seconds"`
	RegionSize      uint64           `json:"region_size"`
	RepairedRegions *uint64          `json:"repaired_regions,omitempty"`
	Index           *verifyIndexJSON `json:"index,omitempty"`
}

type rangeJSON struct {
	Offset uint64 `json:"offset"`
	Length uint64 `json:"length"`
}

type verifyIndexJSON struct {
	Equal         bool        `json:"equal"`
	SourceRoot    string      `json:"source_root"`
	SourceChunks  uint64      `json:"source_chunks"`
	ReplicaRoot   string      `json:"replica_root"`
	ReplicaChunks uint64      `json:"replica_chunks"`
	Differ        []rangeJSON `json:"differ"`
}

func rangesJSON(rs []*adminpb.ByteRange) []rangeJSON {
	out := []rangeJSON{}
	for _, r := range rs {
		out = append(out, rangeJSON{Offset: r.GetOffset(), Length: r.GetLength()})
	}
	return out
}

// runVerify compares a volume with its replica's bytes and prints what
// differs.
func runVerify(ctx context.Context, o verifyOptions, g *globalOptions, volume string, stdout io.Writer) error {
	req := &adminpb.VerifyRequest{Volume: volume, Repair: o.Repair, Index: o.Index}
	if o.Rate != "" {
		rate, err := dmtarget.ParseSize(o.Rate)
		if err != nil || rate < minScrubRate {
			return usageErr("verify %s: --rate %q: want bytes per second of at least 1M, such as 50M", volume, o.Rate)
		}
		req.Rate = rate
	}
	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	var r *adminpb.VerifyResponse
	if o.JSON {
		r, err = c.Replication().Verify(ctx, req)
	} else {
		r, err = verifyWithProgress(ctx, c, req, stdout)
	}
	if err != nil {
		return err
	}
	var total uint64
	for _, d := range r.GetDiffer() {
		total += d.GetLength()
	}
	secs := time.Duration(r.GetScrubNanos()).Seconds()
	if o.JSON {
		d := verifyJSON{Volume: volume, Equal: r.GetEqual(), Applying: r.GetReplicaApplying(), Differ: rangesJSON(r.GetDiffer()),
			DifferBytes: total, ScrubbedBytes: r.GetScrubbedBytes(), ScrubSeconds: secs, RegionSize: r.GetRegionSize()}
		if o.Repair {
			n := r.GetRepairedRegions()
			d.RepairedRegions = &n
		}
		if r.GetIndexChecked() {
			d.Index = &verifyIndexJSON{Equal: r.GetIndexEqual(), SourceRoot: fmt.Sprintf("%x", r.GetSourceRoot()), SourceChunks: r.GetSourceChunks(),
				ReplicaRoot: fmt.Sprintf("%x", r.GetReplicaRoot()), ReplicaChunks: r.GetReplicaChunks(), Differ: rangesJSON(r.GetIndexDiffer())}
		}
		if err := writeJSON(stdout, d); err != nil {
			return err
		}
	} else {
		printVerify(stdout, volume, r, total, secs, o.Repair)
	}
	switch {
	case r.GetEqual():
		return nil
	case len(r.GetDiffer()) > 0 && o.Repair:
		return fmt.Errorf("%s: replica differs from the source in %d ranges (%s); %d regions are pending again: `dmsync wait %s`, then `dmsync verify %s`",
			volume, len(r.GetDiffer()), humanBytes(total), r.GetRepairedRegions(), volume, volume)
	case len(r.GetDiffer()) > 0:
		return fmt.Errorf("%s: replica differs from the source in %d ranges (%s); `dmsync verify %s --repair` sends them again", volume, len(r.GetDiffer()), humanBytes(total), volume)
	case r.GetReplicaApplying():
		return fmt.Errorf("%s: the replica is applying a batch; verify again when `dmsync wait %s` returns", volume, volume)
	default:
		return fmt.Errorf("%s: the replica's index differs from the source's chunk list although its bytes are equal; `dmsync resync %s` rebuilds it", volume, volume)
	}
}

// printVerify prints verify's answer for people.
func printVerify(w io.Writer, volume string, r *adminpb.VerifyResponse, total uint64, secs float64, repair bool) {
	rate := ""
	if secs > 0 {
		rate = ", " + formatRate(float64(r.GetScrubbedBytes())/secs)
	}
	fmt.Fprintf(w, "replica image read and hashed by the peer: %s in %.1fs%s\n", humanBytes(r.GetScrubbedBytes()), secs, rate)
	if r.GetIndexChecked() {
		fmt.Fprintf(w, "source  root %x (%d chunks)\nreplica root %x (%d chunks)\n",
			r.GetSourceRoot(), r.GetSourceChunks(), r.GetReplicaRoot(), r.GetReplicaChunks())
		for _, d := range r.GetIndexDiffer() {
			fmt.Fprintf(w, "index differs: bytes [%d, %d) (%s)\n", d.GetOffset(), d.GetOffset()+d.GetLength(), humanBytes(d.GetLength()))
		}
	}
	for _, d := range r.GetDiffer() {
		fmt.Fprintf(w, "differs: bytes [%d, %d) offset %s, length %s\n", d.GetOffset(), d.GetOffset()+d.GetLength(), humanBytes(d.GetOffset()), humanBytes(d.GetLength()))
	}
	if n := len(r.GetDiffer()); n > 0 {
		fmt.Fprintf(w, "%d ranges differ, %s in all\n", n, humanBytes(total))
		if repair {
			fmt.Fprintf(w, "repair: %d regions of %s pending again; run `dmsync wait %s`, then `dmsync verify %s`\n",
				r.GetRepairedRegions(), humanBytes(r.GetRegionSize()), volume, volume)
		}
	}
	if r.GetEqual() {
		fmt.Fprintln(w, "equal")
	}
}

// humanBytes prints a byte count exactly when it is a whole unit (4M),
// else with one decimal (1.5M) or as bytes.
func humanBytes(b uint64) string {
	if b < 1<<10 {
		return fmt.Sprintf("%dB", b)
	}
	if s := dmtarget.FormatSize(b); s[len(s)-1] < '0' || s[len(s)-1] > '9' {
		return s
	}
	v, u := float64(b)/(1<<10), "K"
	for _, next := range []string{"M", "G", "T"} {
		if v < 1024 {
			break
		}
		v, u = v/1024, next
	}
	return fmt.Sprintf("%.1f%s", v, u)
}

// verifyWithProgress runs the Verify RPC and, while it runs, shows how
// much of the replica the peer has hashed (from the volume's send status).
func verifyWithProgress(ctx context.Context, c *admin.Client, req *adminpb.VerifyRequest, stdout io.Writer) (*adminpb.VerifyResponse, error) {
	volume := req.GetVolume()
	type result struct {
		r   *adminpb.VerifyResponse
		err error
	}
	res := make(chan result, 1)
	go func() {
		r, err := c.Replication().Verify(ctx, req)
		res <- result{r, err}
	}()
	pr := newProgress(stdout)
	var meter rateMeter
	tick := time.NewTicker(min(pr.pollEvery(), time.Second))
	defer tick.Stop()
	for {
		select {
		case r := <-res:
			pr.done("")
			return r.r, r.err
		case <-tick.C:
		}
		st, err := c.Replication().Status(ctx, &adminpb.StatusRequest{})
		if err != nil {
			continue // the verify's own result says what went wrong
		}
		for _, s := range st.GetSends() {
			if s.GetVolume() != volume || s.GetVerifyBytesTotal() == 0 {
				continue
			}
			read, total := s.GetVerifyBytesRead(), s.GetVerifyBytesTotal()
			rate := meter.add(read, time.Now())
			eta := time.Duration(-1)
			if rate > 0 {
				eta = time.Duration(float64(total-read) / rate * float64(time.Second))
			}
			pr.update(volume+": verifying", read, total, rate, eta, "")
		}
	}
}
