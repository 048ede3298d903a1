package dmtarget

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Volume is a mirror the builder made, or one with a userspace log made
// by hand (dmsetup), with the layers around it.
type Volume struct {
	Name          string   // top device: /dev/mapper/Name (crypt if any, else the mirror)
	Mirror        string   // dm name of the mirror device
	Crypt         string   // "", "luks2", "plain" or "crypt" (other crypt setups)
	LogType       string   // userspace or core
	LogUUID       string   // userspace log uuid ("" for core)
	OneDisk       bool     // leg 1 is a dmsync sink
	Legs          []string // the mirror legs as the kernel reports them (major:minor)
	Sectors       uint64   // mirror length in 512-byte sectors
	RegionSectors uint64
	Devices       []string // every dm device of the volume, top first (removal order)
	Managed       bool     // created by dmsync (dm uuid DMSYNC-MIRROR-...)
	// DataFailed: the data disk failed and the mirror was reloaded to an
	// error table (Builder.Records has the record).
	DataFailed bool
}

// VolumeStatus is a volume with its live state.
type VolumeStatus struct {
	Volume
	Mirror    MirrorStatus
	OpenCount int32 // opens of the top device (a mount counts)
	Suspended bool
	EventNr   uint32 // mirror event number, for DM.Wait
	// Failure is the volume's leg failure record, if any (needs
	// Builder.Records).
	Failure *LegFailure
}

// PendingRegions is the number of regions the kernel has not yet synced
// between the legs (not replication to a peer: that is the daemon's).
func (s VolumeStatus) PendingRegions() uint64 { return s.Mirror.Regions - s.Mirror.InSync }

type dmDev struct {
	info  Info
	table []Target
}

// List returns the dmsync volumes and userspace-log mirrors, by name.
func (b *Builder) List(ctx context.Context) ([]Volume, error) {
	names, err := b.DM.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	devs := map[string]dmDev{}
	byDevT := map[string]string{}
	for _, n := range names {
		info, table, err := b.DM.Table(ctx, n.Name)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list volumes: %w", err)
		}
		devs[n.Name] = dmDev{info, table}
		byDevT[info.DevT()] = n.Name
	}
	var vols []Volume
	for name, d := range devs {
		if len(d.table) != 1 || d.table[0].Type != "mirror" {
			continue
		}
		mt, err := ParseMirrorTable(d.table[0].Params)
		if err != nil {
			continue
		}
		managed := strings.HasPrefix(d.info.UUID, uuidPrefixMirror)
		if !managed && mt.LogType != LogUserspace {
			continue
		}
		v := Volume{
			Name: name, Mirror: name, LogType: mt.LogType, LogUUID: mt.UUID,
			Sectors: d.table[0].Length, RegionSectors: mt.RegionSectors, Managed: managed,
		}
		if v.LogType == "userspace" {
			v.LogType = LogUserspace
		}
		for _, l := range mt.Legs {
			v.Legs = append(v.Legs, l.Dev)
		}
		v.Devices = []string{name}
		// A sink as leg 1: flakey over error, both made by dmsync.
		if len(mt.Legs) == 2 {
			if s, ok := byDevT[mt.Legs[1].Dev]; ok && strings.HasPrefix(devs[s].info.UUID, uuidPrefixSink) {
				v.OneDisk = true
				v.Devices = append(v.Devices, s)
				if st := devs[s].table; len(st) == 1 {
					if f := strings.Fields(st[0].Params); len(f) > 0 {
						if e, ok := byDevT[f[0]]; ok && strings.HasPrefix(devs[e].info.UUID, uuidPrefixSinkErr) {
							v.Devices = append(v.Devices, e)
						}
					}
				}
			}
		}
		addCrypt(&v, devs, d.info.DevT())
		vols = append(vols, v)
	}
	vols = append(vols, b.failedVolumes(devs, byDevT)...)
	sort.Slice(vols, func(i, j int) bool { return vols[i].Name < vols[j].Name })
	return vols, nil
}

// addCrypt puts a crypt device on top of the mirror (devT) into v.
func addCrypt(v *Volume, devs map[string]dmDev, devT string) {
	for cname, c := range devs {
		if len(c.table) != 1 || c.table[0].Type != "crypt" {
			continue
		}
		f := strings.Fields(c.table[0].Params)
		if len(f) >= 4 && f[3] == devT {
			v.Name = cname
			v.Crypt = cryptKind(c.info.UUID)
			v.Devices = append([]string{cname}, v.Devices...)
			return
		}
	}
}

// failedVolumes returns the volumes whose mirror was reloaded to an error
// table after its data disk failed: they are known by their records.
func (b *Builder) failedVolumes(devs map[string]dmDev, byDevT map[string]string) []Volume {
	if b.Records == nil {
		return nil
	}
	recs, err := b.Records.All()
	if err != nil {
		b.logger().Warn("leg failure records", "err", err)
	}
	var out []Volume
	for _, r := range recs {
		d, ok := devs[r.Mirror]
		if r.State != StateDataFailed || !ok || len(d.table) != 1 || d.table[0].Type != "error" {
			continue
		}
		v := Volume{Name: r.Mirror, Mirror: r.Mirror, LogType: LogUserspace, LogUUID: r.LogUUID, OneDisk: r.OneDisk,
			Sectors: d.table[0].Length, Managed: strings.HasPrefix(d.info.UUID, uuidPrefixMirror), DataFailed: true,
			Devices: []string{r.Mirror}}
		if t, err := ParseTable(r.Table); err == nil && len(t) == 1 {
			if mt, err := ParseMirrorTable(t[0].Params); err == nil {
				v.RegionSectors = mt.RegionSectors
				for _, l := range mt.Legs {
					v.Legs = append(v.Legs, l.Dev)
				}
			}
		}
		for _, n := range []string{sinkName(r.Volume), sinkErrName(r.Volume)} {
			if _, ok := devs[n]; ok {
				v.Devices = append(v.Devices, n)
			}
		}
		addCrypt(&v, devs, d.info.DevT())
		out = append(out, v)
	}
	return out
}

