package version

import (
	"strings"
	"testing"
)

func TestString(t *testing.T) {
	old := Version
	defer func() { Version = old }()
	Version = "1.2.3"
	if got := String("dmsyncd"); got != "dmsyncd 1.2.3" {
		t.Fatalf("stamped: %q", got)
	}
	Version = "dev"
	if got := String("dmsync"); !strings.HasPrefix(got, "dmsync dev") {
		t.Fatalf("unstamped: %q", got)
	}
}
