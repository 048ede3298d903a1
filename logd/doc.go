// Package logd serves the device-mapper userspace dirty log
// (dm-log-userspace). A mirror target created with a "userspace" log sends
// every MARK, CLEAR and FLUSH to it over the kernel connector; from those
// requests logd knows which regions of a volume changed.
//
// The core is a pure state machine: decoded requests in, replies and a batch
// of state changes out. The netlink transport and Pebble persistence are thin
// shells around it.
package logd
