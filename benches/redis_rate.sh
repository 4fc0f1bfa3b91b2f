#!/usr/bin/env bash
# What Redis costs the control plane, side by side in one run: offer+answer+
# delete set-ups per second over HTTP and ng against chorus alone and
# against chorus writing its call records to a real redis-server (each
# set-up writes the record twice and removes it). Rounds alternate; medians.
# Runs in a private network namespace (root).
#
#   benches/redis_rate.sh            ROUNDS=3 SETUPS=20000 CONCURRENCY=4
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${REDIS_RATE_NETNS:-}" ]; then
  cargo build --release --bins >&2
  exec env REDIS_RATE_NETNS=1 unshare -n "$0" "$@"
fi
ip link set lo up
ulimit -n 20000 || true
ROUNDS=${ROUNDS:-3}
SETUPS=${SETUPS:-20000}
C=${CONCURRENCY:-4}
OUT=$(mktemp)
redis-server --port 6391 --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
sleep 0.5
common=(--port-min 20000 --port-max 29999 --media-timeout 0 --workers 2)
./target/release/chorus serve "${common[@]}" --http-listen 127.0.0.1:8080 --ng-listen 127.0.0.1:22222 2>/dev/null &
./target/release/chorus serve "${common[@]}" --media-bind 127.0.0.2 --http-listen 127.0.0.1:8081 \
  --ng-listen 127.0.0.1:22223 --redis-url redis://127.0.0.1:6391/ --instance-id bench 2>/dev/null &
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
sleep 2
L=./target/release/chorus-load
for r in $(seq "$ROUNDS"); do
  $L --setups "$SETUPS" --concurrency "$C" --proto http --api http://127.0.0.1:8080 --label "http, no redis" | tee -a "$OUT"
  $L --setups "$SETUPS" --concurrency "$C" --proto http --api http://127.0.0.1:8081 --label "http, redis" | tee -a "$OUT"
  $L --setups "$SETUPS" --concurrency "$C" --proto ng --ng 127.0.0.1:22222 --label "ng, no redis" | tee -a "$OUT"
  $L --setups "$SETUPS" --concurrency "$C" --proto ng --ng 127.0.0.1:22223 --label "ng, redis" | tee -a "$OUT"
done
echo "records left in redis after the runs: $(redis-cli -p 6391 --scan --pattern 'chorus:call:*' | wc -l)"
python3 - "$OUT" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
med = {}
print()
print("| control path | set-ups/s (median) | set-up p50 ms | p99 ms | rounds |")
print("|---|---|---|---|---|")
for label in dict.fromkeys(r["label"] for r in runs):
    rs = [r for r in runs if r["label"] == label]
    m = lambda f: statistics.median(f(r) for r in rs)
    med[label] = m(lambda r: r['setups_per_s'])
    print(f"| {label} | {med[label]:.0f} | {m(lambda r: r['setup_ms']['p50']):.2f} | {m(lambda r: r['setup_ms']['p99']):.2f} | {len(rs)} |")
for door in ("http", "ng"):
    print(f"{door}: redis on / off = {med[door + ', redis'] / med[door + ', no redis']:.2f}")
PY
