#!/bin/sh
# Regenerates the Go code for the dmsync wire protocol (and every other
# .proto in the repository) with the pinned plugins: see scripts/genproto.sh.
exec "$(dirname "$0")/../../scripts/genproto.sh" "$@"
