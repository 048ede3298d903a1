package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

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
func (o *volumeCreateOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Data, "data", "", "data device (leg 0), e.g. /dev/sdb")
	fs.StringVar(&o.Mirror, "mirror", "", "second leg; leave out for one-disk mode")
	fs.StringVar(&o.RegionSize, "region-size", "4M", "mirror region size, a power of two (4K..1G)")
	fs.StringVar(&o.Crypt, "crypt", "", "dm-crypt on top: luks2 or plain (needs --key-file)")
	fs.StringVar(&o.KeyFile, "key-file", "", "key file for --crypt")
	fs.StringVar(&o.Log, "log", dmtarget.LogUserspace, "dirty log: userspace (served by dmsyncd) or core (kernel, for tests)")
	fs.BoolVar(&o.Print, "print", false, "print the equivalent dmsetup/cryptsetup commands instead of running them (no daemon needed)")
}

func newVolumeCreateCommand(g *globalOptions) *cobra.Command {
	var o volumeCreateOptions
	cmd := &cobra.Command{
		Use:   "create NAME --data DEVICE [--mirror DEVICE] [--crypt luks2|plain --key-file FILE]",
		Short: "Create a volume: /dev/mapper/NAME",
		Long: `Create a volume: a dm mirror over --data and --mirror (or a sink leg in
one-disk mode) whose userspace dirty log dmsyncd serves, with dm-crypt on
top if --crypt is given. With --print, only print the equivalent dmsetup
and cryptsetup commands (this needs no daemon).`,
		Example: `  dmsync volume create data --data /dev/sdb --crypt luks2 --key-file /etc/dmsync/data.key
  dmsync volume create data --data /dev/sdb --mirror /dev/sdc
  dmsync volume create data --data /dev/sdb --print`,
		Args: args("NAME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runVolumeCreate(cmd.Context(), o, g, a[0], cmd.OutOrStdout())
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
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

// spec checks the flags (everything that needs no device) and returns
// the volume spec, with absolute paths.
func (o volumeCreateOptions) spec(name string) (dmtarget.VolumeSpec, error) {
	if o.Data == "" {
		return dmtarget.VolumeSpec{}, usageErr("volume create %s: --data DEVICE is required (the disk that holds the data, e.g. --data /dev/sdb)", name)
	}
	rs, err := dmtarget.ParseSize(o.RegionSize)
	if err != nil {
		return dmtarget.VolumeSpec{}, usageErr("volume create %s: --region-size %q: want a size such as 4M", name, o.RegionSize)
	}
	switch o.Crypt {
	case dmtarget.CryptNone, dmtarget.CryptLUKS2, dmtarget.CryptPlain:
	default:
		return dmtarget.VolumeSpec{}, usageErr("volume create %s: --crypt %q: want luks2 or plain", name, o.Crypt)
	}
	if o.Crypt != "" && o.KeyFile == "" {
		return dmtarget.VolumeSpec{}, usageErr("volume create %s: --crypt %s needs --key-file FILE (e.g. head -c 64 /dev/urandom > /etc/dmsync/%s.key)", name, o.Crypt, name)
	}
	if o.Crypt == "" && o.KeyFile != "" {
		return dmtarget.VolumeSpec{}, usageErr("volume create %s: --key-file needs --crypt luks2 or --crypt plain", name)
	}
	switch o.Log {
	case dmtarget.LogUserspace, dmtarget.LogCore:
	default:
		return dmtarget.VolumeSpec{}, usageErr("volume create %s: --log %q: want userspace or core", name, o.Log)
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
	return dmtarget.VolumeSpec{
		Name: name, Data: abs(o.Data), Mirror: abs(o.Mirror), RegionSize: rs,
		Crypt: o.Crypt, KeyFile: abs(o.KeyFile), Log: o.Log,
	}, nil
}

func runVolumeCreate(ctx context.Context, o volumeCreateOptions, g *globalOptions, name string, stdout io.Writer) error {
	spec, err := o.spec(name)
	if err != nil {
		return err
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
	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	r, err := c.Volumes().VolumeCreate(ctx, &adminpb.VolumeCreateRequest{Spec: &adminpb.VolumeSpec{
		Name: spec.Name, Data: spec.Data, Mirror: spec.Mirror, RegionSize: spec.RegionSize,
		Crypt: spec.Crypt, KeyFile: spec.KeyFile, LogType: spec.Log,
	}})
	if err != nil {
		return err
	}
	v := r.GetVolume()
	fmt.Fprintf(stdout, "created volume %s: /dev/mapper/%s (%s, %s log %s)\n", v.GetName(), v.GetName(), mode(v), v.GetLogType(), v.GetLogUuid())
	return nil
}

// mode names a volume's layout.
func mode(v *adminpb.Volume) string {
	if v.GetOneDisk() {
		return "one-disk"
	}
	return "two-disk"
}
