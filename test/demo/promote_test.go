package demo

import (
	"bytes"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dmsync/dmsync/internal/guesttest"
)

// TestKernelPromote is issue 12's promotion by hand on a real kernel: ext4
// on dm-crypt on a userspace-log mirror on A, a writer creating files and
// fsyncing each, replication to B with consistency points. Mid-pass, A is
// gone at once: B's link is cut, A's dmsyncd (log server and replicator)
// is killed with -9, and B's daemon too, as a power cut would. Then, by hand on B: cryptsetup open of its image, fsck
// with journal replay, mount. It must be clean, and every file whose fsync
// returned before B's last consistency point (as A last heard of it) must
// be there with its bytes.
func TestKernelPromote(t *testing.T) {
	g := guesttest.Require(t)
	const size = 64 << 20
	linearDevices(t, g, size, []string{"pr-data", "pr-replica"}, []int{0, 2})
	key := randomKeyFile(t, "/run/pr.key")
	a := newNode(t, g, "pra", "")
	a.start(t)
	makeNetns(t, g, "nodeprb", "10.99.0.1", "10.99.0.2")
	b := newNode(t, g, "prb", "nodeprb", "--no-connector", "--listen", "10.99.0.2:7420")
	b.start(t)
	a.cli("volume", "create", "pr", "--data", "/dev/mapper/pr-data", "--crypt", "plain", "--key-file", key, "--region-size", "1M")
	removed := false
	t.Cleanup(func() {
		if !removed {
			for _, d := range []string{"pr", "pr-mirror", "pr-sink", "pr-sinkerr"} {
				g.Try("dmsetup", "remove", "--force", d)
			}
		}
	})
	mnt := "/mnt/pr"
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	g.Run("mkfs.ext4", "-q", "/dev/mapper/pr")
	g.Run("mount", "/dev/mapper/pr", mnt)
	mounted := true
	t.Cleanup(func() {
		if mounted {
			g.Try("umount", mnt)
		}
	})
	b.cli("receive", "pr", "--from", a.id, "--image", "/dev/mapper/pr-replica", "--size", strconv.FormatInt(size, 10))
	a.cli("peer", "add", b.id, "--addr", "10.99.0.2:7420")
	a.cli("replicate", "pr", "--to", b.id, "--wait", "--timeout", "15m")

	// The writer: file i holds 16-48 KiB drawn from seed i; done[i] is when
	// its fsync (and the directory's) returned.
	content := func(i int) []byte {
		r := mrand.New(mrand.NewPCG(uint64(i), 77))
		b := make([]byte, 16<<10+r.IntN(32<<10))
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		return b
	}
	var mu sync.Mutex
	var done []time.Time
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		dir, err := os.Open(mnt)
		if err != nil {
			t.Error(err)
			return
		}
		defer dir.Close()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			f, err := os.Create(filepath.Join(mnt, fmt.Sprintf("f%05d", i)))
			if err == nil {
				_, err = f.Write(content(i))
				if err == nil {
					err = f.Sync()
				}
				f.Close()
			}
			if err == nil {
				err = dir.Sync()
			}
			if err != nil {
				t.Errorf("file %d: %v", i, err)
				return
			}
			mu.Lock()
			done = append(done, time.Now())
			mu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
	})

	// Let points come and go, then wait for one more.
	time.Sleep(10 * time.Second)
	seq := pointSeq(t, g, a)
	for deadline := time.Now().Add(3 * time.Minute); pointSeq(t, g, a) <= seq; time.Sleep(500 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no new consistency point in 3 minutes while files are written:\n%s", a.cli("status"))
		}
	}
	time.Sleep(time.Duration(500+mrand.IntN(3000)) * time.Millisecond) // mid-pass
	point := recoveryPoint(t, a)
	// A is gone: no packet leaves it, its dmsyncd (log server and
	// replicator) dies mid-pass, and B crashes too. A's writer blocks
	// (nothing answers A's kernel now) until A is started again below.
	g.Run("ip", "link", "set", "veth-nodeprb", "down")
	a.d.Kill9()
	b.d.Kill9()
	mu.Lock()
	before := 0 // files whose fsync returned before the point was taken
	for before < len(done) && done[before].Before(point.time) {
		before++
	}
	written := len(done)
	mu.Unlock()

	// Promote B's image by hand.
	img := "/dev/mapper/pr-replica"
	g.Run("cryptsetup", "open", "--type", "plain", "--cipher", "aes-xts-plain64", "--key-size", "512", "--key-file", key, img, "pr-promoted")
	defer g.Try("cryptsetup", "close", "pr-promoted")
	out, err := g.Try("e2fsck", "-f", "-y", "/dev/mapper/pr-promoted")
	if err != nil && !strings.Contains(err.Error(), "exit status 1") {
		t.Fatalf("e2fsck -fy of the promoted image: %v\n%s", err, out)
	}
	// After a crash e2fsck always recounts the superblock's free block and
	// inode totals (ext4 does not keep them current on disk; the kernel recounts them
	// at mount too). Any other fix means the image was not consistent.
	var fixes []string
	prev := ""
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "? yes") && !strings.HasPrefix(prev, "Free blocks count wrong (") && !strings.HasPrefix(prev, "Free inodes count wrong (") {
			fixes = append(fixes, prev+" "+l)
		}
		if strings.TrimSpace(l) != "" {
			prev = l
		}
	}
	if len(fixes) > 0 {
		t.Errorf("e2fsck had to fix the promoted image (more than replaying its journal and recounting the superblock's totals): %q\n%s", fixes, out)
	}
	if out, err := g.Try("e2fsck", "-f", "-n", "/dev/mapper/pr-promoted"); err != nil {
		t.Fatalf("the promoted image is not clean after the first fsck: %v\n%s", err, out)
	}
	mntB := "/mnt/pr-promoted"
	if err := os.MkdirAll(mntB, 0o755); err != nil {
		t.Fatal(err)
	}
	g.Run("mount", "-o", "ro", "/dev/mapper/pr-promoted", mntB)
	defer g.Try("umount", mntB)
	intact, present := 0, 0
	for i := 0; i < written; i++ {
		got, err := os.ReadFile(filepath.Join(mntB, fmt.Sprintf("f%05d", i)))
		if err == nil {
			present++
		}
		if i < before {
			if err != nil || !bytes.Equal(got, content(i)) {
				t.Fatalf("file %d was fsynced before B's point #%d (taken %s) but on the promoted image it is %s",
					i, point.seq, point.time.Format(time.RFC3339Nano), map[bool]string{true: "missing", false: "different"}[err != nil])
			}
			intact++
		}
	}
	fmt.Printf("promote: point #%d; %d files written on A, %d fsynced before the point, all %d intact on B (B holds %d); e2fsck (journal replayed: %v): %s\n",
		point.seq, written, before, intact, present, strings.Contains(out, "ecovering journal"), lastLine(out))

	// A again: its daemon restarted, the writer must get going and stop;
	// then the network back, replication stopped, the volume removed.
	a.start(t)
	close(stop)
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(2 * time.Minute):
		t.Fatalf("A's writer is still blocked 2 minutes after A's dmsyncd was started again (a device left suspended?):\n%s\n%s",
			g.Run("dmsetup", "info"), a.d.Log())
	}
	g.Run("ip", "link", "set", "veth-nodeprb", "up")
	g.Run("umount", mnt)
	mounted = false
	a.cli("replicate", "stop", "pr")
	a.removeVolume(t, "pr")
	removed = true
}

type pointInfo struct {
	seq  uint64
	time time.Time
}

// recoveryPoint is the newest consistency point A knows its peer holds.
func recoveryPoint(t *testing.T, a *node) pointInfo {
	t.Helper()
	out := a.cli("status", "--json")
	var st struct {
		Sends []struct {
			RecoveryPoint struct {
				Basis string     `json:"basis"`
				Seq   uint64     `json:"seq"`
				Time  *time.Time `json:"time"`
			} `json:"recovery_point"`
		} `json:"sends"`
	}
	i := strings.Index(out, "{")
	if i < 0 || json.Unmarshal([]byte(out[i:]), &st) != nil || len(st.Sends) != 1 {
		t.Fatalf("status --json:\n%s", out)
	}
	rp := st.Sends[0].RecoveryPoint
	if rp.Basis != "consistent-point" || rp.Time == nil || rp.Seq == 0 {
		t.Fatalf("A knows of no consistency point on B: %+v", rp)
	}
	return pointInfo{seq: rp.Seq, time: *rp.Time}
}
