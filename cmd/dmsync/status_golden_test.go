package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/dmsync/dmsync/internal/admin"
	"github.com/dmsync/dmsync/internal/adminpb"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// cannedDaemon answers the status RPCs with fixed data.
type cannedDaemon struct {
	adminpb.UnimplementedVolumesServer
	adminpb.UnimplementedReplicationServer
	node     *adminpb.NodeResponse
	volumes  map[string]*adminpb.VolumeStatusResponse
	status   *adminpb.StatusResponse
	volErr   error
	statuses int
}

func (d *cannedDaemon) Node(context.Context, *adminpb.NodeRequest) (*adminpb.NodeResponse, error) {
	return d.node, nil
}

func (d *cannedDaemon) VolumeList(context.Context, *adminpb.VolumeListRequest) (*adminpb.VolumeListResponse, error) {
	if d.volErr != nil {
		return nil, admin.ToStatus(d.volErr)
	}
	r := &adminpb.VolumeListResponse{}
	for _, n := range []string{"data", "logs"} {
		if v, ok := d.volumes[n]; ok {
			r.Volumes = append(r.Volumes, v.Volume)
		}
	}
	return r, nil
}

func (d *cannedDaemon) VolumeStatus(_ context.Context, req *adminpb.VolumeStatusRequest) (*adminpb.VolumeStatusResponse, error) {
	v, ok := d.volumes[req.GetName()]
	if !ok {
		return nil, admin.ToStatus(admin.Errorf(admin.ErrNotFound, "no volume named %s", req.GetName()))
	}
	return v, nil
}

func (d *cannedDaemon) Status(context.Context, *adminpb.StatusRequest) (*adminpb.StatusResponse, error) {
	d.statuses++
	return d.status, nil
}

func serveCanned(t *testing.T, d *cannedDaemon) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "dmsync.sock")
	ln, err := admin.Listen(sock, nil)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	adminpb.RegisterVolumesServer(g, d)
	adminpb.RegisterReplicationServer(g, d)
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	return sock
}

var (
	goldenNow = time.Date(2026, 12, 2, 1, 0, 0, 0, time.UTC)
	peerB     = "l7icadevq5xkz2m4wj3nbo6tyrpfh7gesdc"
	nodeA     = "r63tyhgoaw5mb2kz7xq4nlpe3vusjdcf6ih"
)

func volume(name, uuid string, legs ...string) *adminpb.VolumeStatusResponse {
	r := &adminpb.VolumeStatusResponse{
		Volume: &adminpb.Volume{Name: name, Mirror: name + "-mirror", Crypt: "luks2", LogType: "userspace", LogUuid: uuid,
			OneDisk: true, Legs: []string{"254:16", "253:1"}, Sectors: 917504, RegionSectors: 8192,
			Devices: []string{name, name + "-mirror", name + "-sink", name + "-sinkerr"}, Managed: true},
		Regions: 112, InSync: 112, OpenCount: 1,
	}
	for i, h := range legs {
		r.Legs = append(r.Legs, &adminpb.Leg{Dev: r.Volume.Legs[i], Health: h})
	}
	p := uint64(0)
	r.ReplicationPending = &p
	return r
}

func healthyDaemon() *cannedDaemon {
	return &cannedDaemon{
		node:    &adminpb.NodeResponse{Id: nodeA},
		volumes: map[string]*adminpb.VolumeStatusResponse{"data": volume("data", "4c1f9a2e-data", "A", "A")},
		status: &adminpb.StatusResponse{Sends: []*adminpb.SendStatus{{
			Volume: "data", Name: "data", LogUuid: "4c1f9a2e-data", Peer: peerB, Size: 469762048, RegionSize: 4 << 20,
			LastAckUnixNano: goldenNow.Add(-12 * time.Second).UnixNano(), PeerRoot: bytes.Repeat([]byte{0xab}, 32),
			BytesRead: 763363328, BytesSent: 293216256, Batches: 46, State: "idle",
			StateCode: adminpb.SendState_SEND_STATE_SYNCED,
			Point: &adminpb.PointStatus{Seq: 7, TakenAtUnixNano: goldenNow.Add(-15 * time.Second).UnixNano(),
				AppliedAtUnixNano: goldenNow.Add(-13 * time.Second).UnixNano(), LastPauseNano: int64(4 * time.Millisecond),
				MaxPauseNano: int64(31 * time.Millisecond), Points: 7, CapturedBytes: 8 << 20},
		}}},
	}
}

