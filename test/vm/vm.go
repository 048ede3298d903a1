// Package vm boots Debian's stock kernel in QEMU (software emulation) from
// an initramfs it builds itself, and runs dmsync's real-kernel tests inside.
//
// The build machines' own kernel has no device-mapper, so everything that
// talks to dm runs here: the harness builds static test binaries
// (go test -c, CGO_ENABLED=0) of the packages that have TestKernel tests,
// packs them with dmsync's binaries into an initramfs layer appended to a
// cached base image (busybox, dmsetup, cryptsetup, e2fsprogs, fio, the dm,
// crypt, ext4, loop and veth modules), attaches sparse virtio disks and
// boots. The guest's /init runs each test binary and prints markers; the
// host parses them, scans the kernel log for BUG/WARNING/oops, and kills
// the guest on timeout.
//
// Run the guest suite with `make test-guest` (or DMSYNC_VM=1 go test ./test/vm).
package vm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Config describes one guest boot.
type Config struct {
	// Root is the module root (where go.mod is).
	Root string
	// Packages are Go packages (relative to Root, e.g. "./logd") whose
	// tests matching Run are run in the guest, in this order.
	Packages []string
	// Run is the -test.run pattern passed to each test binary
	// (default "^TestKernel").
	Run string
	// Count, if above 1, runs each matching test that many times
	// (-test.count), to shake out a flaky real-kernel test.
	Count int
	// Binaries are main packages built into /dmsync/bin (e.g. "./cmd/dmsyncd").
	// A package directory without Go files is skipped with a note.
	Binaries []string
	// Disks is the number of sparse scratch disks (/dev/vda...), DiskSize
	// each (default 4 disks of 512 MiB).
	Disks    int
	DiskSize int64
	// MemoryMiB and CPUs size the guest (default 2048 MiB, 2 vCPUs).
	MemoryMiB int
	CPUs      int
	// Timeout bounds the whole boot (default 20 minutes).
	Timeout time.Duration
	// StallTimeout, if set, kills the guest when its console stays silent
	// that long after /init is ready (a hung test prints nothing).
	StallTimeout time.Duration
	// Console, if set, receives the guest console as it happens.
	Console io.Writer
	// Logf, if set, receives the harness's own progress notes.
	Logf func(format string, args ...any)
}

