package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/dmsync/dmsync/dmtarget"
	"github.com/dmsync/dmsync/internal/admin"
	"github.com/dmsync/dmsync/internal/adminpb"
)

// waitOptions are the flags of `dmsync wait` (and replicate --wait).
type waitOptions struct {
	Timeout time.Duration
}

// AddFlags binds the options to fs.
func (o *waitOptions) AddFlags(fs *pflag.FlagSet) {
	fs.DurationVar(&o.Timeout, "timeout", 0, "give up after this long, e.g. 30m (0: no limit)")
}

func newWaitCommand(g *globalOptions) *cobra.Command {
	var o waitOptions
	cmd := &cobra.Command{
		Use:   "wait VOLUME [--timeout D]",
		Short: "Wait until the peer has acknowledged every pending region",
		Long: `Wait until a replicated volume has no pending region left and the peer
has durably acknowledged its last batch. Exits 1 if --timeout passes first.`,
		Example: `  dmsync wait data
  dmsync wait data --timeout 30m`,
		Args: args("VOLUME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			if err := checkTimeout(o.Timeout); err != nil {
				return err
			}
			c, err := g.dial(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close()
			return waitVolume(cmd.Context(), c, a[0], o, cmd.OutOrStdout())
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

// errNotDone is returned when a wait times out.
var errNotDone = errors.New("replication not done")

func waitVolume(ctx context.Context, c *admin.Client, volume string, o waitOptions, stdout io.Writer) error {
	start := time.Now()
	pr := newProgress(stdout)
	var total uint64 // the most that was pending at once since the start
	for {
		slice := pr.pollEvery()
		if o.Timeout > 0 {
			slice = max(min(slice, o.Timeout-time.Since(start)), time.Millisecond)
		}
		r, err := c.Replication().Wait(ctx, &adminpb.WaitRequest{Volume: volume, TimeoutNano: int64(slice)})
		if err != nil {
			pr.done("")
			return err
		}
		s := r.GetStatus()
		if r.GetDone() {
			pr.done(fmt.Sprintf("%s: replicated: nothing pending; %s read, %s sent in %d batches", volume,
				dmtarget.FormatSize(s.GetBytesRead()), dmtarget.FormatSize(s.GetBytesSent()), s.GetBatches()))
			return nil
		}
		togo := s.GetBytesToGo()
		total = max(total, togo)
		eta := time.Duration(-1)
		if s.GetEtaSeconds() > 0 && s.GetRateBytesPerSec() > 0 {
			eta = time.Duration(s.GetEtaSeconds() * float64(time.Second))
		}
		rate := s.GetRateBytesPerSec()
		note := sendStateOf(s.GetStateCode()).name
		if sendStateOf(s.GetStateCode()).problem {
			note += ": " + s.GetState()
			rate, eta = 0, -1 // the last rate says nothing now
		}
		pr.update(volume+": replicating", total-togo, total, rate, eta, note)
		if o.Timeout > 0 && time.Since(start) >= o.Timeout {
			pr.done("")
			return fmt.Errorf("%w after %v: %d regions (%s) of %s still pending, state %s (`dmsync status` shows why)",
				errNotDone, o.Timeout, s.GetPendingRegions(), dmtarget.FormatSize(togo), volume, sendStateOf(s.GetStateCode()).name)
		}
	}
}
