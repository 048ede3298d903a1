package demo

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dmsync/dmsync/internal/guesttest"
)

// story records the steps of the user story for the closing summary.
type story struct {
	t      *testing.T
	title  string
	steps  []step
	result string // one line of figures, printed under the table
}

type step struct {
	name   string
	took   time.Duration
	result string
}

// do runs one step, printing it as it starts and ends.
func (s *story) do(name string, fn func() string) {
	s.t.Helper()
	fmt.Printf("\n>>> step %d: %s\n", len(s.steps)+1, name)
	start := time.Now()
	res := fn()
	st := step{name: name, took: time.Since(start), result: res}
	s.steps = append(s.steps, st)
	fmt.Printf("<<< ok (%v) %s\n", st.took.Round(time.Millisecond), res)
}

func (s *story) summary() {
	var b strings.Builder
	status := "PASSED"
	if s.t.Failed() {
		status = "FAILED"
	}
	fmt.Fprintf(&b, "\n============ dmsync demo summary: %s mode, %s ============\n", s.title, status)
	fmt.Fprintf(&b, "%-3s %-66s %10s  %s\n", "#", "step", "time", "result")
	for i, st := range s.steps {
		took := "-"
		if st.took > 0 {
			took = st.took.Round(time.Millisecond).String()
		}
		fmt.Fprintf(&b, "%-3d %-66s %10s  %s\n", i+1, st.name, took, st.result)
	}
	if s.result != "" {
		fmt.Fprintf(&b, "%s\n", s.result)
	}
	fmt.Print(b.String())
}

// storyMode is one way of building node A's volume.
type storyMode struct {
	name string
	// oneDisk: the mirror's second leg is a sink that discards writes (one
	// real disk); otherwise two real legs.
	oneDisk bool
	// n keeps names, addresses and disks of the modes apart.
	n          int
	size, tree int64 // volume and file tree sizes
}

// storyModes: both ways a dmsync volume is built. The two-disk story
// carries a tree of a few hundred MB on a 448 MiB volume (the guest's disks
// are 512 MiB); the one-disk story repeats it smaller, because the guest's
// CPU is emulated (AES, hashing, TLS) and CI time is bounded.
var storyModes = []storyMode{
	{name: "two-disk", n: 0, size: 448 << 20, tree: 224 << 20},
	{name: "one-disk", oneDisk: true, n: 1, size: 128 << 20, tree: 24 << 20},
}

// TestKernelStory is the user story, end to end, once per mode: node A
// serves the dirty log of a mirror created with dmsetup, with dm-crypt on
// top; node B, in its own network namespace, receives the replica and never
// sees the key.
func TestKernelStory(t *testing.T) {
	for _, m := range storyModes {
		t.Run(m.name, func(t *testing.T) { runStory(t, m) })
	}
}

