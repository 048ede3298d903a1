package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/dmsync/dmsync/dmtarget"
	"github.com/dmsync/dmsync/internal/adminpb"
)

// replicateOptions are the flags of `dmsync replicate`.
type replicateOptions struct {
	To            string
	As            string
	Wait          bool
	PointInterval time.Duration
	Chunking      string
	waitOptions
}

// AddFlags binds the options to fs.
func (o *replicateOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.To, "to", "", "node id of a pinned peer (dmsync peer add)")
	fs.StringVar(&o.As, "as", "", "the name the peer receives it under (default: its log uuid or VOLUME, whichever the peer knows)")
	fs.BoolVar(&o.Wait, "wait", false, "wait until every pending region is acknowledged by the peer")
	fs.DurationVar(&o.PointInterval, "point-interval", 0, "least time between two consistency points, e.g. 5m (0: a point as soon as everything written was sent; each point pauses writes briefly)")
	fs.StringVar(&o.Chunking, "chunking", "", "how changes are cut into chunks: fixed (16 KiB chunks, only their changed 4 KiB blocks sent; consistency points; fits dm-crypt), cdc (content-defined; fits plaintext with insertions; no consistency points) or auto (fixed under dm-crypt, else cdc); default: dmsyncd's --chunking. The replica keeps the chunking of its first send")
	o.waitOptions.AddFlags(fs)
}

func newReplicateCommand(g *globalOptions) *cobra.Command {
	var o replicateOptions
	cmd := &cobra.Command{
		Use:   "replicate VOLUME --to PEER [--wait [--timeout D]]",
		Short: "Replicate a volume to a pinned peer (kept across restarts)",
		Long: `Replicate a volume to a pinned peer. A new peer gets the whole volume once,
then only the regions the kernel marks as written. dmsyncd keeps doing so
across restarts. VOLUME is the dmsync volume's name, its mirror's dm name,
or its log uuid. The peer may receive it under VOLUME or the log uuid
(` + "`dmsync receive VOLUME --from THIS-NODE ...`" + ` there), or under --as NAME.`,
		Example: `  dmsync replicate data --to 6kzp3rl2c4m7…
  dmsync replicate data --to 6kzp3rl2c4m7… --wait --timeout 2h`,
		Args: args("VOLUME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runReplicate(cmd.Context(), o, g, a[0], cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	o.AddFlags(cmd.Flags())
	cmd.AddCommand(newReplicateStopCommand(g))
	return cmd
}

func runReplicate(ctx context.Context, o replicateOptions, g *globalOptions, volume string, stdout, stderr io.Writer) error {
	if o.To == "" {
		return usageErr("replicate %s: --to PEER is required (a node id from `dmsync peer list`)", volume)
	}
	if o.PointInterval < 0 {
		return usageErr("replicate %s: --point-interval %s is negative", volume, o.PointInterval)
	}
	if o.Timeout != 0 && !o.Wait {
		return usageErr("replicate %s: --timeout only applies with --wait", volume)
	}
	switch o.Chunking {
	case "", "fixed", "cdc", "auto":
	default:
		return usageErr("replicate %s: --chunking %q: want fixed, cdc or auto", volume, o.Chunking)
	}
	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	r, err := c.Replication().Replicate(ctx, &adminpb.ReplicateRequest{Volume: volume, Peer: o.To, As: o.As, PointIntervalNano: int64(o.PointInterval), Chunking: o.Chunking})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "replicating %s (log %s, %s read from %s) to %s\n", volume, r.GetLogUuid(),
		dmtarget.FormatSize(r.GetSize()), r.GetSource(), o.To)
	if self, err := c.Replication().Node(ctx, &adminpb.NodeRequest{}); err == nil && self.GetId() != "" {
		fmt.Fprintf(stderr, "on the peer: dmsync receive %s --from %s --image DEVICE --size %d\n", r.GetName(), self.GetId(), r.GetSize())
	}
	if !o.Wait {
		return nil
	}
	return waitVolume(ctx, c, volume, o.waitOptions, stdout)
}

// checkTimeout refuses a negative --timeout.
func checkTimeout(d time.Duration) error {
	if d < 0 {
		return usageErr("--timeout %v: want a positive duration such as 30m", d)
	}
	return nil
}
