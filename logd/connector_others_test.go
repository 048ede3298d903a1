//go:build !linux

package logd

import "testing"

func TestDialConnectorUnsupported(t *testing.T) {
	if c, err := DialConnector(); err == nil || c != nil {
		t.Fatal("DialConnector must fail off Linux")
	}
}
