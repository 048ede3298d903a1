// Package dmsync replicates a Linux block device to a peer by serving the
// kernel's device-mapper userspace dirty log.
//
// The data path, one package per step:
//
//	kernel mirror ──► logd      which regions changed (dm-log-userspace server)
//	              ──► pebble    durable state: dirty log, chunk index, progress
//	              ──► blockhash rehash only the changed regions (CDC + Merkle)
//	              ──► rpc       send the peer what it lacks; durable ack
//	              ──► peer      verifies, writes, acknowledges
//
// dmtarget builds and tears down the device-mapper stack through the dm
// ioctl interface. cmd/dmsyncd is the daemon, cmd/dmsync the admin CLI.
// test/vm boots Debian's stock kernel in QEMU so the kernel-facing code is
// tested against real device-mapper modules. Helpers that no other project
// should import live under internal/.
package dmsync
