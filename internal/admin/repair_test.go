package admin_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/dmsync/dmsync/internal/admin"
	"github.com/dmsync/dmsync/internal/adminpb"
)

// A daemon whose volume manager cannot repair (no device-mapper) says so
// with the unsupported kind.
func TestVolumeRepairUnsupported(t *testing.T) {
	c, _, _ := serve(t)
	_, err := c.Volumes().VolumeRepair(context.Background(), &adminpb.VolumeRepairRequest{Name: "v", Mirror: "/dev/vdc"})
	if !errors.Is(err, admin.ErrUnsupported) || !strings.Contains(err.Error(), "does not repair volumes") {
		t.Fatalf("repair without a repairer: %v", err)
	}
}
