// Package failing holds guest tests that fail or hang on purpose. The
// harness's own tests boot them to prove that a failure inside the guest
// fails the run; they are skipped everywhere else and never part of the
// real suite.
package failing

import (
	"testing"
	"time"

	"github.com/dmsync/dmsync/internal/guesttest"
)

func TestKernelMustFail(t *testing.T) {
	guesttest.Require(t)
	t.Fatal("deliberate failure: the harness must report this run as failed")
}

func TestKernelMustPass(t *testing.T) {
	guesttest.Require(t)
}

func TestKernelHang(t *testing.T) {
	guesttest.Require(t)
	time.Sleep(time.Hour)
}
