package vm

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The guest tests boot QEMU; they run when DMSYNC_VM=1 (make test sets it)
// and are skipped otherwise, so a plain `go test ./...` stays quick.
func requireVM(t *testing.T) Config {
	t.Helper()
	if os.Getenv("DMSYNC_VM") != "1" {
		t.Skip("boots a QEMU guest: set DMSYNC_VM=1 (make test does)")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Root: root, Logf: t.Logf}
	if os.Getenv("DMSYNC_VM_CONSOLE") == "1" {
		cfg.Console = os.Stderr
	}
	return cfg
}

// kernelTestPackages finds every package with a TestKernel test, except the
// harness's own deliberately failing ones.
func kernelTestPackages(t *testing.T, root string) []string {
	t.Helper()
	set := map[string]bool{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			n := d.Name()
			if n == ".cache" || n == ".git" || n == "testdata" || p == filepath.Join(root, "test", "vm", "internal") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if strings.Contains(string(b), "\nfunc TestKernel") {
			rel, _ := filepath.Rel(root, filepath.Dir(p))
			set["./"+filepath.ToSlash(rel)] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	pkgs := make([]string, 0, len(set))
	for p := range set {
		pkgs = append(pkgs, p)
	}
	sort.Strings(pkgs)
	return pkgs
}

func report(t *testing.T, res *Result) {
	t.Helper()
	if res == nil {
		return
	}
	for _, tr := range res.Tests {
		t.Logf("guest %s: exit %d", tr.Name, tr.Exit)
	}
	for _, tr := range res.Failed() {
		t.Logf("---- output of %s ----\n%s", tr.Name, tr.Output)
	}
	if res.Err() != nil {
		t.Logf("---- guest console (last 80 lines) ----\n%s", res.ConsoleTail(80))
	}
}

// TestGuest boots the guest once and runs every TestKernel test of the
// project in it (or only those of the packages in DMSYNC_VM_PKGS, e.g.
// DMSYNC_VM_PKGS="./logd ./dmtarget"; DMSYNC_VM_RUN narrows the -test.run
// pattern inside the guest and DMSYNC_VM_COUNT repeats each test). It fails
// on any in-guest failure, on a kernel BUG/WARNING/oops, and on a timeout.
func TestGuest(t *testing.T) {
	cfg := requireVM(t)
	cfg.Packages = kernelTestPackages(t, cfg.Root)
	if only := os.Getenv("DMSYNC_VM_PKGS"); only != "" {
		cfg.Packages = strings.Fields(only)
	}
	if run := os.Getenv("DMSYNC_VM_RUN"); run != "" {
		cfg.Run = run
	}
	if n := os.Getenv("DMSYNC_VM_COUNT"); n != "" {
		c, err := strconv.Atoi(n)
		if err != nil || c < 1 {
			t.Fatalf("DMSYNC_VM_COUNT=%q: want a positive number of runs per test", n)
		}
		cfg.Count = c
	}
	cfg.Binaries = []string{"./cmd/dmsyncd", "./cmd/dmsync"}
	cfg.Timeout = 50 * time.Minute
	t.Logf("guest packages: %v", cfg.Packages)
	res, err := Boot(context.Background(), cfg)
	report(t, res)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("guest reached /init after %v; whole run %v", res.Booted.Round(time.Millisecond), res.Total.Round(time.Second))
	if len(res.Tests) != len(cfg.Packages) {
		t.Errorf("guest ran %d test binaries, want %d", len(res.Tests), len(cfg.Packages))
	}
	if err := res.Err(); err != nil {
		t.Fatal(err)
	}
	for _, tr := range res.Tests {
		if !strings.Contains(tr.Output, "--- PASS") && !strings.Contains(tr.Output, "--- SKIP") {
			t.Errorf("guest %s ran no test:\n%s", tr.Name, tr.Output)
		}
		if strings.Contains(tr.Output, "--- SKIP") {
			t.Logf("guest %s skipped tests:\n%s", tr.Name, grepLines(tr.Output, "--- SKIP", "    "))
		}
	}
}

// TestGuestReportsFailure proves the harness cannot go green falsely: a
// test that fails in the guest fails the run, and the passing test next to
// it is still reported as passing.
func TestGuestReportsFailure(t *testing.T) {
	cfg := requireVM(t)
	cfg.Packages = []string{"./test/vm/internal/failing"}
	cfg.Run = "^TestKernelMust(Fail|Pass)$"
	cfg.Disks = 1
	cfg.Timeout = 5 * time.Minute
	res, err := Boot(context.Background(), cfg)
	if err != nil {
		report(t, res)
		t.Fatal(err)
	}
	if res.Err() == nil {
		report(t, res)
		t.Fatal("a deliberately failing guest test was not reported as a failure")
	}
	if len(res.Tests) != 1 || res.Tests[0].Exit != 1 {
		t.Fatalf("want one test binary with exit 1, got %+v", res.Tests)
	}
	out := res.Tests[0].Output
	for _, want := range []string{"--- FAIL: TestKernelMustFail", "--- PASS: TestKernelMustPass", "deliberate failure"} {
		if !strings.Contains(out, want) {
			t.Errorf("guest output lacks %q:\n%s", want, out)
		}
	}
	if len(res.Problems) != 0 {
		t.Errorf("unexpected kernel problems: %v", res.Problems)
	}
}

// TestGuestTimeout proves a hung guest is killed at the timeout, reported
// as such, and leaves no QEMU process behind.
func TestGuestTimeout(t *testing.T) {
	cfg := requireVM(t)
	cfg.Packages = []string{"./test/vm/internal/failing"}
	cfg.Run = "^TestKernelHang$"
	cfg.Disks = 1
	cfg.Timeout = 10 * time.Minute
	cfg.StallTimeout = 20 * time.Second
	res, err := Boot(context.Background(), cfg)
	if !errors.Is(err, ErrTimeout) {
		report(t, res)
		t.Fatalf("Boot: %v, want ErrTimeout", err)
	}
	if res == nil || len(res.Tests) != 1 || res.Tests[0].Exit != -1 {
		t.Fatalf("want one unfinished test binary, got %+v", res)
	}
	if err := syscall.Kill(res.PID, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("qemu (pid %d) still there after the timeout: kill(0) = %v", res.PID, err)
	}
}

func grepLines(s, sub, prefix string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) || (prefix != "" && strings.HasPrefix(l, prefix) && len(out) > 0) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestDemo runs only the user story and streams the guest console: this is
// what `make demo` shows.
func TestDemo(t *testing.T) {
	cfg := requireVM(t)
	if os.Getenv("DMSYNC_DEMO") != "1" {
		t.Skip("the demo runs with make demo (DMSYNC_DEMO=1); make test runs the same story inside TestGuest")
	}
	cfg.Packages = []string{"./test/demo"}
	cfg.Run = "^TestKernelStory$"
	cfg.Binaries = []string{"./cmd/dmsyncd", "./cmd/dmsync"}
	cfg.Console = &demoFilter{w: os.Stdout}
	cfg.Timeout = 45 * time.Minute
	res, err := Boot(context.Background(), cfg)
	if err != nil {
		report(t, res)
		t.Fatal(err)
	}
	if err := res.Err(); err != nil {
		report(t, res)
		t.Fatal(err)
	}
	t.Logf("demo done: guest booted in %v, whole run %v", res.Booted.Round(time.Millisecond), res.Total.Round(time.Second))
}

// demoFilter passes the guest console through without the kernel's own
// messages, so the demo's steps stand out.
type demoFilter struct {
	w       io.Writer
	partial []byte
	started bool // past the firmware's and kernel's boot chatter
}

func (d *demoFilter) Write(p []byte) (int, error) {
	d.partial = append(d.partial, p...)
	for {
		i := bytes.IndexByte(d.partial, '\n')
		if i < 0 {
			break
		}
		line := d.partial[:i+1]
		d.started = d.started || bytes.HasPrefix(line, []byte("=== DMSYNC-GUEST"))
		if d.started && !isKernelLine(string(line)) && !bytes.HasPrefix(line, []byte("=== DMSYNC-GUEST DMESG")) {
			d.w.Write(line)
		}
		d.partial = d.partial[i+1:]
	}
	return len(p), nil
}
