#!/usr/bin/env bash
# Figures of blockhash/README.md: chunker speed vs fastcdc-go and
# restic/chunker, rehash cost vs a full re-chunk, CDC vs fixed-size blocks.
# Usage: bench/blockhash.sh [volume MiB, default 1024] [fuzz seconds, default 0]
set -euo pipefail
cd "$(dirname "$0")/.."
mib=${1:-1024}
fuzz=${2:-0}
nice go test ./blockhash -run 'SpeedRatios|RehashCost|SendCost' -ratios -volume-mib "$mib" -v -timeout 60m |
	grep -v '^=== '
if [ "$fuzz" -gt 0 ]; then
	for f in FuzzChunker FuzzRehash FuzzTreeDiff FuzzBoundaryMatchesReference; do
		echo "== $f"
		nice go test ./blockhash -run XXX -fuzz "^$f\$" -fuzztime "${fuzz}s" -fuzzminimizetime 3s | tail -2
	done
	echo "== FuzzChunkIndexCodec"
	nice go test ./pebble -run XXX -fuzz '^FuzzChunkIndexCodec$' -fuzztime "${fuzz}s" -fuzzminimizetime 3s | tail -2
fi
