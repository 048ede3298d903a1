//go:build linux

package logd_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/dmsync/dmsync/internal/guesttest"
)

// regionSizes are the region sizes the trade-off is measured at.
var regionSizes = []int{64 << 10, 256 << 10, 1 << 20, 4 << 20}

// TestKernelRegionSizes measures both sides of the region-size trade-off
// and prints the table the default is chosen by. It asserts only that the
// measurements were made (the emulated CPU makes absolute speed
// meaningless):
//
//   - Write overhead: the same fio jobs on the same two-leg mirror with the
//     kernel's core log and with dmsyncd's userspace log (state on an ext4
//     scratch disk, so its syncs cost), at every region size.
//   - Read amplification: what the sender reads per byte written, for two
//     workloads on ext4: a file tree (files created, appended to and
//     removed) and 4 KiB writes scattered over a large file. The blocks a
//     workload changed are found by comparing the device before and after;
//     a region is read whole if any of its blocks changed.
func TestKernelRegionSizes(t *testing.T) {
	g := guesttest.Require(t)
	a, b, stateMnt := perfDisks(t, g)
	d := startDmsyncd(t, g, stateMnt+"/state")
	defer d.Stop()
	jobs := perfJobs
	type key struct {
		log    string
		region int
		job    string
	}
	iops := map[key]float64{}
	for i, rs := range regionSizes {
		sectors := rs / 512
		for _, log := range []string{"core", "userspace"} {
			table := fmt.Sprintf("0 %d mirror core 2 %d nosync 2 %s 0 %s 0 1 handle_errors", mirrorSectors, sectors, a, b)
			if log == "userspace" {
				table = mirrorTable(fmt.Sprintf("dmsync-rs-%d", i), fmt.Sprintf("core %d nosync", sectors), a, b)
			}
			g.Run("dmsetup", "create", "t-rs", "--table", table)
			for _, j := range jobs {
				iops[key{log, rs, j.name}] = fioWrite(t, g, "/dev/mapper/t-rs", j.rw, j.bs, j.depth)
			}
			g.Run("dmsetup", "remove", "t-rs")
		}
	}

	// Read amplification on ext4 over a plain linear device.
	const devSize = 256 << 20
	g.Run("dmsetup", "create", "t-amp", "--table", fmt.Sprintf("0 %d linear %s 0", devSize/512, g.WipeDisk(0)))
	t.Cleanup(func() { g.Try("dmsetup", "remove", "--force", "t-amp") })
	dev := "/dev/mapper/t-amp"
	mnt := filepath.Join(t.TempDir(), "amp")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	g.Run("mkfs.ext4", "-q", "-E", "lazy_itable_init=0,lazy_journal_init=0", dev)
	r := rand.New(rand.NewPCG(11, 12))
	// A large file for the scattered writes, in place before the first
	// snapshot.
	g.Run("mount", dev, mnt)
	big := filepath.Join(mnt, "big")
	writeFile(t, big, randomBytes(r, 96<<20))
	g.Run("umount", mnt)
	workloads := []struct {
		name string
		run  func() uint64 // returns the bytes the workload wrote
	}{
		{"file tree (create, append, remove)", func() uint64 {
			var n uint64
			for i := range 300 {
				p := filepath.Join(mnt, "tree", fmt.Sprintf("d%02d", i%20), fmt.Sprintf("f%03d", i))
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				data := randomBytes(r, 1<<10+r.IntN(128<<10))
				writeFile(t, p, data)
				n += uint64(len(data))
			}
			for i := 0; i < 300; i += 3 { // append to a third, remove a tenth
				p := filepath.Join(mnt, "tree", fmt.Sprintf("d%02d", i%20), fmt.Sprintf("f%03d", i))
				f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
				if err != nil {
					t.Fatal(err)
				}
				data := randomBytes(r, 4<<10+r.IntN(16<<10))
				if _, err := f.Write(data); err != nil {
					t.Fatal(err)
				}
				f.Close()
				n += uint64(len(data))
				if i%10 == 0 {
					os.Remove(p)
				}
			}
			return n
		}},
		{"1% of a 96 MiB file in scattered 4 KiB writes", func() uint64 {
			f, err := os.OpenFile(big, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			const blocks = 96 << 20 / 4096
			for range blocks / 100 {
				if _, err := f.WriteAt(randomBytes(r, 4096), int64(r.IntN(blocks))*4096); err != nil {
					t.Fatal(err)
				}
			}
			return blocks / 100 * 4096
		}},
	}
	amp := map[string]map[int]float64{}
	written := map[string]uint64{}
	for _, w := range workloads {
		before := readDevice(t, dev, devSize)
		g.Run("mount", dev, mnt)
		written[w.name] = w.run()
		g.Run("umount", mnt) // writes everything back
		after := readDevice(t, dev, devSize)
		amp[w.name] = map[int]float64{}
		var changedBlocks int
		for off := 0; off < devSize; off += 4096 {
			if !bytes.Equal(before[off:off+4096], after[off:off+4096]) {
				changedBlocks++
			}
		}
		for _, rs := range regionSizes {
			regions := 0
			for off := 0; off < devSize; off += rs {
				if !bytes.Equal(before[off:off+rs], after[off:off+rs]) {
					regions++
				}
			}
			amp[w.name][rs] = float64(regions*rs) / float64(written[w.name])
		}
		t.Logf("%s: %d bytes written by the workload, %d blocks of 4 KiB changed on the device (%.2fx)",
			w.name, written[w.name], changedBlocks, float64(changedBlocks*4096)/float64(written[w.name]))
	}

	t.Logf("region size | 4k randwrite QD16 IOPS: core / userspace (ratio) | 1M write QD4: core / userspace (ratio) | bytes read per byte written: %s | %s", workloads[0].name, workloads[1].name)
	for _, rs := range regionSizes {
		c4, u4 := iops[key{"core", rs, jobs[0].name}], iops[key{"userspace", rs, jobs[0].name}]
		c1, u1 := iops[key{"core", rs, jobs[1].name}], iops[key{"userspace", rs, jobs[1].name}]
		if c4 == 0 || u4 == 0 || c1 == 0 || u1 == 0 {
			t.Fatalf("region %d KiB: a fio job measured nothing", rs>>10)
		}
		t.Logf("%5d KiB | %6.0f / %6.0f (%.2f) | %5.0f / %5.0f (%.2f) | %6.1fx | %6.1fx", rs>>10,
			c4, u4, u4/c4, c1, u1, u1/c1, amp[workloads[0].name][rs], amp[workloads[1].name][rs])
	}
}

func randomBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for k := 0; k < 8 && i+k < n; k++ {
			b[i+k] = byte(v >> (8 * k))
		}
	}
	return b
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// readDevice reads the first n bytes of dev with O_DIRECT (what is on
// disk, not what a cache holds).
func readDevice(t *testing.T, dev string, n int) []byte {
	t.Helper()
	out := make([]byte, 0, n)
	const step = 4 << 20
	for off := 0; off < n; off += step {
		b, err := guesttest.ReadDirect(dev, int64(off), step)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b...)
	}
	return out
}
