package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/dmsync/dmsync/internal/admin"
	"github.com/dmsync/dmsync/internal/adminpb"
	"github.com/dmsync/dmsync/logd/logpb"
)

// The machine-readable status: `dmsync status --json` and `dmsync volume
// status NAME --json`. doc/status-schema.md is its contract; a change
// that is not an addition raises statusVersion.

// statusVersion is the schema version in every document.
const statusVersion = 1

// statusDoc is `dmsync status --json`.
type statusDoc struct {
	Version  int           `json:"version"`
	Time     time.Time     `json:"time"`
	Node     nodeJSON      `json:"node"`
	OK       bool          `json:"ok"`
	Problems []problemJSON `json:"problems"`
	Volumes  []volumeJSON  `json:"volumes"`
	// VolumesError says why volumes is empty on a node that cannot list
	// them (no device-mapper: a node that only receives).
	VolumesError string        `json:"volumes_error,omitempty"`
	Sends        []sendJSON    `json:"sends"`
	Receives     []receiveJSON `json:"receives"`
	// Daemon is dmsyncd's own health, from its log server (absent from a
	// daemon that does not report it).
	Daemon *daemonJSON `json:"daemon,omitempty"`
}

// daemonJSON is dmsyncd's health as its log server reports it.
type daemonJSON struct {
	Summary      string `json:"summary"`       // one line, as in systemd's STATUS=
	StoreFailed  bool   `json:"store_failed"`  // the dirty log's state store failed
	ReplicatorUp bool   `json:"replicator_up"` // the replicator process runs
	Volumes      uint32 `json:"volumes"`       // dirty logs the log server serves
}

// volumeStatusDoc is `dmsync volume status NAME --json`.
type volumeStatusDoc struct {
	Version  int           `json:"version"`
	Time     time.Time     `json:"time"`
	OK       bool          `json:"ok"`
	Problems []problemJSON `json:"problems"`
	Volume   volumeJSON    `json:"volume"`
	// Send is the volume's replication, or null.
	Send *sendJSON `json:"send"`
}

type nodeJSON struct {
	ID     string `json:"id"`
	Listen string `json:"listen"`
}

// problemJSON is one thing that is wrong; the exit code is 1 while there
// is any.
type problemJSON struct {
	Kind    string `json:"kind"` // "volume", "send", "receive"
	Name    string `json:"name"`
	State   string `json:"state"`
	Message string `json:"message"`
}

type volumeJSON struct {
	Name           string    `json:"name"`
	Device         string    `json:"device"`
	Mirror         string    `json:"mirror"`
	State          string    `json:"state"`
	Mode           string    `json:"mode"`
	Crypt          string    `json:"crypt"`
	LogType        string    `json:"log_type"`
	LogUUID        string    `json:"log_uuid"`
	SizeBytes      uint64    `json:"size_bytes"`
	RegionBytes    uint64    `json:"region_bytes"`
	Regions        uint64    `json:"regions"`
	InSyncRegions  uint64    `json:"in_sync_regions"`
	Legs           []legJSON `json:"legs"`
	LogHealth      string    `json:"log_health"`
	PendingRegions *uint64   `json:"replication_pending_regions"`
	OpenCount      int32     `json:"open_count"`
	Suspended      bool      `json:"suspended"`
	Managed        bool      `json:"managed"`
	// Failure is the daemon's record of a failed leg, if any (schema 1,
	// added without a version bump: a new optional field).
	Failure *legFailureJSON `json:"leg_failure,omitempty"`
}

type legJSON struct {
	Device string `json:"device"`
	Health string `json:"health"`
	Code   string `json:"health_code"`
}

type sendJSON struct {
	Volume         string            `json:"volume"`
	Name           string            `json:"name"`
	LogUUID        string            `json:"log_uuid"`
	Peer           string            `json:"peer"`
	State          string            `json:"state"`
	Detail         string            `json:"detail"`
	SizeBytes      uint64            `json:"size_bytes"`
	RegionBytes    uint64            `json:"region_bytes"`
	PendingRegions uint64            `json:"pending_regions"`
	PendingBytes   uint64            `json:"pending_bytes"`
	Rate           float64           `json:"rate_bytes_per_second"`
	ETASeconds     *float64          `json:"eta_seconds"`
	LastAck        *time.Time        `json:"last_ack"`
	RecoveryPoint  recoveryPointJSON `json:"recovery_point"`
	BytesRead      uint64            `json:"bytes_read"`
	BytesSent      uint64            `json:"bytes_sent"`
	Batches        uint64            `json:"batches"`
	Failures       uint64            `json:"failures"`
	PeerRoot       string            `json:"peer_root"`
}

