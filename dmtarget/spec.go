package dmtarget

import (
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrInvalid marks an error in what the user asked for (a bad flag, a
// missing or unsuitable device, a name in use). Its message names the
// thing and the fix.
var ErrInvalid = errors.New("invalid volume request")

// Log types a volume's mirror can use.
const (
	LogUserspace = "userspace" // served by dmsyncd (dm-log-userspace)
	LogCore      = "core"      // kernel in-memory log; for tests without dmsyncd
)

// Crypt modes.
const (
	CryptNone  = ""
	CryptLUKS2 = "luks2"
	CryptPlain = "plain"
)

// DefaultRegionSize is the mirror region size when none is given.
const DefaultRegionSize = 4 << 20

const (
	minRegionSize = 4096    // a page: the kernel does not check, the daemon needs it
	maxRegionSize = 1 << 30 // beyond this a region is no longer a useful unit
	luks2Overhead = 16 << 20
	maxNameLen    = 100 // leaves room for the -mirror/-sink/-sinkerr suffixes
)

// VolumeSpec describes a volume to create. The zero value of the optional
// fields means the defaults (EnsureDefaults).
type VolumeSpec struct {
	Name       string // dm name of the top device: /dev/mapper/NAME
	Data       string // leg 0: the device whose data is kept and replicated
	Mirror     string // leg 1; empty means one-disk mode (a sink leg)
	RegionSize uint64 // bytes; power of two, >= 4 KiB; default 4 MiB
	Crypt      string // "", "luks2" or "plain"
	KeyFile    string // required with Crypt
	Log        string // "userspace" (default) or "core"
	LogUUID    string // userspace log uuid; generated when empty
	// Sync makes the kernel copy leg 0 onto leg 1 at creation. Default:
	// true with two legs, false in one-disk mode (the sink discards it).
	Sync *bool
}

// EnsureDefaults fills in defaults.
func (s *VolumeSpec) EnsureDefaults() {
	if s.RegionSize == 0 {
		s.RegionSize = DefaultRegionSize
	}
	if s.Log == "" {
		s.Log = LogUserspace
	}
	if s.LogUUID == "" {
		s.LogUUID = newUUID()
	}
	if s.Sync == nil {
		sync := s.Mirror != ""
		s.Sync = &sync
	}
}

// OneDisk reports whether the volume has a sink instead of a second leg.
func (s VolumeSpec) OneDisk() bool { return s.Mirror == "" }

// Validate checks the request itself (no system access) and reports every
// problem at once.
func (s VolumeSpec) Validate() error {
	var errs []error
	bad := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, a...)...))
	}
	if err := ValidateName(s.Name); err != nil {
		errs = append(errs, err)
	}
	if s.Data == "" {
		bad("no data device: give one with --data /dev/DEVICE")
	}
	if s.Mirror != "" && s.Mirror == s.Data {
		bad("--mirror %s is the same device as --data: give a second device, or leave out --mirror for one-disk mode", s.Mirror)
	}
	if rs := s.RegionSize; rs != 0 && (rs&(rs-1) != 0 || rs < minRegionSize || rs > maxRegionSize) {
		bad("region size %s is not a power of two between 4K and 1G: use e.g. --region-size 4M", FormatSize(rs))
	}
	switch s.Crypt {
	case CryptNone:
		if s.KeyFile != "" {
			bad("--key-file %s given without --crypt: add --crypt luks2 or --crypt plain", s.KeyFile)
		}
	case CryptLUKS2, CryptPlain:
		if s.KeyFile == "" {
			bad("--crypt %s needs a key: give --key-file FILE", s.Crypt)
		}
	default:
		bad("unknown --crypt %q: use luks2 or plain", s.Crypt)
	}
	switch s.Log {
	case "", LogUserspace, LogCore:
	default:
		bad("unknown log type %q: use userspace or core", s.Log)
	}
	if strings.ContainsAny(s.LogUUID, " \t\n\x00") || len(s.LogUUID) >= uuidLen-len("DMSYNC-SINKERR-") {
		bad("log uuid %q must be one word shorter than %d bytes", s.LogUUID, uuidLen-len("DMSYNC-SINKERR-"))
	}
	return errors.Join(errs...)
}

// ValidateName checks a volume name: 1..100 of [A-Za-z0-9._+-], not
// starting with '-' or '.'.
func ValidateName(name string) error {
	if name == "" || len(name) > maxNameLen {
		return fmt.Errorf("%w: volume name %q must be 1..%d characters", ErrInvalid, name, maxNameLen)
	}
	if name[0] == '-' || name[0] == '.' {
		return fmt.Errorf("%w: volume name %q must not start with %q", ErrInvalid, name, name[0])
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("._+-", c)) {
			return fmt.Errorf("%w: volume name %q has %q: use letters, digits and . _ + -", ErrInvalid, name, c)
		}
	}
	return nil
}

// ParseSize parses a size such as "4096", "64K", "4M", "1G" (binary units,
// optional trailing "iB" or "B").
func ParseSize(s string) (uint64, error) {
	t := strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(s)), "B"), "I")
	mult := uint64(1)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'K':
			mult, t = 1<<10, t[:n-1]
		case 'M':
			mult, t = 1<<20, t[:n-1]
		case 'G':
			mult, t = 1<<30, t[:n-1]
		case 'T':
			mult, t = 1<<40, t[:n-1]
		case 'S': // sectors
			mult, t = 512, t[:n-1]
		}
	}
	v, err := strconv.ParseUint(t, 10, 64)
	if err != nil || v == 0 || v > (1<<63)/mult {
		return 0, fmt.Errorf("%w: size %q: want a positive number with an optional K, M, G or T suffix", ErrInvalid, s)
	}
	return v * mult, nil
}

// FormatSize formats bytes with the largest exact binary unit.
func FormatSize(b uint64) string {
	for _, u := range []struct {
		s string
		n uint64
	}{{"T", 1 << 40}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}} {
		if b >= u.n && b%u.n == 0 {
			return fmt.Sprintf("%d%s", b/u.n, u.s)
		}
	}
	return fmt.Sprintf("%d", b)
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
