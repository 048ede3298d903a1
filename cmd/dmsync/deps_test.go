package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps keeps fakes and test helpers out of the CLI binary (it runs as
// root).
func TestDeps(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not in PATH")
	}
	out, err := exec.Command(goBin, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := strings.Fields(string(out))
	for _, p := range deps {
		switch {
		case p == "testing", p == "net/http/httptest", strings.HasSuffix(p, "/dmtargettest"), strings.HasSuffix(p, "/guesttest"):
			t.Errorf("dmsync links %s", p)
		}
	}
	if !strings.Contains(string(out), "github.com/dmsync/dmsync/dmtarget\n") {
		t.Fatalf("go list -deps output lacks dmtarget: the check looks at the wrong package")
	}
}