// recoveryPointJSON is the newest point in time the peer holds durably.
// Basis says how it is known: "consistent-point" (the peer's replica is
// exactly the volume as it was at Time), "last-ack" (no point: the
// replica is written in place and Time is only its last durable ack), or
// "none" (nothing held yet).
type recoveryPointJSON struct {
	Basis      string     `json:"basis"`
	Time       *time.Time `json:"time"`
	AgeSeconds *float64   `json:"age_seconds"`
	// Seq numbers the peer's points (0: none).
	Seq uint64 `json:"seq"`
	// Consistency points (added in schema 1: new optional fields): the
	// I/O pause of the last point and the longest one, the points made,
	// the volume's point interval, and why no points are made, if not.
	PauseSeconds    *float64 `json:"pause_seconds,omitempty"`
	MaxPauseSeconds *float64 `json:"max_pause_seconds,omitempty"`
	Points          uint64   `json:"points"`
	IntervalSeconds float64  `json:"interval_seconds"`
	Unavailable     string   `json:"unavailable,omitempty"`
}

type receiveJSON struct {
	Volume    string `json:"volume"`
	From      string `json:"from"`
	Image     string `json:"image"`
	SizeBytes uint64 `json:"size_bytes"`
	State     string `json:"state"`
	Error     string `json:"error"`
	Root      string `json:"root"`
	Chunks    uint64 `json:"chunks"`
	// RecoveryPoint is the point the replica holds: basis
	// "consistent-point" or "none".
	RecoveryPoint recoveryPointJSON `json:"recovery_point"`
}

// sendStates names SendState in the JSON; problem marks the states that
// make status exit 1.
var sendStates = map[adminpb.SendState]struct {
	name    string
	problem bool
}{
	adminpb.SendState_SEND_STATE_UNSPECIFIED:      {"unknown", true},
	adminpb.SendState_SEND_STATE_STARTING:         {"starting", false},
	adminpb.SendState_SEND_STATE_SYNCING:          {"syncing", false},
	adminpb.SendState_SEND_STATE_SYNCED:           {"synced", false},
	adminpb.SendState_SEND_STATE_PEER_UNREACHABLE: {"peer-unreachable", true},
	adminpb.SendState_SEND_STATE_REFUSED:          {"refused", true},
	adminpb.SendState_SEND_STATE_FAILING:          {"failing", true},
	adminpb.SendState_SEND_STATE_REPLICATOR_DOWN:  {"replicator-down", true},
	adminpb.SendState_SEND_STATE_STORE_FAILED:     {"store-failed", true},
	adminpb.SendState_SEND_STATE_PEER_FULL:        {"peer-full", true},
}

// sendStateOf names a state; one this CLI does not know (from a newer
// daemon) is "unknown" and a problem, as the schema tells readers to do.
func sendStateOf(c adminpb.SendState) struct {
	name    string
	problem bool
} {
	if st, ok := sendStates[c]; ok {
		return st
	}
	return sendStates[adminpb.SendState_SEND_STATE_UNSPECIFIED]
}

// Volume states; the ones in volumeProblems make status exit 1.
const (
	volHealthy        = "healthy"
	volResyncing      = "resyncing"       // legs not yet in sync (kernel resync)
	volDegradedLeg    = "degraded-leg"    // a leg failed: the volume runs on the other (two disks)
	volDataFailed     = "data-failed"     // the data disk failed: I/O fails with EIO, the peer's replica is the way back
	volStoreFailed    = "store-failed"    // the dirty log reports failure (D)
	volLogUnreachable = "log-unreachable" // the kernel cannot reach the log server
)

var volumeProblems = map[string]bool{volDegradedLeg: true, volDataFailed: true, volStoreFailed: true, volLogUnreachable: true}

var legHealthNames = map[string]string{
	"A": "alive", "D": "write-failed", "S": "sync-failed", "R": "read-failed", "U": "failed", "F": "flush-failed",
}

