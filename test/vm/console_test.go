package vm

import (
	"strings"
	"testing"
	"time"
)

func TestParseConsole(t *testing.T) {
	for _, tc := range []struct {
		name     string
		console  string
		exits    []int
		problems []string // substrings, in order
	}{{
		name: "clean run",
		console: `[    0.000000] Kernel command line: console=ttyS0 panic=-1 oops=panic dmsync.guest=1
\x1bc\x1b[?7l\x1b[2J=== DMSYNC-GUEST BOOTED 6.25
=== DMSYNC-GUEST READY 7.00 disks=vda
=== DMSYNC-GUEST BEGIN a
--- PASS: TestKernelX (0.01s)
=== DMSYNC-GUEST END a rc=0
=== DMSYNC-GUEST DMESG BEGIN
[    1.0] device-mapper: ioctl: 4.47.0-ioctl initialised
=== DMSYNC-GUEST DMESG END
=== DMSYNC-GUEST DONE`,
		exits: []int{0},
	}, {
		name: "failing binary and a kernel warning",
		console: `=== DMSYNC-GUEST READY 7.00 disks=vda
=== DMSYNC-GUEST BEGIN a
--- FAIL: TestKernelX (0.01s)
WARNING: this line is test output and does not count
=== DMSYNC-GUEST END a rc=1
=== DMSYNC-GUEST BEGIN b
[   12.5] WARNING: CPU: 0 PID: 1 at drivers/md/dm.c:100 foo+0x1/0x2
[   12.6] Call Trace:
=== DMSYNC-GUEST END b rc=0
=== DMSYNC-GUEST DONE`,
		exits:    []int{1, 0},
		problems: []string{"WARNING: CPU: 0", "Call Trace:"},
	}, {
		name: "guest died mid-test",
		console: `=== DMSYNC-GUEST READY 7.00 disks=vda
=== DMSYNC-GUEST BEGIN a
running...
[   40.1] BUG: kernel NULL pointer dereference, address: 0000000000000000
[   40.2] Kernel panic - not syncing: Fatal exception`,
		exits:    []int{-1},
		problems: []string{"BUG: kernel NULL", "Kernel panic", "did not finish"},
	}, {
		name:     "no boot",
		console:  `qemu-system-x86_64: -kernel /nope: could not open`,
		problems: []string{"never reached"},
	}, {
		name: "modules failed",
		console: `=== DMSYNC-GUEST MODULES FAILED: modprobe: FATAL: Module dm_nope not found
=== DMSYNC-GUEST READY 7.00 disks=vda
=== DMSYNC-GUEST DONE`,
		problems: []string{"modprobe failed"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			r := parseConsole(strings.ReplaceAll(tc.console, `\x1b`, "\x1b"))
			if tc.name == "clean run" && r.Booted != 6250*time.Millisecond {
				t.Errorf("Booted = %v, want 6.25s", r.Booted)
			}
			var exits []int
			for _, tr := range r.Tests {
				exits = append(exits, tr.Exit)
			}
			if len(exits) != len(tc.exits) {
				t.Fatalf("exits %v, want %v", exits, tc.exits)
			}
			for i := range exits {
				if exits[i] != tc.exits[i] {
					t.Fatalf("exits %v, want %v", exits, tc.exits)
				}
			}
			if len(r.Problems) != len(tc.problems) {
				t.Fatalf("problems %q, want %d matching %q", r.Problems, len(tc.problems), tc.problems)
			}
			for i, p := range tc.problems {
				if !strings.Contains(r.Problems[i], p) {
					t.Errorf("problem %d = %q, want it to contain %q", i, r.Problems[i], p)
				}
			}
			failed := false
			for _, e := range tc.exits {
				failed = failed || e != 0
			}
			if (r.Err() != nil) != (failed || len(tc.problems) > 0) {
				t.Errorf("Err() = %v", r.Err())
			}
		})
	}
}

func TestParseConsoleKeepsTestOutput(t *testing.T) {
	r := parseConsole("=== DMSYNC-GUEST READY 1\n=== DMSYNC-GUEST BEGIN a\nline one\nline two\n=== DMSYNC-GUEST END a rc=0\n=== DMSYNC-GUEST DONE\n")
	if got := r.Tests[0].Output; got != "line one\nline two\n" {
		t.Fatalf("output %q", got)
	}
}

func TestCPIOLayout(t *testing.T) {
	var b strings.Builder
	cw := &cpioWriter{w: &b}
	cw.Dir("etc", 0o755)
	cw.File("etc/x", 0o644, []byte("hello"))
	cw.Symlink("bin", "usr/bin")
	if err := cw.Close(); err != nil {
		t.Fatal(err)
	}
	s := b.String()
	if len(s)%4 != 0 {
		t.Fatalf("archive length %d is not a multiple of 4", len(s))
	}
	if strings.Count(s, "070701") != 4 || !strings.Contains(s, "TRAILER!!!") || !strings.Contains(s, "hello") {
		t.Fatalf("unexpected archive %q", s)
	}
	// The file entry: mode 0100644, size 5.
	if !strings.Contains(s, "000081A4") || !strings.Contains(s, "00000005") {
		t.Fatalf("file header lacks mode or size: %q", s)
	}
}

// TestHungSince: the console notices the kernel's hung-task report once,
// also when the phrase is split across writes, and not before it appears.
func TestHungSince(t *testing.T) {
	for _, chunks := range [][]string{
		{"[ 242.61] INFO: task dmtarget.test:274 blocked for more than 120 seconds.\n"},
		{"[ 242.61] INFO: task x:1 blocked for mo", "re than 120 seconds.\n"},
		{"boot\n", "=== DMSYNC-GUEST READY\n", "[ 1.0] INFO: task y:2 bl", "ocked for more th", "an 120 seconds.\n"},
	} {
		var l lockedBuffer
		for i, c := range chunks {
			if !l.hungSince().IsZero() {
				t.Fatalf("%q: hung task reported after %d of %d chunks", chunks, i, len(chunks))
			}
			l.Write([]byte(c))
		}
		first := l.hungSince()
		if first.IsZero() {
			t.Fatalf("%q: hung task not noticed", chunks)
		}
		l.Write([]byte("more output\n"))
		if got := l.hungSince(); !got.Equal(first) {
			t.Fatalf("%q: first report time moved from %v to %v", chunks, first, got)
		}
	}
}
