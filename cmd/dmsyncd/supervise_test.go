package main

import (
	"errors"
	"strings"
	"testing"
)

func TestExitReason(t *testing.T) {
	stack := strings.Repeat("goroutine 7 [running]:\n\tmain.f()\n", 2000)
	for _, tc := range []struct {
		name, stderr string
		err          error
		want         string
	}{
		{"panic with a long stack", "level=INFO msg=x\npanic: test hook\n\n" + stack, errors.New("exit status 2"), "panic: test hook (exit status 2)"},
		{"runtime fatal error", "fatal error: concurrent map writes\n" + stack + "panic: later\n", errors.New("exit status 2"), "fatal error: concurrent map writes (exit status 2)"},
		{"error on exit", "level=ERROR msg=y\ndmsyncd: replica store: full\n", errors.New("exit status 1"), "replica store: full (exit status 1)"},
		{"killed", "level=INFO msg=z\n", errors.New("signal: killed"), "signal: killed"},
		{"clean", "", nil, "exited cleanly"},
	} {
		var l lastLines
		// Written in odd pieces, as a pipe delivers it.
		for s := tc.stderr; s != ""; {
			n := min(len(s), 777)
			l.Write([]byte(s[:n]))
			s = s[n:]
		}
		if got := exitReason(tc.err, l.String()); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}
