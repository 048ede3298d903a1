package grpctransport

import (
	"errors"
	"fmt"
	"testing"

	"github.com/dmsync/dmsync/rpc"
)

func TestStatusRoundTrip(t *testing.T) {
	for _, e := range table {
		err := fromStatus(toStatus(fmt.Errorf("volume x: %w", e.err)))
		if !errors.Is(err, e.err) {
			t.Errorf("%v came back as %v", e.err, err)
		}
		for _, o := range table {
			if o.err != e.err && errors.Is(err, o.err) {
				t.Errorf("%v came back as %v too", e.err, o.err)
			}
		}
	}
	if err := fromStatus(toStatus(errors.New("boom"))); errors.Is(err, rpc.ErrUnavailable) || err == nil {
		t.Errorf("internal error mapped to %v", err)
	}
}
