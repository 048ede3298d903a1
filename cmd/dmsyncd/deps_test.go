package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps keeps fakes and test helpers out of the binary that runs as root.
func TestDeps(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not in PATH")
	}
	out, err := exec.Command(goBin, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, p := range strings.Fields(string(out)) {
		switch {
		case p == "testing", p == "net/http/httptest", strings.HasSuffix(p, "/kerneltest"), strings.Contains(p, "datadriven"):
			t.Errorf("dmsyncd links %s", p)
		}
	}
}
