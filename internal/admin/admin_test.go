package admin_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"

	"github.com/dmsync/dmsync/dmtarget"
	"github.com/dmsync/dmsync/dmtarget/dmtargettest"
	"github.com/dmsync/dmsync/internal/admin"
	"github.com/dmsync/dmsync/internal/adminpb"
)

// serve starts an admin server over a fake DM on a socket in a temp dir.
func serve(t *testing.T) (*admin.Client, *dmtargettest.Fake, string) {
	t.Helper()
	f := dmtargettest.New()
	h := dmtargettest.NewHost(f)
	h.Sizes["/dev/vdb"] = 1 << 30
	h.Sizes["/dev/vdc"] = 1 << 30
	h.Files["/key"] = true
	b := &dmtarget.Builder{DM: f, Host: h}
	sock := filepath.Join(t.TempDir(), "run", "dmsync.sock")
	ln, err := admin.Listen(sock, nil)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	admin.Register(g, admin.NewServer(b, nil))
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	c, err := admin.Dial(context.Background(), sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, f, sock
}

func TestVolumeLifecycleOverGRPC(t *testing.T) {
	ctx := context.Background()
	c, f, _ := serve(t)
	spec := &adminpb.VolumeSpec{Name: "v", Data: "/dev/vdb", Crypt: "luks2", KeyFile: "/key"}
	dry, err := c.Volumes().VolumeCreate(ctx, &adminpb.VolumeCreateRequest{Spec: spec, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(dry.Commands) != 5 || dry.Volume != nil || len(f.Devices()) != 0 {
		t.Fatalf("dry run: %v, devices %v", dry, f.Devices())
	}
	r, err := c.Volumes().VolumeCreate(ctx, &adminpb.VolumeCreateRequest{Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	if r.Volume.GetName() != "v" || r.Volume.GetMirror() != "v-mirror" || !r.Volume.GetOneDisk() || r.Volume.GetCrypt() != "luks2" {
		t.Fatalf("created %v", r.Volume)
	}
	l, err := c.Volumes().VolumeList(ctx, &adminpb.VolumeListRequest{})
	if err != nil || len(l.Volumes) != 1 || l.Volumes[0].GetLogUuid() == "" {
		t.Fatalf("list %v, %v", l, err)
	}
	st, err := c.Volumes().VolumeStatus(ctx, &adminpb.VolumeStatusRequest{Name: "v"})
	if err != nil {
		t.Fatal(err)
	}
	if st.Regions != 256 || st.InSync != 256 || len(st.Legs) != 2 || st.Legs[0].Health != "A" {
		t.Fatalf("status %v", st)
	}
	rm, err := c.Volumes().VolumeRemove(ctx, &adminpb.VolumeRemoveRequest{Name: "v"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(rm.Removed, ",") != "v,v-mirror,v-sink,v-sinkerr" || len(f.Devices()) != 0 {
		t.Fatalf("removed %v, left %v", rm.Removed, f.Devices())
	}
}

func TestErrorsKeepMeaningOverGRPC(t *testing.T) {
	ctx := context.Background()
	c, _, _ := serve(t)
	_, err := c.Volumes().VolumeCreate(ctx, &adminpb.VolumeCreateRequest{Spec: &adminpb.VolumeSpec{Name: "v", Data: "/dev/nope", RegionSize: 3 << 20}})
	if !errors.Is(err, admin.ErrInvalid) {
		t.Fatalf("err %v, want ErrInvalid", err)
	}
	for _, w := range []string{"/dev/nope does not exist", "region size 3M is not a power of two"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %q", err, w)
		}
	}
	if strings.Contains(err.Error(), "rpc error") {
		t.Errorf("error shows gRPC plumbing: %q", err)
	}
	_, err = c.Volumes().VolumeCreate(ctx, &adminpb.VolumeCreateRequest{Spec: &adminpb.VolumeSpec{Name: "v", Data: "/dev/vdb", Crypt: "plain", KeyFile: "key"}})
	if !errors.Is(err, admin.ErrInvalid) || !strings.Contains(err.Error(), "absolute") {
		t.Fatalf("relative key file: %v", err)
	}
	if _, err := c.Volumes().VolumeStatus(ctx, &adminpb.VolumeStatusRequest{Name: "nope"}); !errors.Is(err, admin.ErrNotFound) {
		t.Fatalf("status of a missing volume: %v", err)
	}
}

func TestDialWithoutDaemon(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "dmsync.sock")
	_, err := admin.Dial(context.Background(), sock)
	if !errors.Is(err, admin.ErrNotRunning) {
		t.Fatalf("err %v", err)
	}
	want := "dmsyncd is not running (no socket at " + sock + "): start it with `systemctl start dmsyncd`"
	if err.Error() != want {
		t.Fatalf("err %q\nwant %q", err, want)
	}
}
