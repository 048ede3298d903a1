package logd

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Wire layout of one kernel message (include/uapi/linux/netlink.h,
// connector.h and dm-log-userspace.h), all integers in host byte order:
//
//	nlmsghdr  16 bytes: len u32, type u16, flags u16, seq u32, pid u32
//	cn_msg    20 bytes: idx u32, val u32, seq u32, ack u32, len u16, flags u16
//	dm_ulog_request 160 bytes: luid u64 @0, uuid[129] @8, padding[3] @137,
//	          version u32 @140, error s32 @144, seq u32 @148,
//	          request_type u32 @152, data_size u32 @156
//	data      data_size bytes
//
// The connector rejects a message whose nlmsg_len is not exactly
// 16 + 20 + cn_msg.len, and cn_msg.len must be 160 + data_size.
const (
	NlmsgHdrLen   = 16  // sizeof(struct nlmsghdr)
	CnMsgLen      = 20  // sizeof(struct cn_msg)
	ULogHdrLen    = 160 // sizeof(struct dm_ulog_request)
	UUIDLen       = 129 // DM_UUID_LEN
	headersLen    = NlmsgHdrLen + CnMsgLen + ULogHdrLen
	nlmsgDone     = 3 // NLMSG_DONE, the type the connector uses
	nlmsgAlignTo  = 4
	requestTypeMk = 0xff // DM_ULOG_REQUEST_MASK
)

// Connector identity of dm-log-userspace (include/uapi/linux/connector.h).
const (
	CnIdxDM            = 7 // CN_IDX_DM
	CnValDMUserspaceLg = 1 // CN_VAL_DM_USERSPACE_LOG
)

// MaxDataSize bounds the payload we accept or send. The kernel allocates
// its connector buffers with a page-sized limit (DM_ULOG_PREALLOCED_SIZE is
// 512 bytes for requests); anything near 64 KiB is garbage.
const MaxDataSize = 65535 - ULogHdrLen

// Sentinel decode errors; callers drop the message and log the reason.
var (
	ErrShort    = errors.New("logd: message too short")
	ErrLength   = errors.New("logd: inconsistent length field")
	ErrNotDMLog = errors.New("logd: connector message is not for dm-log-userspace")
)

// RequestType is the low byte of dm_ulog_request.request_type.
type RequestType uint8

// Request types of include/uapi/linux/dm-log-userspace.h.
const (
	ReqCtr                RequestType = 1
	ReqDtr                RequestType = 2
	ReqPresuspend         RequestType = 3
	ReqPostsuspend        RequestType = 4
	ReqResume             RequestType = 5
	ReqGetRegionSize      RequestType = 6
	ReqIsClean            RequestType = 7
	ReqInSync             RequestType = 8
	ReqFlush              RequestType = 9
	ReqMarkRegion         RequestType = 10
	ReqClearRegion        RequestType = 11
	ReqGetResyncWork      RequestType = 12
	ReqSetRegionSync      RequestType = 13
	ReqGetSyncCount       RequestType = 14
	ReqStatusInfo         RequestType = 15
	ReqStatusTable        RequestType = 16
	ReqIsRemoteRecovering RequestType = 17
)

var requestNames = [...]string{
	ReqCtr: "CTR", ReqDtr: "DTR", ReqPresuspend: "PRESUSPEND",
	ReqPostsuspend: "POSTSUSPEND", ReqResume: "RESUME",
	ReqGetRegionSize: "GET_REGION_SIZE", ReqIsClean: "IS_CLEAN",
	ReqInSync: "IN_SYNC", ReqFlush: "FLUSH", ReqMarkRegion: "MARK_REGION",
	ReqClearRegion: "CLEAR_REGION", ReqGetResyncWork: "GET_RESYNC_WORK",
	ReqSetRegionSync: "SET_REGION_SYNC", ReqGetSyncCount: "GET_SYNC_COUNT",
	ReqStatusInfo: "STATUS_INFO", ReqStatusTable: "STATUS_TABLE",
	ReqIsRemoteRecovering: "IS_REMOTE_RECOVERING",
}

// String returns the header's name without the DM_ULOG_ prefix.
func (t RequestType) String() string {
	if int(t) < len(requestNames) && requestNames[t] != "" {
		return requestNames[t]
	}
	return fmt.Sprintf("UNKNOWN(%d)", uint8(t))
}

// Request is struct dm_ulog_request plus its data.
type Request struct {
	Luid        uint64
	UUID        [UUIDLen]byte // NUL-padded
	Version     uint32
	Error       int32
	Seq         uint32
	RequestType uint32 // full field; Type() masks the low byte
	Data        []byte // aliases the decoded buffer
}

// Type returns DM_ULOG_REQUEST_TYPE(request_type).
func (r *Request) Type() RequestType { return RequestType(r.RequestType & requestTypeMk) }

// UUIDBytes returns the UUID up to its first NUL, aliasing r.
func (r *Request) UUIDBytes() []byte {
	for i, b := range r.UUID {
		if b == 0 {
			return r.UUID[:i]
		}
	}
	return r.UUID[:]
}

// SetUUID stores s (truncated to UUIDLen-1 bytes) NUL-padded.
func (r *Request) SetUUID(s string) {
	r.UUID = [UUIDLen]byte{}
	copy(r.UUID[:UUIDLen-1], s)
}

// Message is one connector message: the netlink and connector header
// fields a reply must echo, and the dm-log request.
type Message struct {
	NlFlags uint16
	NlSeq   uint32
	NlPid   uint32
	CnSeq   uint32
	CnAck   uint32
	CnFlags uint16
	Req     Request
}

// DecodeMessage decodes the first netlink message in b. It returns the
// message and the bytes after it (aligned to 4). Data aliases b. A
// connector message for another idx/val yields ErrNotDMLog and the rest.
func DecodeMessage(b []byte) (m Message, rest []byte, err error) {
	if len(b) < NlmsgHdrLen {
		return m, nil, fmt.Errorf("%w: %d bytes, need a %d-byte nlmsghdr", ErrShort, len(b), NlmsgHdrLen)
	}
	ne := binary.NativeEndian
	nlLen := int(ne.Uint32(b[0:]))
	if nlLen < NlmsgHdrLen || nlLen > len(b) {
		return m, nil, fmt.Errorf("%w: nlmsg_len %d with %d bytes received", ErrLength, nlLen, len(b))
	}
	rest = b[min(align4(nlLen), len(b)):]
	msg := b[:nlLen]
	m.NlFlags = ne.Uint16(msg[6:])
	m.NlSeq = ne.Uint32(msg[8:])
	m.NlPid = ne.Uint32(msg[12:])
	cn := msg[NlmsgHdrLen:]
	if len(cn) < CnMsgLen {
		return m, rest, fmt.Errorf("%w: %d bytes after nlmsghdr, need a %d-byte cn_msg", ErrShort, len(cn), CnMsgLen)
	}
	idx, val := ne.Uint32(cn[0:]), ne.Uint32(cn[4:])
	m.CnSeq = ne.Uint32(cn[8:])
	m.CnAck = ne.Uint32(cn[12:])
	cnLen := int(ne.Uint16(cn[16:]))
	m.CnFlags = ne.Uint16(cn[18:])
	if idx != CnIdxDM || val != CnValDMUserspaceLg {
		return m, rest, fmt.Errorf("%w: idx %d val %d", ErrNotDMLog, idx, val)
	}
	body := cn[CnMsgLen:]
	if cnLen > len(body) {
		return m, rest, fmt.Errorf("%w: cn_msg.len %d with %d bytes left", ErrLength, cnLen, len(body))
	}
	body = body[:cnLen]
	if len(body) < ULogHdrLen {
		return m, rest, fmt.Errorf("%w: cn_msg.len %d, need a %d-byte dm_ulog_request", ErrShort, cnLen, ULogHdrLen)
	}
	r := &m.Req
	r.Luid = ne.Uint64(body[0:])
	copy(r.UUID[:], body[8:8+UUIDLen])
	r.Version = ne.Uint32(body[140:])
	r.Error = int32(ne.Uint32(body[144:]))
	r.Seq = ne.Uint32(body[148:])
	r.RequestType = ne.Uint32(body[152:])
	dataSize := int(ne.Uint32(body[156:]))
	if dataSize > len(body)-ULogHdrLen {
		return m, rest, fmt.Errorf("%w: data_size %d with %d bytes left", ErrLength, dataSize, len(body)-ULogHdrLen)
	}
	if dataSize > 0 {
		r.Data = body[ULogHdrLen : ULogHdrLen+dataSize : ULogHdrLen+dataSize]
	}
	return m, rest, nil
}

// EncodedLen is the number of bytes AppendMessage adds for m, padding
// included.
func EncodedLen(dataLen int) int { return align4(headersLen + dataLen) }

// AppendMessage appends m (with data) to dst as one netlink message of type
// NLMSG_DONE, padded to 4 bytes. It fails if the data is larger than
// MaxDataSize.
func AppendMessage(dst []byte, m *Message, data []byte) ([]byte, error) {
	if len(data) > MaxDataSize {
		return dst, fmt.Errorf("%w: data of %d bytes exceeds %d", ErrLength, len(data), MaxDataSize)
	}
	ne := binary.NativeEndian
	total := headersLen + len(data)
	start := len(dst)
	dst = append(dst, make([]byte, align4(total))...)
	b := dst[start:]
	ne.PutUint32(b[0:], uint32(total))
	ne.PutUint16(b[4:], nlmsgDone)
	ne.PutUint16(b[6:], m.NlFlags)
	ne.PutUint32(b[8:], m.NlSeq)
	ne.PutUint32(b[12:], m.NlPid)
	cn := b[NlmsgHdrLen:]
	ne.PutUint32(cn[0:], CnIdxDM)
	ne.PutUint32(cn[4:], CnValDMUserspaceLg)
	ne.PutUint32(cn[8:], m.CnSeq)
	ne.PutUint32(cn[12:], m.CnAck)
	ne.PutUint16(cn[16:], uint16(ULogHdrLen+len(data)))
	ne.PutUint16(cn[18:], m.CnFlags)
	body := cn[CnMsgLen:]
	r := &m.Req
	ne.PutUint64(body[0:], r.Luid)
	copy(body[8:8+UUIDLen], r.UUID[:])
	ne.PutUint32(body[140:], r.Version)
	ne.PutUint32(body[144:], uint32(r.Error))
	ne.PutUint32(body[148:], r.Seq)
	ne.PutUint32(body[152:], r.RequestType)
	ne.PutUint32(body[156:], uint32(len(data)))
	copy(body[ULogHdrLen:], data)
	return dst, nil
}

func align4(n int) int { return (n + nlmsgAlignTo - 1) &^ (nlmsgAlignTo - 1) }
