package main

import (
	"context"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/dmsync/dmsync/dmtarget"
	"github.com/dmsync/dmsync/internal/replpb"
)

// runStatus prints what this node sends and receives.
func runStatus(ctx context.Context, g *globalOptions, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	raw := fs.Bool("raw", false, "one line per volume of key=value pairs with exact numbers, for scripts")
	pos, err := parseFlags(fs, args, stderr)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usageErr("status takes no arguments, got %q", pos)
	}
	c, err := dial(ctx, g)
	if err != nil {
		return err
	}
	defer c.Close()
	r, err := c.Replication().Status(ctx, &replpb.StatusRequest{})
	if err != nil {
		return c.Err(err)
	}
	if *raw {
		printRawStatus(stdout, r)
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	if len(r.GetSends()) > 0 {
		fmt.Fprintln(tw, "SENDS\tPEER\tPENDING\tTO GO\tRATE\tETA\tLAST ACK\tSENT\tPEER ROOT\tSTATE")
		for _, s := range r.GetSends() {
			eta, rate := "-", "-"
			if s.GetBytesToGo() > 0 && s.GetRateBytesPerSec() > 0 {
				eta = (time.Duration(s.GetEtaSeconds()) * time.Second).String()
			}
			if s.GetRateBytesPerSec() > 0 {
				rate = dmtarget.FormatSize(uint64(s.GetRateBytesPerSec())) + "/s"
			}
			ack := "never"
			if t := s.GetLastAckUnixNano(); t != 0 {
				ack = time.Since(time.Unix(0, t)).Round(time.Second).String() + " ago"
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.GetVolume(), short(s.GetPeer()),
				s.GetPendingRegions(), dmtarget.FormatSize(s.GetBytesToGo()), rate, eta, ack,
				dmtarget.FormatSize(s.GetBytesSent()), root(s.GetPeerRoot()), s.GetState())
		}
	}
	if len(r.GetReceives()) > 0 {
		fmt.Fprintln(tw, "RECEIVES\tFROM\tIMAGE\tSIZE\tCHUNKS\tROOT\tSTATE")
		for _, v := range r.GetReceives() {
			state := "clean"
			if v.GetApplying() {
				state = "APPLYING (a batch is half applied: not a consistent replica)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", v.GetVolume(), short(v.GetFrom()), v.GetImage(),
				dmtarget.FormatSize(v.GetSize()), v.GetChunks(), root(v.GetRoot()), state)
		}
	}
	if len(r.GetSends())+len(r.GetReceives()) == 0 {
		fmt.Fprintln(tw, "nothing replicated yet: see `dmsync replicate` and `dmsync receive`")
	}
	return tw.Flush()
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12] + "…"
	}
	return id
}

func root(b []byte) string {
	if len(b) == 0 {
		return "-"
	}
	return hex.EncodeToString(b[:8])
}

// runVerify compares the Merkle roots of a volume and its replica.
func runVerify(ctx context.Context, g *globalOptions, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	pos, err := parseFlags(fs, args, stderr)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageErr("usage: dmsync verify VOLUME")
	}
	c, err := dial(ctx, g)
	if err != nil {
		return err
	}
	defer c.Close()
	r, err := c.Replication().Verify(ctx, &replpb.VerifyRequest{Volume: pos[0]})
	if err != nil {
		return c.Err(err)
	}
	fmt.Fprintf(stdout, "source  root %x (%d chunks)\nreplica root %x (%d chunks)\n",
		r.GetSourceRoot(), r.GetSourceChunks(), r.GetReplicaRoot(), r.GetReplicaChunks())
	if r.GetEqual() {
		fmt.Fprintln(stdout, "equal")
		return nil
	}
	for _, d := range r.GetDiffer() {
		fmt.Fprintf(stdout, "differs: bytes [%d, %d) (%s)\n", d.GetOffset(), d.GetOffset()+d.GetLength(), dmtarget.FormatSize(d.GetLength()))
	}
	if r.GetReplicaApplying() {
		return fmt.Errorf("%s: the replica is applying a batch; verify again when `dmsync wait %s` returns", pos[0], pos[0])
	}
	return fmt.Errorf("%s: replica differs from the source (pending regions go on replicating; `dmsync wait %s`)", pos[0], pos[0])
}

// printRawStatus prints the status as "VOLUME key=value ..." lines.
func printRawStatus(w io.Writer, r *replpb.StatusResponse) {
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
