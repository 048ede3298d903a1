// Package dmtarget creates, reloads, suspends, inspects and removes
// device-mapper devices through the dm ioctl interface, and builds dmsync's
// stack: a mirror with a userspace dirty log, optionally with dm-crypt on top.
package dmtarget
