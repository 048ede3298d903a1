package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/dmsync/dmsync/dmtarget"
	"github.com/dmsync/dmsync/internal/replpb"
)

// replicateOptions are the flags of `dmsync replicate`.
type replicateOptions struct {
	To      string
	Wait    bool
	Timeout time.Duration
}

// AddFlags binds the options to fs.
func (o *replicateOptions) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.To, "to", "", "node id of a pinned peer (dmsync peer add)")
	fs.BoolVar(&o.Wait, "wait", false, "wait until every pending region is acknowledged by the peer")
	fs.DurationVar(&o.Timeout, "timeout", 0, "with --wait: give up after this long (0: no limit)")
}

// runReplicate starts replicating a volume to a peer; dmsyncd keeps doing
// so across restarts.
func runReplicate(ctx context.Context, g *globalOptions, args []string, stdout, stderr io.Writer) error {
	var o replicateOptions
	fs := flag.NewFlagSet("replicate", flag.ContinueOnError)
	o.AddFlags(fs)
	pos, err := parseFlags(fs, args, stderr)
	if err != nil {
		return err
	}
	if len(pos) != 1 || o.To == "" {
		return usageErr("usage: dmsync replicate VOLUME --to PEER [--wait [--timeout D]]")
	}
	c, err := dial(ctx, g)
	if err != nil {
		return err
	}
	defer c.Close()
	r, err := c.Replication().Replicate(ctx, &replpb.ReplicateRequest{Volume: pos[0], Peer: o.To})
	if err != nil {
		return c.Err(err)
	}
	fmt.Fprintf(stdout, "replicating %s (log %s, %s read from %s) to %s\n", pos[0], r.GetLogUuid(),
		dmtarget.FormatSize(r.GetSize()), r.GetSource(), o.To)
	if !o.Wait {
		return nil
	}
	return waitVolume(ctx, g, pos[0], o.Timeout, stdout)
}

// waitOptions are the flags of `dmsync wait`.
type waitOptions struct {
	Timeout time.Duration
}

// AddFlags binds the options to fs.
func (o *waitOptions) AddFlags(fs *flag.FlagSet) {
	fs.DurationVar(&o.Timeout, "timeout", 0, "give up after this long (0: no limit)")
}

// runWait waits until a replicated volume has nothing pending.
func runWait(ctx context.Context, g *globalOptions, args []string, stdout, stderr io.Writer) error {
	var o waitOptions
	fs := flag.NewFlagSet("wait", flag.ContinueOnError)
	o.AddFlags(fs)
	pos, err := parseFlags(fs, args, stderr)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageErr("usage: dmsync wait VOLUME [--timeout D]")
	}
	return waitVolume(ctx, g, pos[0], o.Timeout, stdout)
}

// errNotDone is returned when a wait times out.
var errNotDone = errors.New("replication not done")

func waitVolume(ctx context.Context, g *globalOptions, volume string, timeout time.Duration, stdout io.Writer) error {
	c, err := dial(ctx, g)
	if err != nil {
		return err
	}
	defer c.Close()
	start := time.Now()
	for {
		// Ask in slices so that progress is printed while waiting.
		slice := 10 * time.Second
		if timeout > 0 {
			slice = min(slice, timeout-time.Since(start))
		}
		r, err := c.Replication().Wait(ctx, &replpb.WaitRequest{Volume: volume, TimeoutNano: int64(slice)})
		if err != nil {
			return c.Err(err)
		}
		s := r.GetStatus()
		if r.GetDone() {
			fmt.Fprintf(stdout, "%s: replicated: nothing pending; %s read, %s sent in %d batches\n", volume,
				dmtarget.FormatSize(s.GetBytesRead()), dmtarget.FormatSize(s.GetBytesSent()), s.GetBatches())
			return nil
		}
		fmt.Fprintf(stdout, "%s: %d regions pending (%s to go), %s\n", volume, s.GetPendingRegions(),
			dmtarget.FormatSize(s.GetBytesToGo()), s.GetState())
		if timeout > 0 && time.Since(start) >= timeout {
			return fmt.Errorf("%w after %v: %d regions of %s still pending (dmsync status shows why)",
				errNotDone, timeout, s.GetPendingRegions(), volume)
		}
	}
}
