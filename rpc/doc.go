// Package rpc replicates a volume to a peer over gRPC: the peer is told what
// changed, asks for the chunks it lacks, verifies each one before writing it
// and acknowledges durably; only then does a region count as replicated.
package rpc