func volumeToJSON(s *adminpb.VolumeStatusResponse) volumeJSON {
	v := s.GetVolume()
	j := volumeJSON{
		Name: v.GetName(), Device: "/dev/mapper/" + v.GetName(), Mirror: v.GetMirror(), Mode: mode(v),
		Crypt: v.GetCrypt(), LogType: v.GetLogType(), LogUUID: v.GetLogUuid(),
		SizeBytes: v.GetSectors() * 512, RegionBytes: v.GetRegionSectors() * 512,
		Regions: s.GetRegions(), InSyncRegions: s.GetInSync(), LogHealth: s.GetLogHealth(),
		PendingRegions: s.ReplicationPending, OpenCount: s.GetOpenCount(), Suspended: s.GetSuspended(),
		Managed: v.GetManaged(), Legs: []legJSON{},
	}
	j.State = volHealthy
	if s.GetInSync() < s.GetRegions() {
		j.State = volResyncing
	}
	for _, l := range s.GetLegs() {
		name := legHealthNames[l.GetHealth()]
		if name == "" {
			name = "unknown"
		}
		j.Legs = append(j.Legs, legJSON{Device: l.GetDev(), Health: name, Code: l.GetHealth()})
		if l.GetHealth() != "A" {
			j.State = volDegradedLeg
		}
	}
	// A failed leg the daemon reconfigured around (replaced by a sink)
	// shows healthy legs: the record of the failure says what happened.
	if f := s.GetFailure(); f != nil {
		j.Failure = &legFailureJSON{
			State: f.GetState(), FailedDevice: f.GetFailedDev(), FailedLeg: f.GetFailedLeg(), At: f.GetAt(),
			Survivor: f.GetSurvivor(), RepairDevice: f.GetRepairDev(), Summary: f.GetSummary(),
		}
		switch f.GetState() {
		case "data-failed":
			j.State = volDataFailed
		case "degraded":
			j.State = volDegradedLeg
		case "resyncing":
			j.State = volResyncing
		}
	}
	switch s.GetLogHealth() {
	case "", "A":
	case "COM_FAILURE":
		j.State = volLogUnreachable
	default:
		j.State = volStoreFailed
	}
	return j
}

// legFailureJSON is the daemon's record of a failed leg (volume status).
type legFailureJSON struct {
	State        string `json:"state"`         // degraded, data-failed, resyncing, read-errors
	FailedDevice string `json:"failed_device"` // the device that failed
	FailedLeg    int32  `json:"failed_leg"`    // its leg index in the table
	At           string `json:"at"`            // when it failed, RFC 3339
	Survivor     string `json:"survivor,omitempty"`
	RepairDevice string `json:"repair_device,omitempty"` // the new leg being resynced
	Summary      string `json:"summary"`                 // what failed and the way back
}

func volumeProblem(v volumeJSON) (problemJSON, bool) {
	if !volumeProblems[v.State] {
		return problemJSON{}, false
	}
	msg := ""
	switch v.State {
	case volDegradedLeg:
		var bad []string
		for _, l := range v.Legs {
			if l.Code != "A" {
				bad = append(bad, l.Device+" "+l.Health)
			}
		}
		msg = "leg " + strings.Join(bad, ", ") + ": replace the disk and repair the leg"
		if v.Failure != nil {
			msg = v.Failure.Summary
		}
	case volDataFailed:
		msg = "the data disk failed: I/O fails with EIO; restore the peer's replica onto a new disk, then `dmsync volume repair " + v.Name + " --data DEV`"
		if v.Failure != nil {
			msg = v.Failure.Summary
		}
	case volStoreFailed:
		msg = "the dirty log reports a failure (" + v.LogHealth + "): see `journalctl -u dmsyncd`"
	case volLogUnreachable:
		msg = "the kernel cannot reach dmsyncd's log server: see `systemctl status dmsyncd`"
	}
	return problemJSON{Kind: "volume", Name: v.Name, State: v.State, Message: msg}, true
}