func runStory(t *testing.T, mode storyMode) {
	g := guesttest.Require(t)
	s := &story{t: t, title: mode.name}
	defer s.summary()
	// Fresh disks: the mirror is created with nosync, which is only
	// correct when both legs hold the same bytes already.
	legA, replica := g.WipeDisk(0), g.WipeDisk(2)
	legB := ""
	if !mode.oneDisk {
		legB = g.WipeDisk(1)
	}
	size := mode.size
	sectors := size / 512
	sfx := ""
	if mode.n > 0 {
		sfx = fmt.Sprint(mode.n)
	}
	name, logUUID := "demo"+sfx, "dmsync-demo"+sfx
	key := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(key, []byte("correct horse battery staple"), 0o600); err != nil {
		t.Fatal(err)
	}
	mnt, mntB := t.TempDir(), t.TempDir()
	plain := "/dev/mapper/" + name + "-plain"
	marker := []byte(fmt.Sprintf("DMSYNC-PLAINTEXT-MARKER-%d", time.Now().UnixNano()))
	hostIP, nsIP := fmt.Sprintf("10.99.%d.1", mode.n), fmt.Sprintf("10.99.%d.2", mode.n)
	listen := nsIP + ":7420"

	var a, b *node
	s.do("node A: dmsync init, start dmsyncd (serves the dirty log)", func() string {
		a = newNode(t, g, "a"+sfx, "")
		a.start(t)
		return "id " + a.id
	})
	s.do("node B: network namespace + veth, dmsync init, dmsyncd --listen", func() string {
		makeNetns(t, g, "nodeb"+sfx, hostIP, nsIP)
		b = newNode(t, g, "b"+sfx, "nodeb"+sfx, "--no-connector", "--listen", listen)
		b.start(t)
		return "id " + b.id + " at " + listen
	})
	s.do("pin the peers: B receives into "+replica+", A knows B", func() string {
		b.cli("receive", logUUID, "--from", a.id, "--image", replica, "--size", fmt.Sprintf("%dM", size>>20))
		a.cli("peer", "add", b.id, "--addr", listen)
		return "A's peers: " + lastLine(a.cli("peer", "list"))
	})
	if mode.oneDisk {
		s.do("dmsetup create: sink leg (error + flakey drop_writes)", func() string {
			g.Run("dmsetup", "create", name+"-err", "--table", fmt.Sprintf("0 %d error", sectors))
			t.Cleanup(func() { g.Try("dmsetup", "remove", "--force", name+"-err") })
			g.Run("dmsetup", "create", name+"-sink", "--table",
				fmt.Sprintf("0 %d flakey /dev/mapper/%s-err 0 0 1 1 drop_writes", sectors, name))
			t.Cleanup(func() { g.Try("dmsetup", "remove", "--force", name+"-sink") })
			legB = "/dev/mapper/" + name + "-sink"
			return legB + " discards writes, fails reads"
		})
	}
	s.do(fmt.Sprintf("dmsetup create: %s mirror, userspace log served by dmsyncd", mode.name), func() string {
		table := fmt.Sprintf("0 %d mirror userspace 4 %s core 8192 nosync 2 %s 0 %s 0 1 handle_errors", sectors, logUUID, legA, legB)
		g.Run("dmsetup", "create", name, "--table", table)
		t.Cleanup(func() { g.Try("dmsetup", "remove", "--force", name) })
		return strings.TrimSpace(g.Run("dmsetup", "status", name))
	})
	s.do("cryptsetup luksFormat + open (LUKS2)", func() string {
		g.Run("cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2",
			"--pbkdf-force-iterations", "1000", "--key-file", key, "/dev/mapper/"+name)
		g.Run("cryptsetup", "open", "--key-file", key, "/dev/mapper/"+name, name+"-plain")
		t.Cleanup(func() { g.Try("cryptsetup", "close", name+"-plain") })
		return plain
	})
	s.do("mkfs.ext4, mount", func() string {
		g.Run("mkfs.ext4", "-q", "-F", plain)
		g.Run("mount", plain, mnt)
		t.Cleanup(func() { g.Try("umount", mnt) })
		return mnt
	})
	s.do("dmsync replicate "+name+" --to B (runs from now on)", func() string {
		return strings.TrimSpace(a.cli("replicate", name, "--to", b.id))
	})
	var tree map[string][32]byte
	var treeBytes int64
	s.do("write a file tree on A", func() string {
		n, bytes := writeTree(t, mnt, string(marker), mode.tree)
		g.Run("sync")
		tree, treeBytes = hashTree(t, mnt), bytes
		return fmt.Sprintf("%d files, %d MiB", n, bytes>>20)
	})
	var sent1 uint64
	s.do("umount on A, dmsync wait: every region acknowledged by B", func() string {
		g.Run("umount", mnt)
		out := a.cliStream("wait", name, "--timeout", "15m")
		sent1 = sendStats(t, a, name).sent
		return lastLine(out)
	})
	s.do("B holds only ciphertext: marker absent from its replica and state", func() string {
		if deviceContains(t, replica, marker) {
			t.Fatalf("plaintext marker found in B's replica %s", replica)
		}
		if f := treeContains(t, b.dir, marker); f != "" {
			t.Fatalf("plaintext marker found in B's state: %s", f)
		}
		if !deviceContains(t, plain, marker) {
			t.Fatalf("marker not on A's plaintext device: the check is blind")
		}
		return "marker found on A's plaintext device only"
	})
	checkB := func() string {
		g.Run("cryptsetup", "open", "--readonly", "--key-file", key, replica, "replica-plain")
		defer g.Try("cryptsetup", "close", "replica-plain")
		g.Run("e2fsck", "-f", "-n", "/dev/mapper/replica-plain")
		g.Run("mount", "-o", "ro", "/dev/mapper/replica-plain", mntB)
		defer g.Try("umount", mntB)
		if diff := compareTrees(tree, hashTree(t, mntB)); diff != "" {
			t.Fatalf("B's file tree differs from A's: %s", diff)
		}
		return fmt.Sprintf("fsck -n clean, %d files identical", len(tree))
	}
	s.do("B: cryptsetup open the replica with the key, fsck, same tree", checkB)
	var changed int64
	s.do("change ~1% of the files on A", func() string {
		g.Run("mount", plain, mnt)
		changed = changeFiles(t, mnt, treeBytes/100)
		g.Run("sync")
		tree = hashTree(t, mnt)
		g.Run("umount", mnt)
		return fmt.Sprintf("%d KiB of file data rewritten", changed>>10)
	})
	var sent2 uint64
	s.do("dmsync wait: second pass", func() string {
		a.cliStream("wait", name, "--timeout", "10m")
		sent2 = sendStats(t, a, name).sent - sent1
		return fmt.Sprintf("sent %d KiB for %d KiB changed (%.2fx)", sent2>>10, changed>>10, float64(sent2)/float64(changed))
	})
	s.do("dmsync verify: B re-reads its image, equal to A", func() string {
		return lastLine(a.cli("verify", name))
	})
	s.do("B: same tree again", checkB)
	// Two disks: the mirror's legs agree. One disk: A's only disk equals
	// B's replica, byte for byte.
	other, what := legB, "legs of A identical (O_DIRECT)"
	if mode.oneDisk {
		other, what = replica, "A's one disk equals B's replica (O_DIRECT)"
	}
	s.do(what, func() string {
		g.Run("cryptsetup", "close", name+"-plain")
		if same, _ := compareLegs(t, legA, other, size, marker); !same {
			t.Fatalf("%s and %s differ", legA, other)
		}
		return fmt.Sprintf("%d MiB compared", size>>20)
	})
	s.result = fmt.Sprintf("%s: volume %d MiB, tree %d MiB; first pass sent %d MiB; second pass sent %d KiB for %d KiB changed",
		mode.name, size>>20, treeBytes>>20, sent1>>20, sent2>>10, changed>>10)
}

