// Package version holds the release that dmsync's binaries were built
// from. `make build` and `make deb` stamp it:
//
//	go build -ldflags "-X github.com/dmsync/dmsync/internal/version.Version=0.3.0" ./cmd/...
//
// An unstamped build reports "dev" and, when the Go toolchain recorded it,
// the VCS revision.
package version

import "runtime/debug"

// Version is the release, set at link time; "dev" when not stamped.
var Version = "dev"

// String is the version line a binary prints for --version, e.g.
// "dmsyncd 0.3.0" or "dmsyncd dev (a1b2c3d4e5f6, modified)".
func String(program string) string {
	s := program + " " + Version
	if Version != "dev" {
		return s
	}
	if rev, dirty := revision(); rev != "" {
		s += " (" + rev
		if dirty {
			s += ", modified"
		}
		s += ")"
	}
	return s
}

// revision reads the VCS revision the toolchain stamped into the binary.
func revision() (rev string, dirty bool) {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "", false
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
			if len(rev) > 12 {
				rev = rev[:12]
			}
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	return rev, dirty
}
