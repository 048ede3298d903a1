package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/dmsync/dmsync/dmtarget"
)

// volumeListOptions are the flags of `dmsync volume list` (none yet).
type volumeListOptions struct{}

// AddFlags binds the options to fs.
func (o *volumeListOptions) AddFlags(fs *flag.FlagSet) {}

func runVolumeList(ctx context.Context, g *globalOptions, args []string, stdout, stderr io.Writer) error {
	var o volumeListOptions
	fs := flag.NewFlagSet("volume list", flag.ContinueOnError)
	o.AddFlags(fs)
	pos, err := parseFlags(fs, args, stderr)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usageErr("volume list takes no arguments, got %q", pos)
	}
	c, err := dial(ctx, g)
	if err != nil {
		return err
	}
	defer c.Close()
	r, err := c.VolumeList(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tMIRROR\tMODE\tCRYPT\tLOG\tLOG UUID\tSIZE\tREGION\tORIGIN")
	for _, v := range r.GetVolumes() {
		mode := "two-disk"
		if v.GetOneDisk() {
			mode = "one-disk"
		}
		origin := "dmsync"
		if !v.GetManaged() {
			origin = "adopted"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.GetName(), v.GetMirror(), mode, dash(v.GetCrypt()),
			v.GetLogType(), dash(v.GetLogUuid()), dmtarget.FormatSize(v.GetSectors()*512),
			dmtarget.FormatSize(v.GetRegionSectors()*512), origin)
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
