package dmtarget

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
)

// dm uuid prefixes of the devices dmsync creates; the log uuid follows.
const (
	UUIDPrefix        = "DMSYNC-"
	uuidPrefixMirror  = "DMSYNC-MIRROR-"
	uuidPrefixSink    = "DMSYNC-SINK-"
	uuidPrefixSinkErr = "DMSYNC-SINKERR-"
)

// Device names of a volume's layers.
func mirrorName(s VolumeSpec) string {
	if s.Crypt != CryptNone {
		return s.Name + "-mirror"
	}
	return s.Name
}
func sinkName(name string) string    { return name + "-sink" }
func sinkErrName(name string) string { return name + "-sinkerr" }

// Builder builds, lists, inspects and removes dmsync volumes over a DM
// and a Host. Its zero value is not usable: set DM and Host.
type Builder struct {
	DM     DM
	Host   Host
	Logger *slog.Logger // nil discards
	// DaemonSocket, when set, must exist for a volume with a userspace
	// log: without dmsyncd the kernel rejects the table.
	DaemonSocket string
	// Cryptsetup is the cryptsetup program; default "cryptsetup".
	Cryptsetup string
	// CryptFormatArgs are extra luksFormat arguments (tests use a cheap
	// PBKDF: --pbkdf pbkdf2 --pbkdf-force-iterations 1000).
	CryptFormatArgs []string
	// Records, if set, holds the leg failure records (Legs): List shows
	// volumes whose data disk failed, Status carries the record.
	Records RecordStore
}

func (b *Builder) logger() *slog.Logger {
	if b.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return b.Logger
}

func (b *Builder) cryptsetup() string {
	if b.Cryptsetup == "" {
		return "cryptsetup"
	}
	return b.Cryptsetup
}

// Plan is a checked volume request: the steps that create it, each with
// the equivalent shell command.
type Plan struct {
	Spec    VolumeSpec
	Sectors uint64 // volume length in 512-byte sectors
	steps   []step
}

type step struct {
	cmd string
	run func(ctx context.Context, st *runState) error
}

// runState is what a running plan has made so far, for references between
// layers and for the rollback.
type runState struct {
	devs map[string]Info
	undo []undo
}

type undo struct {
	what string // for the error message: what is left if this fails
	fn   func(ctx context.Context) error
}

// Commands returns the dmsetup/cryptsetup commands equivalent to the plan.
func (p *Plan) Commands() []string {
	out := make([]string, len(p.steps))
	for i, s := range p.steps {
		out[i] = s.cmd
	}
	return out
}

// Plan checks spec against the system and returns the steps to create
// the volume. Every problem found is reported at once.
func (b *Builder) Plan(ctx context.Context, spec VolumeSpec) (*Plan, error) {
	spec.EnsureDefaults()
	var errs []error
	if err := spec.Validate(); err != nil {
		errs = append(errs, err)
	}
	rs := spec.RegionSize
	if rs&(rs-1) != 0 || rs < minRegionSize || rs > maxRegionSize {
		rs = DefaultRegionSize // reported above; size checks go on with the default
	}
	minSize := max(2*rs, 1<<20)
	if spec.Crypt == CryptLUKS2 {
		minSize += luks2Overhead
	}
	size := func(role, flag, path string) uint64 {
		n, err := b.Host.DeviceSize(path)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s device (%s): %w", role, flag, err))
			return 0
		}
		if n < minSize {
			errs = append(errs, fmt.Errorf("%w: %s device %s is %s, smaller than the %s this volume needs (region size %s%s): use a bigger device",
				ErrInvalid, role, path, FormatSize(n), FormatSize(minSize), FormatSize(rs), map[bool]string{true: " + 16M LUKS2 header"}[spec.Crypt == CryptLUKS2]))
			return 0
		}
		if err := b.Host.CheckUnused(path); err != nil {
			errs = append(errs, fmt.Errorf("%s device (%s): %w", role, flag, err))
		}
		return n
	}
	var dataSize uint64
	if spec.Data != "" {
		dataSize = size("data", "--data", spec.Data)
	}
	if !spec.OneDisk() && spec.Mirror != spec.Data {
		if m := size("mirror", "--mirror", spec.Mirror); m != 0 && dataSize != 0 && m != dataSize {
			errs = append(errs, fmt.Errorf("%w: legs differ in size: --data %s is %d bytes, --mirror %s is %d bytes: use devices of equal size (e.g. partitions or LVs of %d bytes)",
				ErrInvalid, spec.Data, dataSize, spec.Mirror, m, min(dataSize, m)))
		}
	}
	names := []string{spec.Name}
	if spec.Crypt != CryptNone {
		names = append(names, mirrorName(spec))
	}
	if spec.OneDisk() {
		names = append(names, sinkName(spec.Name), sinkErrName(spec.Name))
	}
	for _, n := range names {
		if ValidateName(spec.Name) != nil {
			break
		}
		_, err := b.DM.Info(ctx, n)
		switch {
		case err == nil:
			errs = append(errs, fmt.Errorf("%w: a device-mapper device named %s already exists: pick another volume name, or remove it (dmsync volume remove %s / dmsetup remove %s)", ErrInvalid, n, spec.Name, n))
		case !errors.Is(err, ErrNotFound):
			errs = append(errs, fmt.Errorf("check name %s: %w", n, err))
		}
	}
	if spec.Crypt != CryptNone && spec.KeyFile != "" && !b.Host.Exists(spec.KeyFile) {
		errs = append(errs, fmt.Errorf("%w: key file %s does not exist: create it (e.g. head -c 64 /dev/urandom > %s; chmod 600 %s)", ErrInvalid, spec.KeyFile, spec.KeyFile, spec.KeyFile))
	}
	if spec.Log == LogUserspace && b.DaemonSocket != "" && !b.Host.Exists(b.DaemonSocket) {
		errs = append(errs, fmt.Errorf("%w: %w, or create a test volume with the kernel's core log", ErrInvalid, DaemonNotRunning(b.DaemonSocket)))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	p := &Plan{Spec: spec, Sectors: dataSize / 512}
	p.steps = b.steps(spec, p.Sectors)
	return p, nil
}

