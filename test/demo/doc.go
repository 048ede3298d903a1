// Package demo is dmsync's user story, run step by step inside the QEMU
// guest by `make demo` (and as a test by `make test`): create a dm volume
// with dmsetup, put dm-crypt on it, format and mount it, write a file tree,
// and replicate it to a peer that only ever holds ciphertext.
package demo