func cryptKind(dmUUID string) string {
	switch {
	case strings.HasPrefix(dmUUID, "CRYPT-LUKS2-"):
		return CryptLUKS2
	case strings.HasPrefix(dmUUID, "CRYPT-PLAIN-"):
		return CryptPlain
	}
	return "crypt"
}

// Find returns the volume whose top or mirror device is named name.
func (b *Builder) Find(ctx context.Context, name string) (Volume, error) {
	vols, err := b.List(ctx)
	if err != nil {
		return Volume{}, err
	}
	for _, v := range vols {
		if v.Name == name || v.Mirror == name {
			return v, nil
		}
	}
	// A managed volume whose crypt device is gone (a remove that failed
	// half-way) is still found by its name, so it can be removed.
	for _, v := range vols {
		if v.Managed && v.Name == v.Mirror && v.Mirror == mirrorName(VolumeSpec{Name: name, Crypt: CryptPlain}) {
			return v, nil
		}
	}
	if _, err := b.DM.Info(ctx, name); err == nil {
		return Volume{}, fmt.Errorf("%w: dm device %s is not a dmsync volume (no mirror with a userspace log below it): remove it with dmsetup remove %s", ErrNoVolume, name, name)
	}
	return Volume{}, fmt.Errorf("%w: no volume named %s: see dmsync volume list", ErrNoVolume, name)
}

// ErrNoVolume: the named volume does not exist.
var ErrNoVolume = errors.New("no such volume")

// Status returns a volume's live state: mirror status decoded, open count.
func (b *Builder) Status(ctx context.Context, name string) (VolumeStatus, error) {
	v, err := b.Find(ctx, name)
	if err != nil {
		return VolumeStatus{}, err
	}
	vs := VolumeStatus{Volume: v}
	if b.Records != nil && v.LogUUID != "" {
		rec, err := b.Records.Get(v.LogUUID)
		if err != nil {
			b.logger().Warn("leg failure record", "volume", name, "err", err)
		}
		vs.Failure = rec
		if rec != nil && !rec.OneDisk {
			vs.OneDisk = false // a degraded two-disk volume: its sink stands in for the failed leg
		}
	}
	info, st, err := b.DM.Status(ctx, v.Mirror)
	if err != nil {
		return vs, fmt.Errorf("status of volume %s: %w", name, err)
	}
	vs.EventNr, vs.Suspended = info.EventNr, info.Suspended
	vs.OpenCount = info.OpenCount
	if v.DataFailed {
		if v.Name != v.Mirror {
			if top, err := b.DM.Info(ctx, v.Name); err == nil {
				vs.OpenCount = top.OpenCount
			}
		}
		return vs, nil
	}
	if len(st) != 1 || st[0].Type != "mirror" {
		return vs, fmt.Errorf("status of volume %s: mirror %s has %d targets, want one mirror", name, v.Mirror, len(st))
	}
	if vs.Mirror, err = ParseMirrorStatus(st[0].Params); err != nil {
		return vs, fmt.Errorf("status of volume %s: %w", name, err)
	}
	if v.Name != v.Mirror {
		top, err := b.DM.Info(ctx, v.Name)
		if err != nil {
			return vs, fmt.Errorf("status of volume %s: %w", name, err)
		}
		vs.OpenCount = top.OpenCount
	}
	return vs, nil
}

// Remove removes a volume's devices, top first. It refuses while the top
// device is open (mounted or in use).
func (b *Builder) Remove(ctx context.Context, name string) error {
	v, err := b.Find(ctx, name)
	if err != nil {
		return err
	}
	top, err := b.DM.Info(ctx, v.Name)
	if err != nil {
		return fmt.Errorf("remove volume %s: %w", name, err)
	}
	if top.OpenCount > 0 {
		return fmt.Errorf("remove volume %s: %w: /dev/mapper/%s is open %d time(s): unmount it (or stop its user) first", name, ErrBusy, v.Name, top.OpenCount)
	}
	// Each device below the top is held open once, by the one above it:
	// any other opener (a replication pass reading the mirror, a dd)
	// would make its removal fail half-way, so nothing is removed then.
	for _, d := range v.Devices[1:] {
		info, err := b.DM.Info(ctx, d)
		if err != nil {
			return fmt.Errorf("remove volume %s: %w", name, err)
		}
		if info.OpenCount > 1 {
			return fmt.Errorf("remove volume %s: %w: /dev/mapper/%s is open %d time(s), by more than the device above it (a replication pass reading it, or another user): nothing was removed; retry, or `dmsync replicate stop` the volume first", name, ErrBusy, d, info.OpenCount)
		}
	}
	for i, d := range v.Devices {
		var err error
		if i == 0 && v.Crypt == CryptLUKS2 || i == 0 && v.Crypt == CryptPlain {
			err = b.Host.Run(ctx, b.cryptsetup(), "close", d)
		} else {
			err = b.DM.Remove(ctx, d)
		}
		if err != nil {
			return fmt.Errorf("remove volume %s: removed %v, then %s failed (remaining: %v): %w", name, v.Devices[:i], d, v.Devices[i:], err)
		}
	}
	if b.Records != nil && v.LogUUID != "" {
		if err := b.Records.Delete(v.LogUUID); err != nil {
			b.logger().Warn("volume removed, its leg failure record not", "volume", name, "err", err)
		}
	}
	b.logger().Info("volume removed", "volume", name, "devices", v.Devices)
	return nil
}
