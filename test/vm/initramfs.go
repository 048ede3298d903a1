package vm

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

//go:embed init.sh
var initScript []byte

// baseFormat is bumped whenever the layout of the base image changes, so
// cached images built by an older harness are not reused.
const baseFormat = "dmsync-base-3"

// GuestTools are the host programs copied into the guest with their shared
// libraries. Busybox provides the rest of the userland.
var GuestTools = []string{
	"/usr/sbin/dmsetup", "/usr/sbin/cryptsetup", "/usr/sbin/mke2fs", "/usr/sbin/e2fsck",
	"/usr/sbin/dumpe2fs", "/usr/bin/fio", "/usr/bin/kmod", "/usr/bin/ip", "/usr/sbin/tc",
}

// toolLinks are extra names of GuestTools, as on Debian.
var toolLinks = map[string]string{
	"/usr/sbin/mkfs.ext4": "mke2fs", "/usr/sbin/fsck.ext4": "e2fsck",
	"/usr/sbin/modprobe": "../bin/kmod", "/usr/sbin/insmod": "../bin/kmod",
	"/usr/sbin/rmmod": "../bin/kmod", "/usr/sbin/lsmod": "../bin/kmod",
	"/usr/sbin/depmod": "../bin/kmod", "/usr/sbin/modinfo": "../bin/kmod",
}

// GuestModules are loaded by the guest's /init, with their dependencies.
var GuestModules = []string{
	"virtio_pci", "virtio_blk", "dm_mod", "dm_mirror", "dm_log", "dm_region_hash", "dm_log_userspace",
	"dm_crypt", "dm_flakey", "dm_zero", "dm_delay", "dm_era", "dm_log_writes", "ext4",
	"crc32c_generic", "crc32c_intel", "loop", "veth", "xts", "aesni_intel", "essiv",
	"af_alg", "algif_skcipher", "algif_hash", "sha256_ssse3", "sch_tbf", "sch_netem",
}

