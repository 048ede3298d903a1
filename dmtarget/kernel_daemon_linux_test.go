//go:build linux

package dmtarget_test

// Real-kernel tests with dmsyncd serving the userspace log (the binary the
// harness puts into the guest).

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dmsync/dmsync/dmtarget"
	"github.com/dmsync/dmsync/internal/guesttest"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startDaemon runs dmsyncd with a fresh state directory until the test
// ends and waits for its READY=1.
func startDaemon(t *testing.T, g *guesttest.G) {
	t.Helper()
	notify := filepath.Join(t.TempDir(), "notify")
	l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notify, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var stderr syncBuffer
	cmd := exec.Command(g.Bin("dmsyncd"), "--state-dir", t.TempDir())
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notify)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Registered first, so it runs after the cleanups that remove the
	// volumes the daemon serves.
	t.Cleanup(func() {
		cmd.Process.Signal(unix.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("dmsyncd log:\n%s", stderr.String())
		}
	})
	l.SetReadDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, 256)
	n, _, err := l.ReadFromUnix(buf)
	if err != nil || !strings.HasPrefix(string(buf[:n]), "READY=1") {
		t.Fatalf("dmsyncd not ready: %q %v\n%s", buf[:n], err, stderr.String())
	}
}

func devT(t *testing.T, path string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
}

// TestKernelAdoptDmsetupVolume: a mirror with a userspace log made by
// plain dmsetup is found with its log uuid and legs, as the daemon needs
// to adopt it, and dmsync can inspect and remove it.
func TestKernelAdoptDmsetupVolume(t *testing.T) {
	g, ctl := openDM(t)
	startDaemon(t, g)
	ctx := context.Background()
	a, b := g.Disk(1), g.Disk(2)
	n := sectors(t, a)
	const uuid = "adopt-3b0f6c1e"
	g.Run("dmsetup", "create", "k-adopt", "--table",
		fmt.Sprintf("0 %d mirror userspace 4 %s integrated_flush core 8192 2 %s 0 %s 0 1 handle_errors", n, uuid, a, b))
	bl := kernelBuilder(ctl)
	t.Cleanup(func() { _ = bl.Remove(context.Background(), "k-adopt") })

	_, table, err := ctl.Table(ctx, "k-adopt")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kernel table: %s", table[0])
	all, err := dmtarget.ListUserspaceLogVolumes(ctx, ctl)
	if err != nil {
		t.Fatal(err)
	}
	var vols []dmtarget.LogVolume // other tests' leftovers do not count
	for _, v := range all {
		if strings.HasPrefix(v.Name, "k-") {
			vols = append(vols, v)
		}
	}
	if len(vols) != 1 {
		t.Fatalf("ListUserspaceLogVolumes = %+v, want k-adopt", vols)
	}
	v := vols[0]
	if v.Name != "k-adopt" || v.LogUUID() != uuid || !v.Table.IntegratedFlush || v.Table.RegionSectors != 8192 ||
		v.Length != n || len(v.Table.Legs) != 2 || v.Table.Legs[0].Dev != devT(t, a) || v.Table.Legs[1].Dev != devT(t, b) ||
		strings.Join(v.Table.Features, " ") != "handle_errors" {
		t.Fatalf("adopted volume %+v", v)
	}
	list, err := bl.List(ctx)
	list = onlyTestVolumes(list)
	if err != nil || len(list) != 1 || list[0].Managed || list[0].LogType != dmtarget.LogUserspace || list[0].LogUUID != uuid {
		t.Fatalf("Builder.List = %+v, %v", list, err)
	}
	waitInSync(t, ctl, "k-adopt")
	vs, err := bl.Status(ctx, "k-adopt")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("status: %+v", vs.Mirror)
	if !vs.Mirror.Healthy() || vs.Mirror.InSync != vs.Mirror.Regions || vs.Mirror.LogType == "" {
		t.Fatalf("status %+v", vs.Mirror)
	}
	if err := bl.Remove(ctx, "k-adopt"); err != nil {
		t.Fatal(err)
	}
	if vols, _ := dmtarget.ListUserspaceLogVolumes(ctx, ctl); len(vols) != len(all)-1 {
		t.Fatalf("still listed after remove: %+v", vols)
	}
}

// TestKernelUserspaceVolumes builds volumes whose log dmsyncd serves, in
// both modes, and puts a file system on them.
func TestKernelUserspaceVolumes(t *testing.T) {
	g, ctl := openDM(t)
	startDaemon(t, g)
	for _, mirror := range []bool{false, true} {
		t.Run(fmt.Sprintf("mirror=%v", mirror), func(t *testing.T) {
			ctx := context.Background()
			spec := dmtarget.VolumeSpec{Name: "k-us", Data: g.Disk(1), RegionSize: 1 << 20}
			if mirror {
				spec.Mirror = g.Disk(2)
			}
			bl := kernelBuilder(ctl)
			p, err := bl.Create(ctx, spec)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = bl.Remove(context.Background(), "k-us") })
			t.Logf("created with:\n%s", strings.Join(p.Commands(), "\n"))
			waitInSync(t, ctl, "k-us")
			mnt := t.TempDir()
			g.Run("mkfs.ext4", "-q", "/dev/mapper/k-us")
			g.Run("mount", "/dev/mapper/k-us", mnt)
			if err := os.WriteFile(filepath.Join(mnt, "f"), bytes.Repeat([]byte("dmsync"), 1<<20), 0o600); err != nil {
				t.Fatal(err)
			}
			g.Run("umount", mnt)
			g.Run("e2fsck", "-fn", "/dev/mapper/k-us")
			vs, err := bl.Status(ctx, "k-us")
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("status: %+v", vs.Mirror)
			if vs.LogType != dmtarget.LogUserspace || vs.LogUUID != p.Spec.LogUUID || !vs.Managed || !vs.Mirror.Healthy() || vs.OneDisk == mirror {
				t.Fatalf("volume status %+v", vs)
			}
			if !vs.Mirror.HasReplicationPending || vs.Mirror.ReplicationPending == 0 {
				t.Errorf("dmsyncd reports no pending regions after writes: %+v", vs.Mirror)
			}
			if mirror {
				compareLegs(t, g.Disk(1), g.Disk(2))
			}
			if err := bl.Remove(ctx, "k-us"); err != nil {
				t.Fatal(err)
			}
		})
	}
}
