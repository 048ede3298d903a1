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
	t     *testing.T
	steps []step
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

// notYet records a step the code cannot do yet, and why.
func (s *story) notYet(name, why string) {
	fmt.Printf("\n>>> step %d: %s\n<<< NOT THERE YET: %s\n", len(s.steps)+1, name, why)
	s.steps = append(s.steps, step{name: name, result: "not there yet: " + why})
}

func (s *story) summary() {
	var b strings.Builder
	fmt.Fprintf(&b, "\n==================== dmsync demo summary ====================\n")
	fmt.Fprintf(&b, "%-3s %-48s %10s  %s\n", "#", "step", "time", "result")
	for i, st := range s.steps {
		took := "-"
		if st.took > 0 {
			took = st.took.Round(time.Millisecond).String()
		}
		fmt.Fprintf(&b, "%-3d %-48s %10s  %s\n", i+1, st.name, took, st.result)
	}
	fmt.Print(b.String())
}

// TestKernelStory is the user story as far as the code goes today.
func TestKernelStory(t *testing.T) {
	g := guesttest.Require(t)
	s := &story{t: t}
	defer s.summary()
	legA, legB := g.Disk(0), g.Disk(1)
	size, err := guesttest.DeviceSize(legA)
	if err != nil {
		t.Fatal(err)
	}
	sectors := size / 512
	const name = "demo"
	key := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(key, []byte("correct horse battery staple"), 0o600); err != nil {
		t.Fatal(err)
	}
	mnt := t.TempDir()

	log := "core 2 8192 nosync" // 4 MiB regions
	s.do("create the dm volume with dmsetup (2-leg mirror)", func() string {
		// TODO(issue 3): the userspace log served by dmsyncd replaces core.
		table := fmt.Sprintf("0 %d mirror %s 2 %s 0 %s 0 1 handle_errors", sectors, log, legA, legB)
		g.Run("dmsetup", "create", name, "--table", table)
		g.Cleanup("dmsetup", "remove", "--force", name)
		return strings.TrimSpace(g.Run("dmsetup", "status", name))
	})
	s.do("cryptsetup luksFormat + open (LUKS2)", func() string {
		g.Run("cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2",
			"--pbkdf-force-iterations", "1000", "--key-file", key, "/dev/mapper/"+name)
		g.Run("cryptsetup", "open", "--key-file", key, "/dev/mapper/"+name, name+"-plain")
		t.Cleanup(func() { g.Try("cryptsetup", "close", name+"-plain") })
		return "/dev/mapper/" + name + "-plain"
	})
	s.do("mkfs.ext4", func() string {
		g.Run("mkfs.ext4", "-q", "-F", "/dev/mapper/"+name+"-plain")
		return "ext4"
	})
	s.do("mount", func() string {
		g.Run("mount", "/dev/mapper/"+name+"-plain", mnt)
		t.Cleanup(func() { g.Try("umount", mnt) })
		return mnt
	})
	var tree map[string][32]byte
	marker := fmt.Sprintf("DMSYNC-PLAINTEXT-MARKER-%d", time.Now().UnixNano())
	s.do("write a file tree", func() string {
		n, bytes := writeTree(t, mnt, marker, 40<<20)
		g.Run("sync")
		tree = hashTree(t, mnt)
		return fmt.Sprintf("%d files, %d MiB", n, bytes>>20)
	})
	s.do("umount, fsck -n clean, remount: same tree", func() string {
		g.Run("umount", mnt)
		g.Run("e2fsck", "-f", "-n", "/dev/mapper/"+name+"-plain")
		g.Run("mount", "-o", "ro", "/dev/mapper/"+name+"-plain", mnt)
		if diff := compareTrees(tree, hashTree(t, mnt)); diff != "" {
			t.Fatalf("file tree changed across umount/mount: %s", diff)
		}
		g.Run("umount", mnt)
		return fmt.Sprintf("%d files match", len(tree))
	})
	s.do("both mirror legs identical, ciphertext only", func() string {
		g.Run("cryptsetup", "close", name+"-plain")
		same, found := compareLegs(t, legA, legB, size, []byte(marker))
		if !same {
			t.Fatalf("mirror legs %s and %s differ", legA, legB)
		}
		if found {
			t.Fatalf("plaintext marker found on the leg %s: dm-crypt is not in the data path", legA)
		}
		return fmt.Sprintf("%d MiB compared with O_DIRECT; plaintext marker absent", size>>20)
	})
	s.notYet("replicate to a peer (rpc)", "replication over gRPC is issue 6")
	s.notYet("peer holds only ciphertext; opens, fsck, same tree", "needs replication (issue 6, 7)")
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