func (c *Config) ensureDefaults() {
	if c.Run == "" {
		c.Run = "^TestKernel"
	}
	if c.Disks == 0 {
		c.Disks = 4
	}
	if c.DiskSize == 0 {
		c.DiskSize = 512 << 20
	}
	if c.MemoryMiB == 0 {
		c.MemoryMiB = 2048
	}
	if c.CPUs == 0 {
		c.CPUs = 2
	}
	if c.Timeout == 0 {
		c.Timeout = 20 * time.Minute
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
}

// TestRun is the outcome of one test binary in the guest.
type TestRun struct {
	Name   string
	Exit   int // -1: the binary never finished (crash, hang)
	Output string
}

// Result is what one boot produced.
type Result struct {
	Console  string
	Tests    []TestRun
	Problems []string // kernel BUG/WARNING/oops lines, missing markers
	Booted   time.Duration
	Total    time.Duration
	PID      int // of the QEMU process, gone when Boot returns
}

// Failed reports the test runs that did not exit 0.
func (r *Result) Failed() []TestRun {
	var f []TestRun
	for _, t := range r.Tests {
		if t.Exit != 0 {
			f = append(f, t)
		}
	}
	return f
}

// Err summarises every failure of the boot in one error, or nil.
func (r *Result) Err() error {
	var msgs []string
	for _, t := range r.Failed() {
		if t.Exit < 0 {
			msgs = append(msgs, fmt.Sprintf("%s: never finished", t.Name))
		} else {
			msgs = append(msgs, fmt.Sprintf("%s: exit %d", t.Name, t.Exit))
		}
	}
	msgs = append(msgs, r.Problems...)
	if len(msgs) == 0 {
		return nil
	}
	return errors.New("guest: " + strings.Join(msgs, "; "))
}

// ConsoleTail returns the last n lines of the console.
func (r *Result) ConsoleTail(n int) string {
	lines := strings.Split(strings.TrimRight(r.Console, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ErrTimeout is returned (wrapped) when the guest outlives Config.Timeout.
var ErrTimeout = errors.New("guest timed out")

// Boot builds everything, boots the guest and waits for it to power off.
// A non-nil error means the guest could not be run or did not finish; test
// failures inside a finished guest are in Result.Err.
func Boot(ctx context.Context, cfg Config) (*Result, error) {
	cfg.ensureDefaults()
	start := time.Now()
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return nil, fmt.Errorf("qemu-system-x86_64 not found (run scripts/deps.sh): %w", err)
	}
	k, err := FindKernel(cfg.Root)
	if err != nil {
		return nil, err
	}
	cache := filepath.Join(cfg.Root, ".cache", "vm")
	base, err := baseImage(cache, k)
	if err != nil {
		return nil, fmt.Errorf("build base initramfs: %w", err)
	}
	work, err := os.MkdirTemp("", "dmsync-vm-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	initrd := filepath.Join(work, "initrd")
	if err := buildLayer(cfg, base, work, initrd); err != nil {
		return nil, err
	}
	cfg.Logf("initramfs ready after %v", time.Since(start).Round(time.Millisecond))

	args := []string{
		"-accel", "tcg,thread=multi", "-cpu", "max", "-machine", "q35",
		"-smp", strconv.Itoa(cfg.CPUs), "-m", strconv.Itoa(cfg.MemoryMiB),
		"-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio", "-monitor", "none",
		"-kernel", k.Image(), "-initrd", initrd,
		"-append", "console=ttyS0 loglevel=4 panic=-1 oops=panic rdinit=/init " + guestFlag,
	}
	for i := 0; i < cfg.Disks; i++ {
		disk := filepath.Join(work, fmt.Sprintf("disk%d.img", i))
		if err := makeSparse(disk, cfg.DiskSize); err != nil {
			return nil, err
		}
		args = append(args, "-drive", fmt.Sprintf("file=%s,if=virtio,format=raw,cache=unsafe,aio=threads,discard=unmap,detect-zeroes=unmap", disk))
	}

	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	cmd := exec.Command(qemu, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	var console lockedBuffer
	var out io.Writer = &console
	if cfg.Console != nil {
		out = io.MultiWriter(&console, cfg.Console)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start qemu: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	kill := func(why string) (*Result, error) {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		res := parseConsole(console.String())
		res.Total, res.PID = time.Since(start), cmd.Process.Pid
		return res, fmt.Errorf("%w: %s (killed qemu)", ErrTimeout, why)
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var waitErr error
wait:
	for {
		select {
		case waitErr = <-done:
			break wait
		case <-ctx.Done():
			return kill(fmt.Sprintf("no power-off after %v", cfg.Timeout))
		case <-tick.C:
			if cfg.StallTimeout > 0 && console.ready() && time.Since(console.last()) > cfg.StallTimeout {
				return kill(fmt.Sprintf("console silent for %v", cfg.StallTimeout))
			}
			// A task blocked for minutes (I/O that never completes) does not
			// recover: stop soon instead of waiting for the whole timeout,
			// leaving the in-guest test a while to report itself.
			if h := console.hungSince(); !h.IsZero() && time.Since(h) > HungGrace {
				return kill(fmt.Sprintf("the kernel reported a hung task %v ago", HungGrace))
			}
		}
	}
	res := parseConsole(console.String())
	res.Total, res.PID = time.Since(start), cmd.Process.Pid
	if waitErr != nil {
		return res, fmt.Errorf("qemu exited: %v", waitErr)
	}
	return res, nil
}

const guestFlag = "dmsync.guest=1"

// HungGrace is how long a guest may run on after its kernel reported a
// task blocked for more than 120 s before the guest is killed.
const HungGrace = 60 * time.Second

func makeSparse(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("scratch disk: %w", err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("scratch disk %s: %w", path, err)
	}
	return nil
}

var (
	markerRe  = regexp.MustCompile(`^=== DMSYNC-GUEST (BEGIN|END|BOOTED|READY|DONE|DMESG BEGIN|DMESG END|MODULES FAILED)\b ?(.*)$`)
	endRe     = regexp.MustCompile(`^(\S+) rc=(-?\d+)`)
	problemRe = regexp.MustCompile(`\b(BUG:|WARNING:|kernel BUG at|Oops:|general protection fault|Kernel panic|Call Trace:|blocked for more than \d+ seconds)`)
)

// parseConsole reads the markers that the guest's /init prints and scans
// the kernel's messages for trouble.
func parseConsole(console string) *Result {
	res := &Result{Console: console}
	var cur *TestRun
	var body strings.Builder
	inDmesg, done, ready := false, false, false
	seen := map[string]bool{}
	for _, raw := range strings.Split(console, "\n") {
		line := strings.TrimRight(raw, "\r")
		// The firmware leaves escape sequences without a newline in front
		// of /init's first line: a marker counts wherever it starts.
		if i := strings.Index(line, "=== DMSYNC-GUEST "); i > 0 {
			line = line[i:]
		}
		if m := markerRe.FindStringSubmatch(line); m != nil {
			switch m[1] {
			case "BOOTED":
				if f, err := strconv.ParseFloat(strings.Fields(m[2] + " 0")[0], 64); err == nil {
					res.Booted = time.Duration(f * float64(time.Second))
				}
			case "READY":
				ready = true
			case "MODULES FAILED":
				res.Problems = append(res.Problems, "modprobe failed: "+m[2])
			case "BEGIN":
				res.Tests = append(res.Tests, TestRun{Name: m[2], Exit: -1})
				cur = &res.Tests[len(res.Tests)-1]
				body.Reset()
			case "END":
				if e := endRe.FindStringSubmatch(m[2]); e != nil && cur != nil && cur.Name == e[1] {
					cur.Exit, _ = strconv.Atoi(e[2])
					cur.Output = body.String()
				}
				cur = nil
			case "DMESG BEGIN":
				inDmesg = true
			case "DMESG END":
				inDmesg = false
			case "DONE":
				done = true
			}
			continue
		}
		if cur != nil {
			body.WriteString(line)
			body.WriteByte('\n')
		}
		// Kernel messages reach the console directly (loglevel=4) and in
		// the final dmesg dump; only lines in the kernel's format count.
		if isKernelLine(line) && problemRe.MatchString(line) {
			p := "kernel: " + strings.TrimSpace(line)
			if !seen[p] {
				seen[p] = true
				res.Problems = append(res.Problems, p)
			}
		}
		_ = inDmesg
	}
	if cur != nil {
		cur.Output = body.String()
	}
	if !ready {
		res.Problems = append(res.Problems, "guest never reached /init's READY marker (kernel did not boot?)")
	} else if !done {
		res.Problems = append(res.Problems, "guest did not finish its plan (crash or hang)")
	}
	return res
}

var kernelLineRe = regexp.MustCompile(`^\[\s*\d+\.\d+\]`)

func isKernelLine(l string) bool { return kernelLineRe.MatchString(l) }

// lockedBuffer collects the console and remembers when it last grew and
// whether /init said it is ready.
type lockedBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	lastW   time.Time
	isReady bool
	scanned int       // bytes of b already searched for a hung task
	hungAt  time.Time // when the kernel first reported a hung task
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lastW = time.Now()
	return l.b.Write(p)
}

// hungSince returns when the kernel first reported a task blocked for
// minutes (zero if it has not).
func (l *lockedBuffer) hungSince() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.hungAt.IsZero() {
		const phrase = "blocked for more than"
		from := max(0, l.scanned-len(phrase))
		if bytes.Contains(l.b.Bytes()[from:], []byte(phrase)) {
			l.hungAt = time.Now()
		}
		l.scanned = l.b.Len()
	}
	return l.hungAt
}

func (l *lockedBuffer) ready() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.isReady {
		l.isReady = bytes.Contains(l.b.Bytes(), []byte("=== DMSYNC-GUEST READY"))
	}
	return l.isReady
}

func (l *lockedBuffer) last() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastW
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
