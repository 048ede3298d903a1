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
// verifies every chunk before writing it (the writes run behind the
// verification, up to four at once per batch), waits for the writes,
// fsyncs the image, commits its
// index and clears its durable "applying" marker in one Pebble batch, and
// acks (with its root when asked). Up to SenderConfig.Inflight
// batches are in flight; the receiver runs batches on disjoint ranges
// concurrently.
//
// # The root (indextree.go)
//
// A volume has one root, for acks, status and verify: that of blockhash's
// Merkle tree over its chunk list. The sender computes it from a full
// re-chunk (SourceRoot); the receiver keeps the tree of its index in
// memory, holes (bytes not received) as chunks with the zero id, built
// once and then spliced (blockhash.Tree.Splice) only around the byte
// ranges each commit, abort, forget or point changed. A call with no
// change since costs nothing; one after a change re-reads only those
// ranges of the index and copies the tree's leaf level, with no hashing
// outside them (BenchmarkReplicaRoot: 1 GiB, one 4 KiB change, about 16x
// faster than reading and hashing the whole index). The tree takes about
// 70 bytes of memory per chunk (17 MiB per GiB at 4 KiB).
//
// # Verify and repair (verify.go, scrub.go)
//
// Sender.VerifyWith compares the source with the replica's real bytes: a
// Scrub stream has the receiver re-read its image at a bounded rate
// (DefaultScrubRate unless the request says otherwise) and send the
// BLAKE3-256 of every 1 MiB piece, hashed from the image, never from its
// index, while the sender hashes its source in the same pieces; differing
// pieces are scrubbed again in 4 KiB pieces, and the merged ranges are the
// answer. The older comparison of the source's chunk list with the
// replica's index (Merkle trees over TreeNodes) stays as an option: it
// says whether the index, which decides what the receiver asks for, still
// describes the image. Sender.Repair makes the receiver drop its index over
// the regions holding differing ranges (Scrub with forget), forgets the
// sender's acknowledged fingerprints, and pends the regions in the dirty
// log, so the next pass sends them.
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
//   - Consistency points (senderpoint.go, point.go): once the replica
//     holds a point, batches are staged on the receiver, not written in
//     place, and regions count as replicated only when their point is
//     committed; the sender freezes the volume (Freezer) only to read what
//     changed since it was staged. The replica's image is always the
//     source at its recovery point, or, during the commit's apply, a
//     committed point that is applied again after any failure.
//   - Errors are sentinels (errors.go); rpc/grpctransport/status.go maps
//     them to gRPC codes and back in one place. Permanent ones, and
//     ErrSource, stop the sender; the others are retried with the one
//     retry policy, Backoff.
//
// # The sender's loop
//
// Sender.Run is the one replication loop: it sends every pending, quiet
// region, retries failed passes with Backoff, and waits for the dirty log's
// change feed; SenderConfig.OnProgress and Sender.Status report its state,
// a live read rate, the pass's size and an ETA from the first batch on.
// With the fixed chunker the sender keeps each acknowledged chunk's XXH64
// and hashes and offers only chunks whose fingerprint moved (all of them
// again after any failure).
//
// # Layers
//
// pebble stores, blockhash computes, rpc moves data: RehashIndex
// orchestrates a rehash of pebble's chunk index with blockhash's chunker,
// and pebble imports neither (pebble.TestStorageImportsNoCompute).
// The receiver reads copy sources before it writes anything, so data
// shifted within a batch's own ranges (an insertion under CDC) is copied
// locally instead of sent.
//
// The logic here does not import gRPC: Transport and ApplyStream are the
// seam, rpc/grpctransport the mutual-TLS gRPC implementation, and
// rpc/rpctest an in-memory logd.Replicator for tests. Chunker is the seam to
// the chunking format: FixedChunker, or CDCChunker over blockhash.
package rpc
