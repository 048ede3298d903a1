package dmtarget

import (
	"reflect"
	"testing"
)

func TestParseMirrorStatus(t *testing.T) {
	for _, tc := range []struct {
		in      string
		legs    string // health chars
		inSync  uint64
		regions uint64
		logType string
		health  string
		healthy bool
	}{
		// kernel-facts.md: one-disk mode with nosync.
		{"2 253:1 253:2 128/128 1 AA 1 core", "AA", 128, 128, "core", "", true},
		// kernel-facts.md: leg 0 failing reads, sink also failing.
		{"2 253:1 253:2 128/128 1 RR 1 core", "RR", 128, 128, "core", "", false},
		// Leg 0 failing writes under handle_errors.
		{"2 253:1 253:2 64/128 1 DA 1 core", "DA", 64, 128, "core", "", false},
		// disk log with its health char.
		{"2 8:16 8:32 0/2048 1 AA 3 disk 8:48 A", "AA", 0, 2048, "disk", "A", true},
		{"2 8:16 8:32 0/2048 1 AA 3 disk 8:48 D", "AA", 0, 2048, "disk", "D", false},
		// userspace log: the daemon's STATUS_INFO text.
		{"2 253:1 253:2 128/128 1 AA 3 userspace DMSYNC-abc A", "AA", 128, 128, "userspace", "A", true},
		// userspace log whose daemon did not answer.
		{"2 253:1 253:2 128/128 1 AA userspace 1 COM_FAILURE", "AA", 128, 128, "userspace", "COM_FAILURE", false},
		{"3 8:16 8:32 8:48 100/200 1 ASU 1 core", "ASU", 100, 200, "core", "", false},
		{"2 253:1 253:2 1/3 1 AF 1 core", "AF", 1, 3, "core", "", false},
		// dmsyncd's STATUS_INFO: a one-digit pending count is no health.
		{"2 254:16 254:32 128/128 1 AA 3 dmsync 128/128 5", "AA", 128, 128, "dmsync", "", true},
	} {
		st, err := ParseMirrorStatus(tc.in)
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		var legs []byte
		for _, l := range st.Legs {
			legs = append(legs, l.Health)
		}
		if string(legs) != tc.legs || st.InSync != tc.inSync || st.Regions != tc.regions ||
			st.LogType != tc.logType || st.LogHealth != tc.health || st.Healthy() != tc.healthy {
			t.Errorf("%q: got %+v healthy=%v", tc.in, st, st.Healthy())
		}
	}
	st, _ := ParseMirrorStatus("2 254:16 254:32 128/128 1 AA 3 dmsync 100/128 17")
	if !st.HasReplicationPending || st.ReplicationPending != 17 {
		t.Errorf("dmsync pending: %+v", st)
	}
	st, _ = ParseMirrorStatus("2 253:1 253:2 32/128 1 AA 1 core")
	if st.HasReplicationPending {
		t.Errorf("core log has no replication count: %+v", st)
	}
	if st.SyncRatio() != 0.25 || st.Legs[1].Dev != "253:2" {
		t.Errorf("ratio %v legs %+v", st.SyncRatio(), st.Legs)
	}
	for _, bad := range []string{
		"",
		"x 253:1",
		"2 253:1 253:2 128/128 1 A 1 core",     // one health char for two legs
		"2 253:1 253:2 129/128 1 AA 1 core",    // more in sync than regions
		"2 253:1 253:2 128-128 1 AA 1 core",    // no slash
		"2 253:1 253:2 128/128 1 AX 1 core",    // unknown health
		"2 253:1 253:2 128/128 1 AA 2 core",    // log argc mismatch
		"2 253:1 253:2 128/128 2 AA AA 1 core", // health field count
		"0 1/1 1  1 core",
	} {
		if _, err := ParseMirrorStatus(bad); err == nil {
			t.Errorf("ParseMirrorStatus(%q) succeeded", bad)
		}
	}
}

