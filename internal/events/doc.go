// Package events is dmsyncd's event stream, like `drbdsetup events2`: a
// leg failed or was repaired, a peer went up or down, a volume reached a
// consistent point, verify found differences, the state store failed.
//
// A Hub keeps the latest events in a bounded ring and hands them to
// subscribers without ever blocking the emitter: a subscriber that falls
// behind loses its subscription (and is told so) instead of slowing the
// daemon. Watch derives events from successive opstate snapshots; Handlers
// runs the executables of a directory (/etc/dmsync/events.d) on each event.
package events
