//go:build linux

package main

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"

	"github.com/dmsync/dmsync/dmtarget"
	"github.com/dmsync/dmsync/internal/guesttest"
)

// TestKernelPrintedCommandsWork runs what `dmsync volume create --print`
// prints through a shell, as an operator taking the pure-dmsetup route
// would, and checks the result is the volume dmsync would have built.
func TestKernelPrintedCommandsWork(t *testing.T) {
	g := guesttest.Require(t)
	disk := g.Disk(3)
	for _, tc := range []struct {
		name string
		args []string
		devs string
	}{
		{"onedisk", nil, "p,p-sink,p-sinkerr"},
		{"twodisk", []string{"--mirror", g.Disk(2)}, "p"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			args := append([]string{"volume", "create", "p", "--data", disk, "--log", "core", "--print"}, tc.args...)
			if err := run(context.Background(), args, &out, &errb); err != nil {
				t.Fatalf("%v: %s", err, errb.String())
			}
			ctl, err := dmtarget.Open(dmtarget.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer ctl.Close()
			b := &dmtarget.Builder{DM: ctl, Host: dmtarget.SystemHost{}}
			t.Cleanup(func() { _ = b.Remove(context.Background(), "p") })
			for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
				if o, err := exec.Command("sh", "-c", line).CombinedOutput(); err != nil {
					t.Fatalf("%s: %v\n%s", line, err, o)
				}
			}
			v, err := b.Find(context.Background(), "p")
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(v.Devices, ",") != tc.devs || !v.Managed || v.LogType != "core" {
				t.Fatalf("volume from the printed commands: %+v", v)
			}
			g.Run("mkfs.ext4", "-q", "/dev/mapper/p")
			if err := b.Remove(context.Background(), "p"); err != nil {
				t.Fatal(err)
			}
		})
	}
}
