// Package rpc replicates a volume to a peer over gRPC: the peer is told what
// changed, asks for the chunks it lacks, verifies each one before writing it
// and acknowledges durably; only then does a region count as replicated.
//
// # Protocol (rpc/dmsyncpb/replica.proto)
//
// One Apply stream per batch: the Sender offers the new chunk list of the
// changed ranges (offset, length, BLAKE3-256 id, optional 4 KiB block
// fingerprints) with the volume size and chunk parameters; the Receiver
// answers with the chunks it lacks (chunks it holds in place are skipped,
// chunks it holds elsewhere in its image are copied locally after a hash
// check, repeated ids are asked for once, and for a chunk whose older
// version it holds in place it asks only for the differing blocks); the
// sender streams exactly those bytes in runs without waiting; the receiver
// verifies every chunk before writing it, fsyncs the image, commits its
// index and clears its durable "applying" marker in one Pebble batch, and
// acks (with its chunk-list root when asked). Up to SenderConfig.Inflight
// batches are in flight; the receiver runs batches on disjoint ranges
// concurrently.
//
// # Guarantees
//
//   - The sender reads a region only while logd reports it quiet, with the
//     generation recorded before the read; Replicated(region, gen) is called
//     only after the batch's durable ack, so a write during the read leaves
//     the region pending.
//   - Nothing is written for a refused offer (size, chunk parameters,
//     ranges, chunk lengths, permission); no chunk is written unless it
//     hashes to its id. A batch that wrote and then failed leaves its
//     marker and drops its ranges' index entries, so the replica shows as
//     applying (not clean) until a later batch covers them.
//   - Errors are sentinels (errors.go); rpc/grpctransport/status.go maps
//     them to gRPC codes and back in one place. Permanent ones stop the
//     sender; the others are retried with backoff.
//
// The logic here does not import gRPC: Transport and ApplyStream are the
// seam, rpc/grpctransport the mutual-TLS gRPC implementation, and
// rpc/rpctest an in-memory logd.Replicator for tests. Chunker is the seam to
// the chunking format: FixedChunker, or CDCChunker over blockhash.
package rpc
