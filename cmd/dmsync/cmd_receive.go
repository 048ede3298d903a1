package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/dmsync/dmsync/dmtarget"
	"github.com/dmsync/dmsync/internal/adminpb"
)

// receiveOptions are the flags of `dmsync receive`.
type receiveOptions struct {
	From  string
	Image string
	Size  string
	Force bool
}

// AddFlags binds the options to fs.
func (o *receiveOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.From, "from", "", "node id of the peer allowed to send this volume")
	fs.StringVar(&o.Image, "image", "", "absolute path of the replica: a block device or a file")
	fs.StringVar(&o.Size, "size", "", "the volume's size (e.g. 512M): needed for an image larger than the volume, or to create a file")
	fs.BoolVar(&o.Force, "force", false, "change the sender of a volume already received (after its key was rotated)")
}

func newReceiveCommand(g *globalOptions) *cobra.Command {
	var o receiveOptions
	cmd := &cobra.Command{
		Use:   "receive VOLUME --from PEER --image PATH [--size N]",
		Short: "Let a peer send a volume into a device or file here",
		Long: `Let a peer send a volume into an image on this node: an existing block
device that nothing uses, or a file (created with --size if missing; never
under /dev). VOLUME is the sender's name for it: the name its operator
gives ` + "`dmsync replicate`" + ` (which prints this command), or its log uuid. An image
larger than the volume is fine with --size. An image holds one volume; an
existing receive changes only with --force, and then only its sender. This
node's dmsyncd must listen for peers (--listen).`,
		Example: `  dmsync receive data --from r63tyhgo… --image /dev/vg0/data-replica --size 100G
  dmsync receive data --from r63tyhgo… --image /srv/replicas/data.img --size 100G`,
		Args: args("VOLUME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runReceive(cmd.Context(), o, g, a[0], cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	o.AddFlags(cmd.Flags())
	cmd.AddCommand(newReceiveRemoveCommand(g))
	return cmd
}

func runReceive(ctx context.Context, o receiveOptions, g *globalOptions, volume string, stdout, stderr io.Writer) error {
	if o.From == "" || o.Image == "" {
		return usageErr("receive %s: --from PEER and --image PATH are required (PEER is what `dmsync id` prints on the sender)", volume)
	}
	var size uint64
	if o.Size != "" {
		var err error
		if size, err = dmtarget.ParseSize(o.Size); err != nil {
			return usageErr("receive %s: --size %q: want a size such as 100G", volume, o.Size)
		}
	}
	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	r, err := c.Replication().Receive(ctx, &adminpb.ReceiveRequest{Volume: volume, From: o.From, Image: o.Image, Size: size, Force: o.Force})
	if err != nil {
		return err
	}
	verb := "receiving"
	if r.GetChanged() {
		verb = "changed: receiving"
	}
	fmt.Fprintf(stdout, "%s %s (%s) from %s into %s\n", verb, volume, dmtarget.FormatSize(r.GetSize()), o.From, o.Image)
	if o.Size == "" && !r.GetChanged() {
		fmt.Fprintf(stderr, "note: the replica takes all of %s (%d bytes): the sender's volume must be exactly that size; for a larger image give --size (the size `dmsync replicate` printed)\n", o.Image, r.GetSize())
	}
	return nil
}
