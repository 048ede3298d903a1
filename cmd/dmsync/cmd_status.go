package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/dmsync/dmsync/dmtarget"
	"github.com/dmsync/dmsync/internal/adminpb"
)

// statusOptions are the flags of `dmsync status`.
type statusOptions struct {
	JSON     bool
	Raw      bool
	Problems bool
}

// AddFlags binds the options to fs.
func (o *statusOptions) AddFlags(fs *pflag.FlagSet) {
	fs.BoolVar(&o.JSON, "json", false, "print the status as JSON (schema: doc/status-schema.md)")
	fs.BoolVar(&o.Raw, "raw", false, "one line per replication of key=value pairs with exact numbers")
	fs.BoolVarP(&o.Problems, "problems", "x", false, "print only what is wrong (like zpool status -x)")
}

// now is the clock of the status commands (tests fix it).
var now = time.Now

func newStatusCommand(g *globalOptions) *cobra.Command {
	var o statusOptions
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show this node's volumes, what it sends and receives; exit 1 if something is wrong",
		Long: `Show this node's volumes, what it sends and what it receives, each with a
state: synced, syncing, starting, peer-unreachable, refused, peer-full,
failing, replicator-down, store-failed (sends); healthy, resyncing,
degraded-leg, store-failed, log-unreachable (volumes); consistent,
applying, empty, not-served (receives). Exits 1 when any of them is wrong,
so that it can be used in scripts and checks, like ` + "`zpool status -x`" + `.
With --json it prints a versioned document (doc/status-schema.md).`,
		Example: `  dmsync status
  dmsync status -x || page-oncall
  dmsync status --json | jq '.sends[] | {volume, state, pending_bytes}'`,
		Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runStatus(cmd.Context(), o, g, cmd.OutOrStdout())
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

// runStatus prints what this node sends and receives.
func runStatus(ctx context.Context, o statusOptions, g *globalOptions, stdout io.Writer) error {
	if o.JSON && (o.Raw || o.Problems) {
		return usageErr("status: --json prints everything; leave out --raw and -x")
	}
	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if o.Raw {
		r, err := c.Replication().Status(ctx, &adminpb.StatusRequest{})
		if err != nil {
			return err
		}
		printRawStatus(stdout, r)
		return nil
	}
	d, err := buildStatus(ctx, c, now())
	if err != nil {
		return err
	}
	if o.JSON {
		if err := writeJSON(stdout, d); err != nil {
			return err
		}
		return problemsErr(d.Problems)
	}
	if o.Problems {
		if d.OK {
			fmt.Fprintln(stdout, "all volumes and replications are healthy")
			return nil
		}
		printProblems(stdout, d.Problems)
		return problemsErr(d.Problems)
	}
	printStatus(stdout, d)
	return problemsErr(d.Problems)
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func printProblems(w io.Writer, ps []problemJSON) {
	for _, p := range ps {
		name := p.Kind
		if p.Name != "" {
			name += " " + p.Name
		}
		fmt.Fprintf(w, "%s: %s: %s\n", name, p.State, p.Message)
	}
}

// printStatus prints the status for people. Ids are printed whole, so
// they can be pasted into commands.
func printStatus(w io.Writer, d *statusDoc) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if d.Node.ID != "" {
		fmt.Fprintf(tw, "node %s", d.Node.ID)
		if d.Node.Listen != "" {
			fmt.Fprintf(tw, ", receiving on %s", d.Node.Listen)
		}
		fmt.Fprintln(tw)
	}
	if len(d.Volumes) > 0 {
		fmt.Fprintln(tw, "\nVOLUME\tSTATE\tMODE\tSIZE\tLEGS IN SYNC\tLOG UUID")
		for _, v := range d.Volumes {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d\t%s\n", v.Name, v.State, v.Mode, dmtarget.FormatSize(v.SizeBytes),
				v.InSyncRegions, v.Regions, dash(v.LogUUID))
		}
	}
	if len(d.Sends) > 0 {
		fmt.Fprintln(tw, "\nSENDS\tSTATE\tPENDING\tRATE\tETA\tRECOVERY POINT\tSENT\tPEER")
		for _, s := range d.Sends {
			eta, rate, rp := "-", "-", "none yet"
			if s.ETASeconds != nil {
				eta = (time.Duration(*s.ETASeconds) * time.Second).String()
			}
			if s.Rate > 0 && s.PendingBytes > 0 {
				rate = formatRate(s.Rate)
			}
			rp = recoveryPointText(s.RecoveryPoint)
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Volume, s.State,
				dmtarget.FormatSize(s.PendingBytes), rate, eta, rp, dmtarget.FormatSize(s.BytesSent), s.Peer)
		}
	}
	if len(d.Receives) > 0 {
		fmt.Fprintln(tw, "\nRECEIVES\tSTATE\tSIZE\tRECOVERY POINT\tCHUNKS\tROOT\tIMAGE\tFROM")
		for _, r := range d.Receives {
			root := "-"
			if len(r.Root) >= 16 {
				root = r.Root[:16]
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", r.Volume, r.State, dmtarget.FormatSize(r.SizeBytes),
				recoveryPointText(r.RecoveryPoint), r.Chunks, root, r.Image, r.From)
		}
	}
	if len(d.Volumes)+len(d.Sends)+len(d.Receives) == 0 {
		fmt.Fprintln(tw, "no volumes and nothing replicated yet: see `dmsync volume create`, `dmsync replicate` and `dmsync receive`")
	}
	if d.VolumesError != "" {
		fmt.Fprintf(tw, "\nvolumes: %s\n", d.VolumesError)
	}
	tw.Flush()
	if len(d.Problems) > 0 {
		fmt.Fprintln(w, "\nproblems:")
		printProblems(w, d.Problems)
	}
}

