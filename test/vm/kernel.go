package vm

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Kernel is an unpacked Debian linux-image package: the kernel image and
// its modules (with modules.dep made by depmod).
type Kernel struct {
	// Dir is the package's unpacked root (holding boot/ and lib/modules/).
	Dir string
	// Version is the kernel release, e.g. 6.1.0-56-amd64.
	Version string
}

// FindKernel returns the guest kernel that scripts/deps.sh unpacked under
// root/.cache/kernel.
func FindKernel(root string) (Kernel, error) {
	kdir := filepath.Join(root, ".cache", "kernel")
	b, err := os.ReadFile(filepath.Join(kdir, "current"))
	if err != nil {
		return Kernel{}, fmt.Errorf("no guest kernel in %s (run scripts/deps.sh, or make deps): %w", kdir, err)
	}
	k := Kernel{Dir: filepath.Join(kdir, strings.TrimSpace(string(b))), Version: strings.TrimSpace(string(b))}
	if _, err := os.Stat(k.Image()); err != nil {
		return Kernel{}, fmt.Errorf("guest kernel image missing (run scripts/deps.sh again): %w", err)
	}
	if _, err := os.Stat(filepath.Join(k.ModulesDir(), "modules.dep")); err != nil {
		return Kernel{}, fmt.Errorf("guest kernel %s has no modules.dep (run scripts/deps.sh again): %w", k.Version, err)
	}
	return k, nil
}

// Image is the path of the kernel image (vmlinuz).
func (k Kernel) Image() string { return filepath.Join(k.Dir, "boot", "vmlinuz-"+k.Version) }

// ModulesDir is the path of lib/modules/<version>.
func (k Kernel) ModulesDir() string { return filepath.Join(k.Dir, "lib", "modules", k.Version) }

// moduleClosure returns the module files (relative to ModulesDir) of the
// named modules and everything they depend on. A module built into the
// kernel is skipped; an unknown one is an error.
func (k Kernel) moduleClosure(names []string) ([]string, error) {
	deps, err := readModulesDep(filepath.Join(k.ModulesDir(), "modules.dep"))
	if err != nil {
		return nil, err
	}
	builtin := map[string]bool{}
	if b, err := os.ReadFile(filepath.Join(k.ModulesDir(), "modules.builtin")); err == nil {
		for _, l := range strings.Fields(string(b)) {
			builtin[modName(l)] = true
		}
	}
	byName := map[string]string{}
	for path := range deps {
		byName[modName(path)] = path
	}
	seen := map[string]bool{}
	var out []string
	var visit func(path string)
	visit = func(path string) {
		if seen[path] {
			return
		}
		seen[path] = true
		for _, d := range deps[path] {
			visit(d)
		}
		out = append(out, path)
	}
	for _, n := range names {
		n = strings.ReplaceAll(n, "-", "_")
		p, ok := byName[n]
		if !ok {
			if builtin[n] {
				continue
			}
			return nil, fmt.Errorf("kernel %s has no module %q (is it built in? check boot/config-%s)", k.Version, n, k.Version)
		}
		visit(p)
	}
	return out, nil
}

// readModulesDep parses depmod's modules.dep: "path: dep dep ...".
func readModulesDep(path string) (map[string][]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	deps := map[string][]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		mod, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		deps[mod] = strings.Fields(rest)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return deps, nil
}

// modName turns "kernel/drivers/md/dm-mirror.ko" into "dm_mirror".
func modName(path string) string {
	b := filepath.Base(path)
	if i := strings.Index(b, ".ko"); i >= 0 {
		b = b[:i]
	}
	return strings.ReplaceAll(b, "-", "_")
}
