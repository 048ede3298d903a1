//go:build linux

package logd

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"
)

// TestDialConnector binds the real connector socket where the host allows
// it; nothing is sent (no dm module here), so it checks setup and that
// cancelling unblocks Receive.
func TestDialConnector(t *testing.T) {
	c, err := DialConnector()
	if err != nil {
		if os.Geteuid() != 0 {
			t.Skipf("connector needs root: %v", err)
		}
		t.Skipf("host has no usable netlink connector: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := c.Receive(ctx)
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	cancel()
	c.Close()
	select {
	case err := <-done:
		if err == nil || !errors.Is(err, context.Canceled) {
			t.Fatalf("Receive after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock Receive")
	}
}
