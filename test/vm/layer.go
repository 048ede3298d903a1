package vm

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// buildLayer builds the per-run part of the initramfs — dmsync's binaries,
// the static test binaries and the plan /init follows — and writes base
// followed by it to out.
func buildLayer(cfg Config, base, work, out string) error {
	bin := filepath.Join(work, "bin")
	tests := filepath.Join(work, "tests")
	for _, d := range []string{bin, tests} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	env := append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	goRun := func(args ...string) error {
		cmd := exec.Command("go", args...)
		cmd.Dir, cmd.Env = cfg.Root, env
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	var binaries []string
	for _, p := range cfg.Binaries {
		if !hasGoFiles(filepath.Join(cfg.Root, p)) {
			cfg.Logf("binary %s: no Go files yet, not built", p)
			continue
		}
		name := filepath.Base(p)
		if err := goRun("build", "-o", filepath.Join(bin, name), p); err != nil {
			return fmt.Errorf("build guest binary: %w", err)
		}
		binaries = append(binaries, name)
	}
	var plan strings.Builder
	var testBins []string
	for _, p := range cfg.Packages {
		name := strings.ReplaceAll(strings.Trim(strings.TrimPrefix(p, "./"), "/"), "/", "_") + ".test"
		dst := filepath.Join(tests, name)
		if err := goRun("test", "-c", "-o", dst, p); err != nil {
			return fmt.Errorf("build guest test binary: %w", err)
		}
		if _, err := os.Stat(dst); err != nil {
			cfg.Logf("package %s has no tests, nothing to run", p)
			continue
		}
		testBins = append(testBins, name)
		// -test.timeout makes a hung test report itself (with all goroutine
		// stacks) before the host kills the whole guest.
		count := ""
		if cfg.Count > 1 {
			count = fmt.Sprintf(" -test.count %d", cfg.Count)
		}
		fmt.Fprintf(&plan, "%s\t/dmsync/tests/%s -test.v -test.run '%s'%s -test.timeout %s\n",
			strings.TrimSuffix(name, ".test"), name, cfg.Run, count, guestTestTimeout(cfg))
	}

	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	bf, err := os.Open(base)
	if err != nil {
		return err
	}
	defer bf.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	if _, err := io.Copy(w, bf); err != nil {
		return fmt.Errorf("write initrd: %w", err)
	}
	cw := &cpioWriter{w: w}
	add := func(guest, host string) error {
		data, err := os.ReadFile(host)
		if err != nil {
			return err
		}
		cw.File(guest, 0o755, data)
		return nil
	}
	for _, b := range binaries {
		if err := add("dmsync/bin/"+b, filepath.Join(bin, b)); err != nil {
			return err
		}
	}
	for _, t := range testBins {
		if err := add("dmsync/tests/"+t, filepath.Join(tests, t)); err != nil {
			return err
		}
	}
	cw.File("dmsync/plan", 0o644, []byte(plan.String()))
	cw.File("dmsync/disks", 0o644, []byte(fmt.Sprintf("%d\n", cfg.Disks)))
	if err := cw.Close(); err != nil {
		return fmt.Errorf("write initrd: %w", err)
	}
	return w.Flush()
}

// guestTestTimeout leaves a minute of the boot's budget for booting and
// the kernel-log dump.
func guestTestTimeout(cfg Config) string {
	t := cfg.Timeout - 1*60e9
	if t < 60e9 {
		t = 60e9
	}
	return t.String()
}

func hasGoFiles(dir string) bool {
	m, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	return len(m) > 0
}
