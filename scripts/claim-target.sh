#!/usr/bin/env bash
# The target folder is shared by every clone (the compiled RocksDB is reused). But cargo
# names the artifacts of this workspace's own crates the same in every clone, and judges them
# fresh by the source files they were built from — in whichever clone built them last. A
# clone that builds after another could then run the other clone's code. So when the clone
# changes, this workspace's crates (not the dependencies) are rebuilt: about a minute.
set -euo pipefail
target=${CARGO_TARGET_DIR:?CARGO_TARGET_DIR is set by the Makefile}
here=$(pwd -P)
mkdir -p "$target"
owner_file="$target/.tally-clone"
if [ "$(cat "$owner_file" 2>/dev/null || true)" != "$here" ]; then
    if [ -e "$owner_file" ]; then
        echo "claim-target: $target was last built from $(cat "$owner_file"); rebuilding this clone's crates"
        for p in tally-crypto tally-storage tally-p2p tally-genesis tally-monitoring \
                 tally-consensus tally-ledger tally-node; do
            cargo clean --quiet -p "$p" 2>/dev/null || true
        done
    fi
    echo "$here" > "$owner_file"
fi
