package main

import "runtime"

// lockThread pins the calling goroutine to its OS thread for good: the
// replicator's Pdeathsig is tied to the thread that forked it, and Go
// would otherwise fork from any thread, which the runtime may retire.
func lockThread() { runtime.LockOSThread() }
