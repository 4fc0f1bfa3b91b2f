#!/usr/bin/env bash
# Conference load over real sockets with real Opus frames: participants per
# core and the mixer's added delay. Runs chorus with one media worker in a
# private network namespace (root).
#
#   benches/conference_load.sh          SECONDS_PER_RUN=10
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${CONFERENCE_LOAD_NETNS:-}" ]; then
  cargo build --release --bins >&2
  exec env CONFERENCE_LOAD_NETNS=1 unshare -n "$0" "$@"
fi
ip link set lo up
ulimit -n 20000 || true
SECS=${SECONDS_PER_RUN:-10}
./target/release/chorus serve --port-min 20000 --port-max 29999 --media-timeout 0 \
  --http-listen 127.0.0.1:8080 --workers 1 2>/dev/null &
CH=$!
trap 'kill $CH 2>/dev/null || true' EXIT
sleep 1.5
L=./target/release/chorus-load
# 3 speakers, listeners send silence marked by RFC 6464.
for n in 100 1000; do $L --conference $n --seconds "$SECS" --pid $CH --label "3 speakers, $n"; done
# Everyone sends audio (every packet decoded; the loudest 3 mixed).
for n in 100 400; do $L --conference $n --all-talk --seconds "$SECS" --pid $CH --label "all talk, $n"; done
