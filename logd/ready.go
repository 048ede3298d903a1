package logd

// Ready is the work a Step leaves for the caller, in the style of etcd's
// raft. Handle it in this order:
//
//  1. Write Changes to the store in one batch; if MustSync, sync it and wait
//     for the sync to return (group commit: one sync per Ready).
//  2. Send Replies to the kernel (a FLUSH reply must not leave before step 1).
//  3. Log Notes and publish Notify to change-feed subscribers.
//  4. Call Advance.
//
// The slices alias the Core's buffers and are valid until Advance. The caller
// must not Step between Ready and Advance.
type Ready struct {
	Replies  []Reply
	Changes  []Change
	MustSync bool
	Notes    []Note
	Notify   []string // volumes that gained pending regions or became quiet
}

// Reply is the answer to one request: the request's headers echoed, with
// Error and a payload.
type Reply struct {
	Msg   Message // Req.Data is nil; Req.Error is set
	small [16]byte
	n     uint8
	text  string
}

// Data returns the reply payload.
func (r *Reply) Data() []byte {
	if r.text != "" {
		return []byte(r.text)
	}
	return r.small[:r.n]
}

// Append encodes the reply as a netlink message onto dst.
func (r *Reply) Append(dst []byte) ([]byte, error) {
	if r.text != "" {
		return AppendMessage(dst, &r.Msg, []byte(r.text))
	}
	return AppendMessage(dst, &r.Msg, r.small[:r.n])
}

// ChangeKind says what a Change persists.
type ChangeKind uint8

// Change kinds. Bitmap chunks carry ChunkBits regions each.
const (
	ChangeVolume  ChangeKind = iota + 1 // Meta of the volume
	ChangeInSync                        // in-sync bitmap chunk (bit set = in sync)
	ChangeMarked                        // marked bitmap chunk (bit set = marked)
	ChangePending                       // pending region with Gen; Gen 0 removes it
)

// Change is one durable state change of a volume. A Ready's Changes hold
// the final state of every key touched since the previous Ready.
type Change struct {
	Kind   ChangeKind
	UUID   string
	Meta   VolumeMeta // ChangeVolume
	Chunk  uint64     // ChangeInSync, ChangeMarked
	Words  []uint64   // chunk contents (a copy)
	Region uint64     // ChangePending
	Gen    uint64     // ChangePending
}

// VolumeMeta is a volume's persisted header.
type VolumeMeta struct {
	RegionSectors uint64 // region size in 512-byte sectors
	Regions       uint64 // region count
	Sectors       uint64 // device length in sectors
	NextGen       uint64 // last generation handed out by a MARK
	Table         string // log arguments after <sectors>, for STATUS_TABLE
}

// NoteLevel ranks a Note.
type NoteLevel uint8

// Note levels.
const (
	NoteInfo NoteLevel = iota
	NoteWarn
)

// Note is an event the shell should log: why a request failed, a volume
// created. Core itself does no logging.
type Note struct {
	Level NoteLevel
	UUID  string
	Luid  uint64
	Type  RequestType
	Seq   uint32
	Msg   string
}