// baseImage returns the path of the cached base initramfs (busybox, tools,
// libraries, kernel modules, /init) for the kernel, building it when any of
// its inputs changed.
func baseImage(cacheDir string, k Kernel) (string, error) {
	files := map[string]string{} // guest path -> host path
	var addErr error
	addTool := func(path string) {
		if addErr != nil {
			return
		}
		if _, err := os.Stat(path); err != nil {
			addErr = fmt.Errorf("guest tool %s: %w (run scripts/deps.sh to install the guest's packages)", path, err)
			return
		}
		files[path] = path
		libs, err := sharedLibs(path)
		if err != nil {
			addErr = err
			return
		}
		for _, l := range libs {
			files[l] = l
		}
	}
	for _, t := range GuestTools {
		addTool(t)
	}
	if addErr != nil {
		return "", addErr
	}
	busybox := "/usr/bin/busybox"
	if _, err := os.Stat(busybox); err != nil {
		return "", fmt.Errorf("busybox: %w (apt-get install busybox-static, or run scripts/deps.sh)", err)
	}
	files[busybox] = busybox
	if _, err := os.Stat("/etc/mke2fs.conf"); err == nil {
		files["/etc/mke2fs.conf"] = "/etc/mke2fs.conf"
	}

	mods, err := k.moduleClosure(GuestModules)
	if err != nil {
		return "", err
	}
	modRoot := filepath.Join("/lib/modules", k.Version)
	for _, m := range mods {
		files[filepath.Join(modRoot, m)] = filepath.Join(k.ModulesDir(), m)
	}
	for _, f := range []string{"modules.dep", "modules.dep.bin", "modules.alias", "modules.alias.bin",
		"modules.symbols", "modules.symbols.bin", "modules.builtin", "modules.builtin.bin",
		"modules.builtin.alias.bin", "modules.softdep", "modules.order"} {
		if _, err := os.Stat(filepath.Join(k.ModulesDir(), f)); err == nil {
			files[filepath.Join(modRoot, f)] = filepath.Join(k.ModulesDir(), f)
		}
	}

	// The cache key covers every input: paths, sizes, modification times,
	// the init script, the module list and the harness format.
	guestPaths := make([]string, 0, len(files))
	for g := range files {
		guestPaths = append(guestPaths, g)
	}
	sort.Strings(guestPaths)
	h := sha256.New()
	fmt.Fprintln(h, baseFormat, k.Version, strings.Join(GuestModules, ","))
	h.Write(initScript)
	for _, g := range guestPaths {
		st, err := os.Stat(files[g])
		if err != nil {
			return "", fmt.Errorf("initramfs input %s: %w", files[g], err)
		}
		fmt.Fprintln(h, g, files[g], st.Size(), st.ModTime().UnixNano())
	}
	key := hex.EncodeToString(h.Sum(nil))[:16]
	out := filepath.Join(cacheDir, "base-"+k.Version+"-"+key+".cpio.gz")
	if _, err := os.Stat(out); err == nil {
		now := time.Now()
		_ = os.Chtimes(out, now, now) // in use: keep it in the cache
		return out, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", fmt.Errorf("initramfs cache %s: %w", cacheDir, err)
	}

	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	cw := &cpioWriter{w: zw}
	dirs := map[string]bool{}
	var mkdirs func(string)
	mkdirs = func(d string) {
		if d == "/" || d == "." || dirs[d] {
			return
		}
		mkdirs(filepath.Dir(d))
		dirs[d] = true
		cw.Dir(strings.TrimPrefix(d, "/"), 0o755)
	}
	// Debian's merged /usr: /bin, /sbin, /lib, /lib64 are links into /usr.
	for _, d := range []string{"/usr/bin", "/usr/sbin", "/usr/lib", "/usr/lib64", "/etc", "/proc", "/sys",
		"/dev", "/tmp", "/run", "/root", "/var", "/mnt", "/dmsync/bin", "/dmsync/tests"} {
		mkdirs(d)
	}
	for _, l := range []string{"bin", "sbin", "lib", "lib64"} {
		cw.Symlink(l, "usr/"+l)
	}
	cw.File("init", 0o755, initScript)
	cw.File("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\n"))
	cw.File("etc/group", 0o644, []byte("root:x:0:\n"))
	cw.File("dmsync/modules", 0o644, []byte(strings.Join(GuestModules, " ")+"\n"))
	for _, g := range guestPaths {
		gp := usrPath(g)
		mkdirs(filepath.Dir(gp))
		data, err := os.ReadFile(files[g])
		if err != nil {
			return "", fmt.Errorf("initramfs input %s: %w", files[g], err)
		}
		st, _ := os.Stat(files[g])
		cw.File(strings.TrimPrefix(gp, "/"), uint32(st.Mode().Perm()), data)
	}
	// Busybox applets, except where a real tool has the name.
	applets, err := exec.Command(busybox, "--list-full").Output()
	if err != nil {
		return "", fmt.Errorf("busybox --list-full: %w", err)
	}
	taken := map[string]bool{}
	for _, g := range guestPaths {
		taken[filepath.Base(g)] = true
	}
	for l := range toolLinks {
		taken[filepath.Base(l)] = true
	}
	for l, target := range toolLinks {
		cw.Symlink(strings.TrimPrefix(l, "/"), target)
	}
	seen := map[string]bool{}
	for _, a := range strings.Fields(string(applets)) {
		name := filepath.Base(a)
		if taken[name] || seen[name] || name == "busybox" {
			continue
		}
		seen[name] = true
		cw.Symlink("usr/bin/"+name, "busybox")
	}
	if err := cw.Close(); err != nil {
		return "", fmt.Errorf("write initramfs: %w", err)
	}
	if err := zw.Close(); err != nil {
		return "", fmt.Errorf("write initramfs: %w", err)
	}
	// Pad to 4 bytes so that a per-run archive can be appended.
	for buf.Len()%4 != 0 {
		buf.WriteByte(0)
	}
	// Two harnesses may build at once: write a private file, then rename.
	tmp, err := os.CreateTemp(cacheDir, "base-*.tmp")
	if err != nil {
		return "", fmt.Errorf("initramfs cache %s: %w", cacheDir, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(buf.Bytes()); err != nil {
		tmp.Close()
		return "", fmt.Errorf("write initramfs %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("write initramfs %s: %w", tmp.Name(), err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return "", err
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return "", err
	}
	// Images built from other inputs are stale, but another checkout
	// sharing the cache may be booting one right now: remove only those
	// unused for a day.
	old, _ := filepath.Glob(filepath.Join(cacheDir, "base-*.cpio.gz"))
	for _, o := range old {
		if st, err := os.Stat(o); err == nil && o != out && time.Since(st.ModTime()) > 24*time.Hour {
			os.Remove(o)
		}
	}
	return out, nil
}

// usrPath maps a host path to its place in the guest's merged /usr.
func usrPath(p string) string {
	for _, d := range []string{"/bin/", "/sbin/", "/lib/", "/lib64/"} {
		if strings.HasPrefix(p, d) {
			return "/usr" + p
		}
	}
	return p
}

var lddLine = regexp.MustCompile(`(?:=>\s*)?(/\S+)\s+\(0x`)

// sharedLibs lists the shared libraries a dynamic executable loads, as ldd
// reports them (a static executable has none).
func sharedLibs(path string) ([]string, error) {
	out, err := exec.Command("ldd", path).CombinedOutput()
	if err != nil {
		if bytes.Contains(out, []byte("not a dynamic executable")) {
			return nil, nil
		}
		return nil, fmt.Errorf("ldd %s: %v: %s", path, err, out)
	}
	var libs []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if strings.Contains(sc.Text(), "not found") {
			return nil, fmt.Errorf("ldd %s: %s (install the library's package)", path, strings.TrimSpace(sc.Text()))
		}
		if m := lddLine.FindStringSubmatch(sc.Text()); m != nil {
			libs = append(libs, m[1])
		}
	}
	return libs, nil
}