// ErrDaemonNotRunning: dmsyncd's admin socket is missing.
var ErrDaemonNotRunning = errors.New("dmsyncd is not running")

// DaemonNotRunning returns ErrDaemonNotRunning with the socket path and
// the fix.
func DaemonNotRunning(socket string) error {
	return fmt.Errorf("%w (no socket at %s): start it with `systemctl start dmsyncd`", ErrDaemonNotRunning, socket)
}

// MirrorParams returns the mirror target parameters for spec with legs
// leg0 and leg1.
func MirrorParams(spec VolumeSpec, leg0, leg1 string) string {
	rs := spec.RegionSize / 512
	var log []string
	if spec.Log == LogUserspace {
		log = []string{spec.LogUUID, "integrated_flush", "core", fmt.Sprint(rs)}
	} else {
		log = []string{fmt.Sprint(rs)}
	}
	if spec.Sync != nil && !*spec.Sync {
		log = append(log, "nosync")
	}
	return fmt.Sprintf("%s %d %s 2 %s 0 %s 0 1 handle_errors", spec.Log, len(log), strings.Join(log, " "), leg0, leg1)
}

func (b *Builder) steps(spec VolumeSpec, n uint64) []step {
	var steps []step
	leg1 := func(ref func(string) string) string { return spec.Mirror }
	if spec.OneDisk() {
		se, s := sinkErrName(spec.Name), sinkName(spec.Name)
		steps = append(steps,
			b.dmStep(se, uuidPrefixSinkErr+spec.LogUUID, func(func(string) string) []Target {
				return []Target{{0, n, "error", ""}}
			}),
			// Always down (up 0 s, down 1 s), writes dropped, reads fail:
			// a leg that never returns data.
			b.dmStep(s, uuidPrefixSink+spec.LogUUID, func(ref func(string) string) []Target {
				return []Target{{0, n, "flakey", ref(se) + " 0 0 1 1 drop_writes"}}
			}))
		leg1 = func(ref func(string) string) string { return ref(s) }
	}
	m := mirrorName(spec)
	steps = append(steps, b.dmStep(m, uuidPrefixMirror+spec.LogUUID, func(ref func(string) string) []Target {
		return []Target{{0, n, "mirror", MirrorParams(spec, spec.Data, leg1(ref))}}
	}))
	if spec.Crypt == CryptNone {
		return steps
	}
	lower := "/dev/mapper/" + m
	cs := b.cryptsetup()
	var open []string
	if spec.Crypt == CryptLUKS2 {
		format := append([]string{cs, "luksFormat", "--batch-mode", "--type", "luks2"}, b.CryptFormatArgs...)
		format = append(format, "--key-file", spec.KeyFile, lower)
		steps = append(steps, step{cmd: shellJoin(format), run: func(ctx context.Context, st *runState) error {
			return b.Host.Run(ctx, format...)
		}})
		open = []string{cs, "open", "--type", "luks2", "--key-file", spec.KeyFile, lower, spec.Name}
	} else {
		open = []string{cs, "open", "--type", "plain", "--cipher", "aes-xts-plain64", "--key-size", "512", "--key-file", spec.KeyFile, lower, spec.Name}
	}
	steps = append(steps, step{cmd: shellJoin(open), run: func(ctx context.Context, st *runState) error {
		if err := b.Host.Run(ctx, open...); err != nil {
			// cryptsetup cleans up after itself; make sure (the name was
			// free when planned, so a device by that name is its leftover).
			if _, ierr := b.DM.Info(ctx, spec.Name); ierr == nil {
				if rerr := b.DM.Remove(context.WithoutCancel(ctx), spec.Name); rerr != nil {
					return errors.Join(err, fmt.Errorf("remove crypt device %s left by cryptsetup: %w", spec.Name, rerr))
				}
			}
			return err
		}
		st.undo = append(st.undo, undo{what: "crypt device " + spec.Name, fn: func(ctx context.Context) error {
			return b.Host.Run(ctx, cs, "close", spec.Name)
		}})
		return nil
	}})
	return steps
}