func sendToJSON(s *adminpb.SendStatus, now time.Time) sendJSON {
	j := sendJSON{
		Volume: s.GetVolume(), Name: s.GetName(), LogUUID: s.GetLogUuid(), Peer: s.GetPeer(),
		State: sendStateOf(s.GetStateCode()).name, Detail: s.GetState(),
		SizeBytes: s.GetSize(), RegionBytes: s.GetRegionSize(),
		PendingRegions: s.GetPendingRegions(), PendingBytes: s.GetBytesToGo(), Rate: s.GetRateBytesPerSec(),
		BytesRead: s.GetBytesRead(), BytesSent: s.GetBytesSent(), Batches: s.GetBatches(), Failures: s.GetFailures(),
		RecoveryPoint: recoveryPointJSON{Basis: "last-ack"},
	}
	if j.Name == "" {
		j.Name = j.LogUUID
	}
	if s.GetBytesToGo() > 0 && s.GetRateBytesPerSec() > 0 {
		eta := s.GetEtaSeconds()
		j.ETASeconds = &eta
	}
	if t := s.GetLastAckUnixNano(); t != 0 {
		at := time.Unix(0, t).UTC()
		age := now.Sub(at).Seconds()
		j.LastAck, j.RecoveryPoint.Time, j.RecoveryPoint.AgeSeconds = &at, &at, &age
	} else {
		j.RecoveryPoint.Basis = "none"
	}
	if p := s.GetPoint(); p != nil {
		rp := &j.RecoveryPoint
		rp.Points, rp.IntervalSeconds, rp.Unavailable = p.GetPoints(), time.Duration(p.GetIntervalNano()).Seconds(), p.GetUnavailable()
		if p.GetSeq() > 0 {
			at := time.Unix(0, p.GetTakenAtUnixNano()).UTC()
			age := now.Sub(at).Seconds()
			rp.Basis, rp.Time, rp.AgeSeconds, rp.Seq = "consistent-point", &at, &age, p.GetSeq()
		}
		if p.GetPoints() > 0 {
			last, most := time.Duration(p.GetLastPauseNano()).Seconds(), time.Duration(p.GetMaxPauseNano()).Seconds()
			rp.PauseSeconds, rp.MaxPauseSeconds = &last, &most
		}
	}
	if r := s.GetPeerRoot(); len(r) > 0 {
		j.PeerRoot = hex.EncodeToString(r)
	}
	return j
}

func sendProblem(s sendJSON) (problemJSON, bool) {
	for _, st := range sendStates {
		if st.name == s.State && st.problem {
			msg := s.Detail
			if strings.Contains(msg, "volume size differs") {
				msg += fmt.Sprintf(": on the peer, `dmsync receive remove %s` and receive it again with --size %d", s.Name, s.SizeBytes)
			}
			return problemJSON{Kind: "send", Name: s.Volume, State: s.State, Message: msg}, true
		}
	}
	return problemJSON{}, false
}

func receiveToJSON(r *adminpb.ReceiveStatus, now time.Time) receiveJSON {
	j := receiveJSON{
		Volume: r.GetVolume(), From: r.GetFrom(), Image: r.GetImage(), SizeBytes: r.GetSize(),
		Error: r.GetError(), Chunks: r.GetChunks(), State: "consistent",
		RecoveryPoint: recoveryPointJSON{Basis: "none"},
	}
	if r.GetPointSeq() > 0 {
		at := time.Unix(0, r.GetPointTakenAtUnixNano()).UTC()
		age := now.Sub(at).Seconds()
		j.RecoveryPoint = recoveryPointJSON{Basis: "consistent-point", Time: &at, AgeSeconds: &age, Seq: r.GetPointSeq()}
	}
	if b := r.GetRoot(); len(b) > 0 {
		j.Root = hex.EncodeToString(b)
	}
	switch {
	case r.GetError() != "":
		j.State = "not-served"
	case r.GetApplying():
		j.State = "applying"
	case r.GetChunks() == 0 && r.GetPointSeq() == 0:
		j.State = "empty"
	case r.GetPointSeq() == 0:
		j.State = "no-point" // filled in place: not a point in time of the source yet
	}
	return j
}

