#!/usr/bin/env bash
# Two chorus binaries side by side, interleaved, on one conference load (in
# a private network namespace; root). For a before/after of a change:
#   git worktree add /tmp/before <commit> && CARGO_TARGET_DIR=/tmp/before-target \
#     cargo build --release --bin chorus --manifest-path /tmp/before/Cargo.toml
#   BINS="/tmp/before-target/release/chorus target/release/chorus" ROUNDS=2 N=1000 \
#     benches/conference_ab.sh          # FLAGS: chorus-load flags (--no-levels, --pcmu, --all-talk)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x target/release/chorus-load ] || cargo build --release --bins >&2
if [ -z "${AB_NETNS:-}" ]; then exec env AB_NETNS=1 unshare -n "$0" "$@"; fi
ip link set lo up
ulimit -n 20000 || true
L=./target/release/chorus-load
N=${N:-1000}; SECS=${SECS:-10}; ROUNDS=${ROUNDS:-2}; FLAGS=${FLAGS:---no-levels}
BINS=${BINS:-target/release/chorus}; EXTRA=${EXTRA:-}   # WORKERS, EXTRA: chorus flags
for r in $(seq $ROUNDS); do
  for bin in $BINS; do
    $bin serve --port-min 20000 --port-max 29999 --media-timeout 0 --http-listen 127.0.0.1:8080 --ng-listen 127.0.0.1:22222 --workers ${WORKERS:-1} $EXTRA 2>/dev/null &
    CH=$!; sleep 2
    $L --conference $N $FLAGS --seconds $SECS --warmup 3 --pid $CH --label "$bin round $r" || true
    kill $CH; wait $CH 2>/dev/null || true; sleep 1
  done
done