func troubledDaemon() *cannedDaemon {
	d := healthyDaemon()
	d.volumes["logs"] = volume("logs", "77aa01bb-logs", "A", "D")
	d.volumes["logs"].InSync = 100
	s := d.status.Sends[0]
	s.State = "retrying in 8s: dial 10.99.0.2:7420: peer unavailable: connection refused"
	s.StateCode = adminpb.SendState_SEND_STATE_PEER_UNREACHABLE
	s.PendingRegions, s.BytesToGo, s.RateBytesPerSec, s.EtaSeconds, s.Failures = 3, 12<<20, 8<<20, 1.5, 4
	d.status.Receives = []*adminpb.ReceiveStatus{
		{Volume: "web", From: peerB, Image: "/dev/vg0/web-replica", Size: 1 << 30, Root: bytes.Repeat([]byte{0x11}, 32), Chunks: 262144,
			PointSeq: 3, PointTakenAtUnixNano: goldenNow.Add(-90 * time.Second).UnixNano(), PointAppliedAtUnixNano: goldenNow.Add(-88 * time.Second).UnixNano()},
		{Volume: "new", From: peerB, Image: "/dev/vg0/new-replica", Size: 1 << 30, Root: bytes.Repeat([]byte{0x22}, 32), Chunks: 1024},
		{Volume: "old", From: peerB, Image: "/srv/old.img", Size: 1 << 20,
			Error: `receiver config: volume "old": configured size 1048576 but the replica holds 2097152 bytes (volume size differs)`},
	}
	return d
}

// golden compares got with testdata/name (rewritten with -update).
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run %s -update to create it)", err, t.Name())
	}
	if got != string(want) {
		t.Errorf("%s differs from the golden file (go test -update rewrites it after review):\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

func runSock(sock string, args ...string) (string, string, int) {
	var out, errb bytes.Buffer
	err := run(context.Background(), append([]string{"--socket", sock}, args...), &out, &errb)
	if err != nil {
		errb.WriteString("dmsync: " + err.Error() + "\n")
	}
	return out.String(), errb.String(), exitCode(err)
}

func TestStatusGolden(t *testing.T) {
	old := now
	now = func() time.Time { return goldenNow }
	defer func() { now = old }()
	for _, tc := range []struct {
		name string
		d    *cannedDaemon
		args []string
		code int
		err  string
	}{
		{"status-ok.json", healthyDaemon(), []string{"status", "--json"}, 0, ""},
		{"status-ok.txt", healthyDaemon(), []string{"status"}, 0, ""},
		{"status-ok-x.txt", healthyDaemon(), []string{"status", "-x"}, 0, ""},
		{"status-problems.json", troubledDaemon(), []string{"status", "--json"}, exitFailure, "dmsync: status shows problems: volume logs is degraded-leg (and 2 more)\n"},
		{"status-problems.txt", troubledDaemon(), []string{"status"}, exitFailure, "dmsync: status shows problems: volume logs is degraded-leg (and 2 more)\n"},
		{"status-problems-x.txt", troubledDaemon(), []string{"status", "-x"}, exitFailure, "dmsync: status shows problems: volume logs is degraded-leg (and 2 more)\n"},
		{"volume-status-ok.json", healthyDaemon(), []string{"volume", "status", "data", "--json"}, 0, ""},
		{"volume-status-problems.json", troubledDaemon(), []string{"volume", "status", "logs", "--json"}, exitFailure, "dmsync: status shows problems: volume logs is degraded-leg\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sock := serveCanned(t, tc.d)
			out, stderr, code := runSock(sock, tc.args...)
			if code != tc.code || stderr != tc.err {
				t.Errorf("exit %d (want %d), stderr %q (want %q)", code, tc.code, stderr, tc.err)
			}
			golden(t, tc.name, out)
			if strings.HasSuffix(tc.name, ".json") {
				var v map[string]any
				if err := json.Unmarshal([]byte(out), &v); err != nil || v["version"] != float64(statusVersion) {
					t.Errorf("not a version %d document: %v", statusVersion, err)
				}
			}
		})
	}
}

// TestStatusIDsPasteBack: every id and name status prints is accepted by
// the commands that take it (here: their exact spelling reaches the
// daemon).
func TestStatusIDsPasteBack(t *testing.T) {
	d := healthyDaemon()
	sock := serveCanned(t, d)
	out, _, _ := runSock(sock, "status", "--json")
	var doc statusDoc
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatal(err)
	}
	s := doc.Sends[0]
	if s.Peer != peerB || s.Volume != "data" || doc.Node.ID != nodeA {
		t.Fatalf("ids were shortened: %+v %+v", s, doc.Node)
	}
	human, _, _ := runSock(sock, "status")
	for _, id := range []string{peerB, nodeA} {
		if !strings.Contains(human, id) {
			t.Errorf("status does not print %s whole:\n%s", id, human)
		}
	}
}

// TestStatusWithoutVolumes: a node without device-mapper (receive only)
// still reports its replication; the volumes error is shown, not fatal.
func TestStatusWithoutVolumes(t *testing.T) {
	d := healthyDaemon()
	d.volErr = admin.Errorf(admin.ErrUnsupported, "device-mapper is not available: /dev/mapper/control: no such file")
	sock := serveCanned(t, d)
	out, stderr, code := runSock(sock, "status", "--json")
	var doc statusDoc
	if err := json.Unmarshal([]byte(out), &doc); err != nil || code != 0 {
		t.Fatalf("exit %d %q: %v", code, stderr, err)
	}
	if len(doc.Volumes) != 0 || !strings.Contains(doc.VolumesError, "device-mapper is not available") || len(doc.Sends) != 1 {
		t.Fatalf("%+v", doc)
	}
}
