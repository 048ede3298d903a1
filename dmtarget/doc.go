// Package dmtarget creates, reloads, suspends, inspects and removes
// device-mapper devices through the dm ioctl interface, and builds dmsync's
// stack: a mirror with a userspace dirty log, optionally with dm-crypt on top.
//
// Legs (legs.go, legfailure.go, legrepair.go, legrecord.go) is the daemon's
// failed-leg watcher: it waits on every userspace-log mirror's dm events,
// moves a two-disk volume whose leg failed onto the survivor, makes a volume
// whose data disk failed return EIO instead of hanging, keeps a durable
// record of the failure, and repairs the volume with a new device.
package dmtarget
