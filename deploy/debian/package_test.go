package debian

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer collects the daemon's log for the test to print.
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

func need(t *testing.T, tools ...string) {
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed: the package is not built here", tool)
		}
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// TestPackageInstallsAndRuns builds the .deb (scripts/deb.sh), installs it
// with dpkg into a scratch root (its maintainer scripts run too, and must
// leave the running system alone), and runs the installed daemon and CLI:
// --version carries the stamped version, and the daemon (without the
// kernel connector) answers `dmsync status`.
func TestPackageInstallsAndRuns(t *testing.T) {
	need(t, "dpkg", "dpkg-deb", "go", "help2man", "git")
	if testing.Short() {
		t.Skip("-short: building the package takes a while")
	}
	const version = "0.0.1~test"
	out := t.TempDir()
	cmd := exec.Command("bash", "../../scripts/deb.sh", out)
	cmd.Env = append(os.Environ(), "DMSYNC_VERSION="+version, "DMSYNC_DEB_COMPRESS=-Zgzip -z1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("scripts/deb.sh: %v\n%s", err, stderr.String())
	}
	deb := strings.TrimSpace(string(b))
	if filepath.Base(deb) != "dmsync_"+version+"_"+strings.TrimSpace(run(t, "dpkg", "--print-architecture"))+".deb" {
		t.Fatalf("package %q", deb)
	}
	t.Logf("built %s", deb)

	// A scratch root with an empty dpkg database.
	root := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"var/lib/dpkg/status", "var/lib/dpkg/available"} {
		if err := os.WriteFile(filepath.Join(root, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dpkg := func(args ...string) string {
		return run(t, "dpkg", append([]string{"--root=" + root, "--force-script-chrootless", "--force-depends",
			"--log=" + filepath.Join(root, "dpkg.log")}, args...)...)
	}
	dpkg("-i", deb)
	dpkg("-i", deb) // an upgrade: postinst configure with the old version
	if st := run(t, "dpkg-query", "--admindir="+filepath.Join(root, "var/lib/dpkg"), "-W", "-f=${Status} ${Version}", "dmsync"); st != "install ok installed "+version {
		t.Fatalf("dpkg status %q", st)
	}
	for _, f := range []string{
		"usr/sbin/dmsyncd", "usr/sbin/dmsync", "lib/systemd/system/dmsyncd.service", "usr/lib/modules-load.d/dmsync.conf",
		"usr/share/man/man8/dmsyncd.8.gz", "usr/share/man/man8/dmsync.8.gz", "usr/lib/dmsync/mirrors-live",
		"usr/share/doc/dmsync/copyright", "etc/dmsync/events.d",
		"usr/share/man/man8/dmsync-status.8.gz", "usr/share/bash-completion/completions/dmsync", // from the cobra CLI
	} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Errorf("not installed: %v", err)
		}
	}
	unit, err := os.ReadFile(filepath.Join(root, "lib/systemd/system/dmsyncd.service"))
	if err != nil || !regexp.MustCompile(`(?m)^ExecStart=/usr/sbin/dmsyncd `).Match(unit) || !bytes.Contains(unit, []byte("SystemCallFilter=")) {
		t.Fatalf("packaged unit: %v\n%s", err, unit)
	}

	sbin := filepath.Join(root, "usr/sbin")
	if v := run(t, filepath.Join(sbin, "dmsyncd"), "--version"); strings.TrimSpace(v) != "dmsyncd "+version {
		t.Fatalf("dmsyncd --version: %q, want the stamped %q", v, version)
	}

	if v := run(t, filepath.Join(sbin, "dmsync"), "--version"); !strings.Contains(v, version) {
		t.Fatalf("dmsync --version: %q, want the stamped %q", v, version)
	}

	state := t.TempDir()
	sock := filepath.Join(state, "admin.sock")
	id := strings.Fields(run(t, filepath.Join(sbin, "dmsync"), "init", "--state-dir", filepath.Join(state, "lib")))[0]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	d := exec.CommandContext(ctx, filepath.Join(sbin, "dmsyncd"), "--state-dir", filepath.Join(state, "lib"), "--no-connector",
		"--admin-socket", sock, "--events-dir", filepath.Join(state, "events.d"))
	dlog := &syncBuffer{}
	d.Stderr = dlog
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = d.Process.Signal(os.Interrupt)
		if err := d.Wait(); err != nil {
			t.Errorf("installed dmsyncd: %v\n%s", err, dlog.String())
		}
	}()
	var status string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		out, err := exec.Command(filepath.Join(sbin, "dmsync"), "--socket", sock, "status").CombinedOutput()
		if err == nil {
			status = string(out)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dmsync status never answered: %v %s\ndaemon: %s", err, out, dlog.String())
		}
	}
	if !strings.Contains(status, "node "+id) {
		t.Fatalf("status does not show the node id %s:\n%s", id, status)
	}
	t.Logf("installed dmsync status:\n%s", strings.TrimSpace(status))
}

// TestMirrorsLive checks the maintainer scripts' guard with a fake dmsetup:
// a loaded mirror with a userspace log is live (exit 0), a core-log mirror
// or none is not (1), and a failing dmsetup means "cannot tell" (2).
func TestMirrorsLive(t *testing.T) {
	need(t, "sh")
	control := filepath.Join(t.TempDir(), "control") // stands in for /dev/mapper/control
	if err := os.WriteFile(control, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, dmsetup string
		want          int
	}{
		{"userspace mirror", `echo "vol-mirror: 0 917504 mirror userspace 4 dmsync-1 clustered-disk 1 4096 2 254:0 0 254:16 0 1 handle_errors"`, 0},
		{"core mirror", `echo "m: 0 2048 mirror core 2 1024 nosync 2 8:16 0 8:32 0 1 handle_errors"`, 1},
		{"no mirror", `echo "No devices found"`, 1},
		{"dmsetup fails", `exit 1`, 2},
		{"no device-mapper", "", 1},
	} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "dmsetup"), []byte("#!/bin/sh\n"+c.dmsetup+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("sh", "mirrors-live")
		ctl := control
		if c.dmsetup == "" {
			ctl = filepath.Join(dir, "absent")
		}
		cmd.Env = append(os.Environ(), "PATH="+dir+":"+os.Getenv("PATH"), "DMSYNC_DM_CONTROL="+ctl)
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != c.want {
			t.Errorf("%s: exit %d, want %d", c.name, code, c.want)
		}
	}
}