// buildStatus asks the daemon for everything `dmsync status` shows.
func buildStatus(ctx context.Context, c *admin.Client, now time.Time) (*statusDoc, error) {
	d := &statusDoc{Version: statusVersion, Time: now.UTC(), Problems: []problemJSON{},
		Volumes: []volumeJSON{}, Sends: []sendJSON{}, Receives: []receiveJSON{}}
	if h, err := logpb.NewDaemonClient(c.Conn()).Health(ctx, &logpb.HealthRequest{}); err == nil {
		d.Daemon = &daemonJSON{Summary: h.GetSummary(), StoreFailed: h.GetStoreFailed(), ReplicatorUp: h.GetReplicatorUp(), Volumes: h.GetVolumes()}
		d.Problems = append(d.Problems, daemonProblems(h)...)
		if !h.GetReplicatorUp() {
			// Only the log server answers: volumes and replication are
			// the replicator's, and it is restarting.
			d.OK = false
			return d, nil
		}
	} else if errors.Is(err, admin.ErrNotRunning) || errors.Is(err, admin.ErrPermission) {
		return nil, err
	}
	node, err := c.Replication().Node(ctx, &adminpb.NodeRequest{})
	if err != nil {
		return nil, err
	}
	// A node without an identity is fine until it is asked to replicate:
	// then its sends are replicator-down and its receives not-served.
	d.Node = nodeJSON{ID: node.GetId(), Listen: node.GetListen()}
	vl, err := c.Volumes().VolumeList(ctx, &adminpb.VolumeListRequest{})
	switch {
	case err == nil:
		for _, v := range vl.GetVolumes() {
			s, err := c.Volumes().VolumeStatus(ctx, &adminpb.VolumeStatusRequest{Name: v.GetName()})
			if errors.Is(err, admin.ErrNotFound) {
				continue // removed meanwhile
			}
			if err != nil {
				return nil, fmt.Errorf("status of volume %s: %w", v.GetName(), err)
			}
			d.Volumes = append(d.Volumes, volumeToJSON(s))
		}
	case errors.Is(err, admin.ErrNotRunning), errors.Is(err, context.Canceled):
		return nil, err
	default:
		d.VolumesError = err.Error()
	}
	rs, err := c.Replication().Status(ctx, &adminpb.StatusRequest{})
	if err != nil {
		return nil, err
	}
	for _, s := range rs.GetSends() {
		d.Sends = append(d.Sends, sendToJSON(s, now))
	}
	for _, r := range rs.GetReceives() {
		d.Receives = append(d.Receives, receiveToJSON(r, now))
	}
	for _, v := range d.Volumes {
		if p, bad := volumeProblem(v); bad {
			d.Problems = append(d.Problems, p)
		}
	}
	for _, s := range d.Sends {
		if p, bad := sendProblem(s); bad {
			d.Problems = append(d.Problems, p)
		}
	}
	for _, r := range d.Receives {
		if r.State == "not-served" {
			d.Problems = append(d.Problems, problemJSON{Kind: "receive", Name: r.Volume, State: r.State, Message: r.Error})
		}
	}
	d.OK = len(d.Problems) == 0
	return d, nil
}

// Daemon problem states (kind "daemon").
const (
	daemonStoreFailed    = "store-failed"    // the dirty log's store failed: served from memory
	daemonReplicatorDown = "replicator-down" // the replicator process is down and restarting
	daemonComponent      = "failed"          // a part of the replicator failed alone
)

// daemonProblems turns the log server's health into problems: the store,
// the replicator, and each part of the replicator that failed alone (its
// listener, config.json, the node key, a receive's image).
func daemonProblems(h *logpb.HealthResponse) []problemJSON {
	var ps []problemJSON
	covered := map[string]bool{}
	if h.GetStoreFailed() {
		ps = append(ps, problemJSON{Kind: "daemon", Name: "store", State: daemonStoreFailed, Message: h.GetSummary()})
		covered["store"] = true
	}
	if !h.GetReplicatorUp() {
		ps = append(ps, problemJSON{Kind: "daemon", Name: "replicator", State: daemonReplicatorDown, Message: h.GetSummary()})
		covered["replicator"] = true
	}
	for _, p := range h.GetProblems() {
		if covered[p.GetComponent()] || p.GetMessage() == "" {
			continue
		}
		ps = append(ps, problemJSON{Kind: "daemon", Name: p.GetComponent(), State: daemonComponent, Message: p.GetMessage()})
	}
	return ps
}

// errProblems is returned by the status commands when something is wrong
// (exit 1), after the status was printed.
var errProblems = errors.New("status shows problems")

func problemsErr(ps []problemJSON) error {
	if len(ps) == 0 {
		return nil
	}
	p := ps[0]
	name := p.Kind
	if p.Name != "" {
		name += " " + p.Name
	}
	more := ""
	if len(ps) > 1 {
		more = fmt.Sprintf(" (and %d more)", len(ps)-1)
	}
	return fmt.Errorf("%w: %s is %s%s", errProblems, name, p.State, more)
}