// recoveryPointText is the RECOVERY POINT column: the age of the peer's
// consistent point and the I/O pause it took, or why there is none.
func recoveryPointText(rp recoveryPointJSON) string {
	age := func() string { return (time.Duration(*rp.AgeSeconds) * time.Second).String() + " ago" }
	switch {
	case rp.Basis == "consistent-point" && rp.PauseSeconds != nil:
		return fmt.Sprintf("%s (#%d, pause %s)", age(), rp.Seq, (time.Duration(*rp.PauseSeconds * float64(time.Second))).Round(time.Millisecond))
	case rp.Basis == "consistent-point":
		return fmt.Sprintf("%s (#%d)", age(), rp.Seq)
	case rp.Unavailable != "":
		return "none: no points (see status --json)"
	case rp.Basis == "last-ack" && rp.AgeSeconds != nil:
		return "none yet (last ack " + age() + ")"
	}
	return "none yet"
}

func printRawStatus(w io.Writer, r *adminpb.StatusResponse) {
	for _, s := range r.GetSends() {
		fmt.Fprintf(w, "%s role=send log_uuid=%s peer=%s size=%d region_size=%d pending=%d to_go=%d read=%d sent=%d batches=%d failures=%d rate=%.0f last_ack_unix_nano=%d peer_root=%x state=%q\n",
			s.GetVolume(), s.GetLogUuid(), s.GetPeer(), s.GetSize(), s.GetRegionSize(), s.GetPendingRegions(),
			s.GetBytesToGo(), s.GetBytesRead(), s.GetBytesSent(), s.GetBatches(), s.GetFailures(),
			s.GetRateBytesPerSec(), s.GetLastAckUnixNano(), s.GetPeerRoot(), s.GetState())
	}
	for _, v := range r.GetReceives() {
		fmt.Fprintf(w, "%s role=receive from=%s image=%s size=%d chunks=%d root=%x applying=%v\n",
			v.GetVolume(), v.GetFrom(), v.GetImage(), v.GetSize(), v.GetChunks(), v.GetRoot(), v.GetApplying())
	}
}