// dmStep creates, loads and resumes one dm device. table gets a function
// that turns a device name made by an earlier step into a reference: its
// "major:minor" when running, /dev/mapper/NAME in the printed command.
func (b *Builder) dmStep(name, uuid string, table func(ref func(string) string) []Target) step {
	printed := table(func(n string) string { return "/dev/mapper/" + n })
	lines := make([]string, len(printed))
	for i, t := range printed {
		lines[i] = strings.TrimSpace(t.String())
	}
	cmd := fmt.Sprintf("dmsetup create %s --uuid %s --table %s", name, uuid, shellQuote(strings.Join(lines, "\n")))
	return step{cmd: cmd, run: func(ctx context.Context, st *runState) error {
		if _, err := b.DM.Create(ctx, name, uuid); err != nil {
			return err
		}
		st.undo = append(st.undo, undo{what: "dm device " + name, fn: func(ctx context.Context) error {
			return b.DM.Remove(ctx, name)
		}})
		var refErr error
		ts := table(func(n string) string {
			info, ok := st.devs[n]
			if !ok {
				refErr = fmt.Errorf("internal: %s refers to %s before it exists", name, n)
			}
			return info.DevT()
		})
		if refErr != nil {
			return refErr
		}
		if err := b.DM.Load(ctx, name, ts); err != nil {
			return err
		}
		info, err := b.DM.Resume(ctx, name)
		if err != nil {
			return err
		}
		st.devs[name] = info
		return nil
	}}
}

// Create plans and builds the volume. A failed create removes what it
// made, in reverse order; if that fails too the error says what is left.
func (b *Builder) Create(ctx context.Context, spec VolumeSpec) (*Plan, error) {
	p, err := b.Plan(ctx, spec)
	if err != nil {
		return nil, err
	}
	return p, b.Apply(ctx, p)
}

// Apply runs a plan's steps, rolling back on failure.
func (b *Builder) Apply(ctx context.Context, p *Plan) error {
	st := &runState{devs: map[string]Info{}}
	for i, s := range p.steps {
		err := ctx.Err()
		if err == nil {
			err = s.run(ctx, st)
		}
		if err != nil {
			err = fmt.Errorf("create volume %s: step %d of %d (%s): %w", p.Spec.Name, i+1, len(p.steps), s.cmd, err)
			return errors.Join(err, b.rollback(context.WithoutCancel(ctx), p.Spec.Name, st))
		}
		b.logger().Debug("volume step done", "volume", p.Spec.Name, "step", i+1, "cmd", s.cmd)
	}
	b.logger().Info("volume created", "volume", p.Spec.Name, "log", p.Spec.Log, "log_uuid", p.Spec.LogUUID, "one_disk", p.Spec.OneDisk(), "crypt", p.Spec.Crypt)
	return nil
}

func (b *Builder) rollback(ctx context.Context, name string, st *runState) error {
	var left []string
	var errs []error
	for i := len(st.undo) - 1; i >= 0; i-- {
		u := st.undo[i]
		if err := u.fn(ctx); err != nil {
			left = append(left, u.what)
			errs = append(errs, err)
			b.logger().Error("rollback step failed", "volume", name, "what", u.what, "err", err)
		}
	}
	if len(left) == 0 {
		return nil
	}
	return fmt.Errorf("rollback of volume %s left %s behind: remove by hand (dmsetup remove / cryptsetup close): %w", name, strings.Join(left, ", "), errors.Join(errs...))
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:=+@%", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func shellJoin(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = shellQuote(a)
	}
	return strings.Join(q, " ")
}
