package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"path/filepath"

	"github.com/dmsync/dmsync/dmtarget"
	"github.com/dmsync/dmsync/internal/adminpb"
)

// volumeCreateOptions are the flags of `dmsync volume create`.
type volumeCreateOptions struct {
	Data       string
	Mirror     string
	RegionSize string
	Crypt      string
	KeyFile    string
	Log        string
	Print      bool
}

// AddFlags binds the options to fs.
func (o *volumeCreateOptions) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.Data, "data", "", "data device (leg 0), e.g. /dev/vdb")
	fs.StringVar(&o.Mirror, "mirror", "", "second leg; leave out for one-disk mode")
	fs.StringVar(&o.RegionSize, "region-size", "4M", "mirror region size, a power of two (4K..1G)")
	fs.StringVar(&o.Crypt, "crypt", "", "dm-crypt on top: luks2 or plain")
	fs.StringVar(&o.KeyFile, "key-file", "", "key file for --crypt")
	fs.StringVar(&o.Log, "log", dmtarget.LogUserspace, "dirty log: userspace (served by dmsyncd) or core (kernel, for tests)")
	fs.BoolVar(&o.Print, "print", false, "print the equivalent dmsetup/cryptsetup commands instead of running them")
}

// localBuilder opens a Builder on this machine's device-mapper (for
// --print, which needs no daemon). Tests replace it.
var localBuilder = func() (*dmtarget.Builder, func(), error) {
	ctl, err := dmtarget.Open(dmtarget.Options{})
	if err != nil {
		return nil, nil, err
	}
	return &dmtarget.Builder{DM: ctl, Host: dmtarget.SystemHost{}}, func() { ctl.Close() }, nil
}

func runVolumeCreate(ctx context.Context, g *globalOptions, args []string, stdout, stderr io.Writer) error {
	var o volumeCreateOptions
	fs := flag.NewFlagSet("volume create", flag.ContinueOnError)
	o.AddFlags(fs)
	pos, err := parseFlags(fs, args, stderr)
	if err != nil {
		return err
	}
	name, err := oneName("create", pos)
	if err != nil {
		return err
	}
	if o.Data == "" {
		return usageErr("volume create %s: --data DEVICE is required", name)
	}
	rs, err := dmtarget.ParseSize(o.RegionSize)
	if err != nil {
		return fmt.Errorf("--region-size: %w", err)
	}
	abs := func(p string) string {
		if p == "" {
			return ""
		}
		if a, err := filepath.Abs(p); err == nil {
			return a
		}
		return p
	}
	spec := dmtarget.VolumeSpec{
		Name: name, Data: abs(o.Data), Mirror: abs(o.Mirror), RegionSize: rs,
		Crypt: o.Crypt, KeyFile: abs(o.KeyFile), Log: o.Log,
	}
	if o.Print {
		b, closeFn, err := localBuilder()
		if err != nil {
			return fmt.Errorf("volume create --print: %w", err)
		}
		defer closeFn()
		p, err := b.Plan(ctx, spec)
		if err != nil {
			return err
		}
		if p.Spec.Log == dmtarget.LogUserspace {
			fmt.Fprintln(stdout, "# the mirror's userspace log is served by dmsyncd: it must be running")
		}
		for _, c := range p.Commands() {
			fmt.Fprintln(stdout, c)
		}
		return nil
	}
	c, err := dial(ctx, g)
	if err != nil {
		return err
	}
	defer c.Close()
	r, err := c.VolumeCreate(ctx, &adminpb.VolumeSpec{
		Name: spec.Name, Data: spec.Data, Mirror: spec.Mirror, RegionSize: spec.RegionSize,
		Crypt: spec.Crypt, KeyFile: spec.KeyFile, LogType: spec.Log,
	}, false)
	if err != nil {
		return err
	}
	v := r.GetVolume()
	mode := "two-disk"
	if v.GetOneDisk() {
		mode = "one-disk"
	}
	fmt.Fprintf(stdout, "created volume %s: /dev/mapper/%s (%s, %s log %s)\n", v.GetName(), v.GetName(), mode, v.GetLogType(), v.GetLogUuid())
	return nil
}
