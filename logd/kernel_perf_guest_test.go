//go:build linux

package logd_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/dmsync/dmsync/internal/guesttest"
)

// fioWrite runs one fio write job on dev and returns its write IOPS.
func fioWrite(t *testing.T, g *guesttest.G, dev, rw, bs string, depth int) float64 {
	t.Helper()
	out := g.Run("fio", "--name=j", "--filename="+dev, "--rw="+rw, "--bs="+bs, "--direct=1",
		"--ioengine=libaio", fmt.Sprintf("--iodepth=%d", depth), "--time_based", "--runtime=5",
		fmt.Sprintf("--size=%d", mirrorSectors*512), "--randrepeat=0", "--output-format=json")
	var res struct {
		Jobs []struct {
			Write struct {
				IOPS float64 `json:"iops"`
			} `json:"write"`
		} `json:"jobs"`
	}
	if i := strings.Index(out, "{"); i > 0 {
		out = out[i:]
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Jobs) == 0 {
		t.Fatalf("fio output: %v\n%s", err, out)
	}
	return res.Jobs[0].Write.IOPS
}

// perfJobs are the fio write jobs the performance tests run.
var perfJobs = []struct {
	name, rw, bs string
	depth        int
}{{"4k-randwrite-qd16", "randwrite", "4k", 16}, {"1m-write-qd4", "write", "1m", 4}}

// perfDisks returns two wiped legs and the mount point of an ext4 scratch
// disk for dmsyncd's state (so its syncs cost), unmounted at the end.
func perfDisks(t *testing.T, g *guesttest.G) (legA, legB, stateMnt string) {
	t.Helper()
	legA, legB, sd := g.WipeDisk(1), g.WipeDisk(2), g.Disk(3)
	stateMnt = t.TempDir()
	g.Run("mkfs.ext4", "-q", "-F", sd)
	g.Run("mount", sd, stateMnt)
	t.Cleanup(func() { g.Try("umount", stateMnt) })
	return legA, legB, stateMnt
}

// TestKernelPerfLogs compares the same fio jobs on plain linear, on a
// mirror with the kernel's core log and on a mirror with dmsyncd's
// userspace log (state on a real ext4 scratch disk, so syncs cost), and
// reports the ratios. It asserts nothing about speed (emulated CPU); it
// takes about a minute of guest time.
func TestKernelPerfLogs(t *testing.T) {
	g := guesttest.Require(t)
	a, b, stateMnt := perfDisks(t, g)
	const rs = "8192" // 4 MiB regions
	tables := []struct {
		name, table string
		daemon      bool
	}{
		{"linear", fmt.Sprintf("0 %d linear %s 0", mirrorSectors, a), false},
		{"mirror-core", fmt.Sprintf("0 %d mirror core 2 %s nosync 2 %s 0 %s 0 1 handle_errors", mirrorSectors, rs, a, b), false},
		{"mirror-userspace", mirrorTable("dmsync-perf", "core "+rs+" nosync", a, b), true},
		{"mirror-userspace-if", mirrorTable("dmsync-perf-if", "integrated_flush core "+rs+" nosync", a, b), true},
	}
	jobs := perfJobs
	iops := map[string]map[string]float64{}
	for _, tb := range tables {
		var d *guesttest.Daemon
		if tb.daemon {
			d = startDmsyncd(t, g, stateMnt+"/state")
		}
		g.Run("dmsetup", "create", "t-perf", "--table", tb.table)
		iops[tb.name] = map[string]float64{}
		for _, j := range jobs {
			iops[tb.name][j.name] = fioWrite(t, g, "/dev/mapper/t-perf", j.rw, j.bs, j.depth)
		}
		g.Run("dmsetup", "remove", "t-perf")
		if d != nil {
			d.Stop()
			// The daemon's own account: requests by type, time busy, syncing
			// and in sendto (which includes the kernel's delivery of the
			// reply to the waiting thread).
			for _, l := range strings.Split(d.Log(), "\n") {
				if strings.Contains(l, "requests served") {
					t.Logf("%s: %s", tb.name, l)
				}
			}
		}
	}
	for _, j := range jobs {
		lin, core := iops["linear"][j.name], iops["mirror-core"][j.name]
		for _, tb := range tables {
			v := iops[tb.name][j.name]
			t.Logf("%-18s %-24s %9.0f IOPS  %.2fx linear  %.2fx core log", j.name, tb.name, v, v/lin, v/core)
		}
	}
}
