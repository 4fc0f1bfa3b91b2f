#!/usr/bin/env bash
# Failover: two chorus instances (127.0.0.2 and 127.0.0.3) share a real
# redis-server; CALLS calls on the first with RTP both ways (chorus-load
# --failover: two independent sockets per call, 50 packets/s each), then
# `kill -9` of the first. Reports every receiver's media gap, and when media
# resumed relative to the kill and to the takeover's start (the second
# instance's log). Then Redis memory per call, from the records.
# Runs in a private network namespace (root).
#
#   benches/failover.sh [calls] [heartbeat_ms]     default 100 calls, 200 ms
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${FAILOVER_NETNS:-}" ]; then
  cargo build --release --bins >&2
  exec env FAILOVER_NETNS=1 unshare -n "$0" "$@"
fi
ip link set lo up
ulimit -n 20000 || true
CALLS=${1:-100}
HB=${2:-200}
LOGS=$(mktemp -d)
redis-server --port 6390 --bind 127.0.0.1 --save "" --appendonly no >"$LOGS/redis.log" &
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
sleep 0.5
start() { # name ip http ng [wrapper...]
  local name=$1 ip=$2 http=$3 ng=$4; shift 4
  "$@" ./target/release/chorus serve --instance-id "$name" --media-bind "$ip" --http-listen "127.0.0.1:$http" \
    --ng-listen "127.0.0.1:$ng" --port-min 40000 --port-max 49999 --media-timeout 0 --workers ${WORKERS:-2} \
    --redis-url redis://127.0.0.1:6390/ --redis-heartbeat-ms "$HB" --log-format json 2>"$LOGS/$name.log" &
}
start a 127.0.0.2 18081 22301
A=$!
# PERF=1 profiles the taker: perf report -i /tmp/failover-taker.perf
if [ -n "${PERF:-}" ]; then
  start b 127.0.0.3 18082 22302 perf record -g -o /tmp/failover-taker.perf --
else
  start b 127.0.0.3 18082 22302
fi
sleep 1
before=$(redis-cli -p 6390 info memory | awk -F: '/^used_memory:/{print $2}' | tr -d '\r')
./target/release/chorus-load --failover --api http://127.0.0.1:18081 --calls "$CALLS" --pid "$A" \
  --seconds 3 --takeover-log "$LOGS/b.log"
after=$(redis-cli -p 6390 info memory | awk -F: '/^used_memory:/{print $2}' | tr -d '\r')
echo "redis memory per call: $(( (after - before) / CALLS )) bytes ($CALLS calls, records and sets)"
grep -h "calls restored" "$LOGS/b.log" | sed 's/^/taker: /'
echo "calls held by the taker: $(curl -s 'http://127.0.0.1:18082/v1/calls?limit=1' | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])')"