type sendStat struct{ sent uint64 }

// sendStats reads bytes sent for a volume from `dmsync status`.
func sendStats(t *testing.T, n *node, volume string) sendStat {
	t.Helper()
	out := n.cli("status", "--raw")
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && f[0] == volume {
			var st sendStat
			for _, kv := range f[1:] {
				if v, ok := strings.CutPrefix(kv, "sent="); ok {
					fmt.Sscan(v, &st.sent)
				}
			}
			return st
		}
	}
	t.Fatalf("volume %s not in dmsync status:\n%s", volume, out)
	return sendStat{}
}

func lastLine(s string) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	return l[len(l)-1]
}

// changeFiles rewrites whole files, largest first from a fixed order,
// until about budget bytes changed; it returns the bytes rewritten.
func changeFiles(t *testing.T, dir string, budget int64) int64 {
	t.Helper()
	var done int64
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || done >= budget || !strings.HasPrefix(d.Name(), "f") {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.Size() > budget-done && done > 0 {
			return nil
		}
		buf := make([]byte, info.Size())
		rand.Read(buf)
		if err := os.WriteFile(p, buf, 0o644); err != nil {
			t.Fatal(err)
		}
		done += info.Size()
		return nil
	})
	return done
}

// writeTree writes a mixed tree of small and large random files, with the
// plaintext marker in some of them, and returns the file and byte counts.
func writeTree(t *testing.T, dir, marker string, total int64) (int, int64) {
	t.Helper()
	var n int
	var written int64
	for i := 0; written < total; i++ {
		sub := filepath.Join(dir, fmt.Sprintf("d%02d", i%8))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		size := int64(4 << 10)
		if i%10 == 0 {
			size = 4 << 20
		} else if i%3 == 0 {
			size = 96 << 10
		}
		buf := make([]byte, size)
		rand.Read(buf)
		copy(buf, marker)
		if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%04d", i)), buf, 0o644); err != nil {
			t.Fatal(err)
		}
		n++
		written += size
	}
	return n, written
}

// hashTree returns the SHA-256 of every file under dir.
func hashTree(t *testing.T, dir string) map[string][32]byte {
	t.Helper()
	out := map[string][32]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out[rel] = [32]byte(h.Sum(nil))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// compareTrees describes the first difference between two tree hashes, or
// returns "".
func compareTrees(want, got map[string][32]byte) string {
	if len(want) != len(got) {
		return fmt.Sprintf("%d files, want %d", len(got), len(want))
	}
	for p, h := range want {
		if got[p] != h {
			return "content of " + p + " differs"
		}
	}
	return ""
}

// compareLegs reads two devices with O_DIRECT and reports whether they are
// identical and whether the first contains marker.
func compareLegs(t *testing.T, a, b string, size int64, marker []byte) (same, found bool) {
	t.Helper()
	const step = 4 << 20
	same = true
	var tail []byte
	for off := int64(0); off < size; off += step {
		n := int(min(step, size-off))
		x, err := guesttest.ReadDirect(a, off, n)
		if err != nil {
			t.Fatal(err)
		}
		y, err := guesttest.ReadDirect(b, off, n)
		if err != nil {
			t.Fatal(err)
		}
		same = same && bytes.Equal(x, y)
		if bytes.Contains(append(tail, x...), marker) {
			found = true
		}
		tail = append(tail[:0], x[n-len(marker):]...)
	}
	return same, found
}
