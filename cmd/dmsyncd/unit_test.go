package main

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const unitFile = "../../deploy/dmsyncd.service"

// maxExposure is the `systemd-analyze security` score the unit must keep
// (it was 9.5 UNSAFE before its sandbox; 2.5 with it).
const maxExposure = 3.0

// TestUnitSecurityScore scores the shipped unit offline.
func TestUnitSecurityScore(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed (Debian package systemd)")
	}
	out, err := exec.Command(sa, "security", "--offline=true", "--no-pager", unitFile).CombinedOutput()
	m := regexp.MustCompile(`Overall exposure level for dmsyncd.service: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	score, _ := strconv.ParseFloat(string(m[1]), 64)
	t.Logf("systemd-analyze security: exposure %.1f", score)
	if score > maxExposure {
		t.Fatalf("unit exposure %.1f, want at most %.1f:\n%s", score, maxExposure, out)
	}
}

// unitSyscallFilter reads the unit's SystemCallFilter= lines: the allowed
// groups or names, and the denied ones (lines starting with ~).
func unitSyscallFilter(t *testing.T) (allow, deny []string) {
	f, err := os.Open(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "SystemCallFilter=")
		if !ok {
			continue
		}
		if d, ok := strings.CutPrefix(v, "~"); ok {
			deny = append(deny, strings.Fields(d)...)
		} else {
			allow = append(allow, strings.Fields(v)...)
		}
	}
	if len(allow) == 0 {
		t.Fatal("the unit has no SystemCallFilter= allow list")
	}
	return allow, deny
}

// expandSyscalls resolves syscall groups with systemd-analyze.
func expandSyscalls(t *testing.T, names []string, seen map[string]bool) {
	for _, n := range names {
		if !strings.HasPrefix(n, "@") {
			seen[n] = true
			continue
		}
		out, err := exec.Command("systemd-analyze", "syscall-filter", "--no-pager", n).Output()
		if err != nil {
			t.Fatalf("systemd-analyze syscall-filter %s: %v", n, err)
		}
		var sub []string
		for i, line := range strings.Split(string(out), "\n") {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") || (i == 0 && line == n) {
				continue
			}
			sub = append(sub, line)
		}
		expandSyscalls(t, sub, seen)
	}
}

// TestUnitSyscallFilterAllowsDaemon runs the daemon under strace (without
// the kernel connector, with --http, answering the admin API) and checks
// every system call it made against the unit's SystemCallFilter=: one the
// filter refuses would fail with EPERM under systemd.
func TestUnitSyscallFilterAllowsDaemon(t *testing.T) {
	strace, err := exec.LookPath("strace")
	if err != nil {
		t.Skip("strace not installed")
	}
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze not installed (Debian package systemd)")
	}
	allowNames, denyNames := unitSyscallFilter(t)
	allow, deny := map[string]bool{}, map[string]bool{}
	expandSyscalls(t, allowNames, allow)
	expandSyscalls(t, denyNames, deny)

	dir := t.TempDir()
	trace := filepath.Join(dir, "trace")
	addr := freeAddr(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, strace, "-f", "-qq", "-o", trace, os.Args[0])
	cmd.Env = append(os.Environ(), "DMSYNCD_TEST_MAIN=1", "DMSYNCD_TEST_ARGS=--state-dir "+filepath.Join(dir, "state")+
		" --no-connector --admin-socket "+filepath.Join(dir, "admin.sock")+" --http "+addr+" --events-dir "+filepath.Join(dir, "ev"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	get(t, "http://"+addr+"/metrics")
	get(t, "http://"+addr+"/api/state")
	if resp, err := http.Get("http://" + addr + "/"); err == nil {
		resp.Body.Close()
	}
	if c, err := net.Dial("unix", filepath.Join(dir, "admin.sock")); err == nil { // the admin socket's accept
		c.Close()
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) // strace and the daemon: a clean stop
	_ = cmd.Wait()

	data, err := os.ReadFile(trace)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^\d+ +([a-z0-9_]+)\(`)
	used := map[string]bool{}
	for _, m := range re.FindAllStringSubmatch(string(data), -1) {
		used[m[1]] = true
	}
	if len(used) < 20 {
		t.Fatalf("only %d system calls traced: %v", len(used), used)
	}
	for sc := range used {
		// execve of the test binary itself happens before systemd's filter
		// applies to dmsyncd's own execve; the rest is the daemon's.
		if !allow[sc] || deny[sc] {
			t.Errorf("dmsyncd calls %s, which the unit's SystemCallFilter= refuses", sc)
		}
	}
	if !t.Failed() {
		t.Logf("%d distinct system calls, all allowed by the unit's filter", len(used))
	}
}