func TestParseMirrorTable(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want MirrorTable
	}{
		{"core 2 1024 nosync 2 /dev/vda 0 /dev/mapper/v-sink 0 1 handle_errors", MirrorTable{
			LogType: "core", LogArgs: []string{"1024", "nosync"}, RegionSectors: 1024,
			Legs:     []MirrorLeg{{Dev: "/dev/vda"}, {Dev: "/dev/mapper/v-sink"}},
			Features: []string{"handle_errors"},
		}},
		{"disk 2 253:3 1024 2 253:1 0 253:2 8", MirrorTable{
			LogType: "disk", LogArgs: []string{"253:3", "1024"}, RegionSectors: 1024,
			Legs: []MirrorLeg{{Dev: "253:1"}, {Dev: "253:2", Offset: 8}},
		}},
		// As loaded.
		{"userspace 4 DMSYNC-abc integrated_flush core 8192 2 253:1 0 253:2 0 1 handle_errors", MirrorTable{
			LogType: "userspace", LogArgs: []string{"DMSYNC-abc", "integrated_flush", "core", "8192"},
			UUID: "DMSYNC-abc", IntegratedFlush: true, InnerLogType: "core", InnerLogArgs: []string{"8192"},
			RegionSectors: 8192, Legs: []MirrorLeg{{Dev: "253:1"}, {Dev: "253:2"}}, Features: []string{"handle_errors"},
		}},
		// As a kernel reports it (count without uuid and integrated_flush).
		{"userspace 2 DMSYNC-abc integrated_flush core 8192 2 253:1 0 253:2 0 1 handle_errors", MirrorTable{
			LogType: "userspace", LogArgs: []string{"DMSYNC-abc", "integrated_flush", "core", "8192"},
			UUID: "DMSYNC-abc", IntegratedFlush: true, InnerLogType: "core", InnerLogArgs: []string{"8192"},
			RegionSectors: 8192, Legs: []MirrorLeg{{Dev: "253:1"}, {Dev: "253:2"}}, Features: []string{"handle_errors"},
		}},
		// kernel-facts.md "Tables that worked": no integrated_flush, nosync.
		{"userspace 4 UUID core 1024 nosync 2 /dev/A 0 /dev/B 0", MirrorTable{
			LogType: "userspace", LogArgs: []string{"UUID", "core", "1024", "nosync"},
			UUID: "UUID", InnerLogType: "core", InnerLogArgs: []string{"1024", "nosync"},
			RegionSectors: 1024, Legs: []MirrorLeg{{Dev: "/dev/A"}, {Dev: "/dev/B"}},
		}},
	} {
		got, err := ParseMirrorTable(tc.in)
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q:\n got %+v\nwant %+v", tc.in, got, tc.want)
		}
	}
	for _, bad := range []string{"", "core", "core 5 1024", "core 1 1024 2 a 0", "userspace 1", "userspace 3 u core 1024 x"} {
		if _, err := ParseMirrorTable(bad); err == nil {
			t.Errorf("ParseMirrorTable(%q) succeeded", bad)
		}
	}
}

func FuzzParseMirror(f *testing.F) {
	f.Add("2 253:1 253:2 128/128 1 AA 1 core")
	f.Add("userspace 4 DMSYNC-abc integrated_flush core 8192 2 253:1 0 253:2 0 1 handle_errors")
	f.Add("2 253:1 253:2 128/128 1 AA userspace 1 COM_FAILURE")
	f.Fuzz(func(t *testing.T, s string) {
		if st, err := ParseMirrorStatus(s); err == nil {
			if st.InSync > st.Regions || len(st.Legs) == 0 {
				t.Fatalf("accepted inconsistent status %q: %+v", s, st)
			}
		}
		if tb, err := ParseMirrorTable(s); err == nil && len(tb.Legs) == 0 {
			t.Fatalf("accepted table without legs %q", s)
		}
	})
}
