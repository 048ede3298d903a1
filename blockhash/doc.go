// Package blockhash finds which chunks of a volume changed by rehashing only
// the regions the dirty log reports: content-defined chunking with a resync
// pass, strong chunk identities, fast fingerprints and a Merkle root over the
// volume.
package blockhash
