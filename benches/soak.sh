#!/usr/bin/env bash
# Soak: everything at once for a long time, and what must stay flat.
#   1,000 relayed calls with media (100,000 packets/s through chorus),
#   a 200-participant conference with media (3 speakers),
#   the control plane creating and deleting calls all along (HTTP set-ups),
#   a hostile sender spraying junk and crafted RTP/RTCP at random chorus
#   ports (2,000 datagrams/s: chorus-load --spray).
# A sample before the load, then every 30 s while it runs: chorus's resident
# memory, open file descriptors, free ports, mixer tick p99 over the
# interval, and panics; one more after the load ended. Verdict: flat while
# loaded (memory within 10%, descriptors within 20), no panic, and every
# descriptor and port back once the load is gone.
# Runs in a private network namespace (root).
#
#   benches/soak.sh [minutes]          default 30; CALLS=1000 PARTICIPANTS=200
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${SOAK_NETNS:-}" ]; then
  cargo build --release --bins >&2
  exec env SOAK_NETNS=1 unshare -n "$0" "$@"
fi
ip link set lo up
ulimit -n 20000 || true
MIN=${1:-30}
SECS=$((MIN * 60))
CALLS=${CALLS:-1000}
PARTS=${PARTICIPANTS:-200}
API=http://127.0.0.1:8080
./target/release/chorus serve --port-min 20000 --port-max 29999 --media-timeout 0 \
  --http-listen 127.0.0.1:8080 --ng-listen 127.0.0.1:22222 --workers 2 2>/tmp/soak-chorus.log &
CH=$!
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
sleep 2
sample() { # prints: seconds rss_kib fds free_ports tick_p99_ms panics
  python3 - "$CH" "$1" "$API" <<'PY'
import re, sys, urllib.request, json, os
pid, t, api = sys.argv[1], sys.argv[2], sys.argv[3]
rss = next(l.split()[1] for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS"))
fds = len(os.listdir(f"/proc/{pid}/fd"))
m = urllib.request.urlopen(api + "/metrics", timeout=5).read().decode()
def val(name):
    x = re.search(r"^" + re.escape(name) + r" (\S+)$", m, re.M)
    return float(x.group(1)) if x else 0.0
buckets = [(float(le), float(v)) for le, v in re.findall(r'^chorus_mixer_tick_seconds_bucket\{le="([^"+]+)"\} (\S+)$', m, re.M)]
state = "/tmp/soak-buckets.json"
prev = json.load(open(state)) if os.path.exists(state) else {}
json.dump({str(le): v for le, v in buckets}, open(state, "w"))
delta = [(le, v - prev.get(str(le), 0.0)) for le, v in buckets]
total = max((v for _, v in delta), default=0.0)
p99 = next((le for le, v in delta if total and v >= 0.99 * total), float("nan"))
free = val('chorus_ports_free{interface="default"}')
print(f"{t:>6} {rss:>9} {fds:>6} {free:>7.0f} {p99 * 1e3:>10.1f} {val('chorus_worker_panics_total'):>6.0f}")
PY
}
rm -f /tmp/soak-buckets.json
printf '%6s %9s %6s %7s %10s %6s\n' t_s rss_kib fds ports tick_p99_ms panics | tee /tmp/soak-samples.txt
sample before | tee -a /tmp/soak-samples.txt
L=./target/release/chorus-load
$L --calls "$CALLS" --seconds "$SECS" --warmup 5 --pid $CH --label "soak relay" >/tmp/soak-relay.txt 2>&1 &
$L --conference "$PARTS" --seconds "$SECS" --warmup 5 --label "soak conference" >/tmp/soak-conf.txt 2>&1 &
$L --spray 20000-29999 --rate 2000 --seconds "$SECS" >/tmp/soak-spray.txt 2>&1 &
( end=$((SECONDS + SECS)); n=0
  while [ $SECONDS -lt $end ]; do
    $L --setups 500 --proto http --concurrency 2 --label churn >/dev/null 2>&1 || true
    n=$((n + 500))
  done; echo "churn: $n set-ups" >/tmp/soak-churn.txt ) &
sleep 30
t=30
# Sample while the load surely runs (it stops at SECS, set-up included).
while kill -0 $CH 2>/dev/null && [ $t -le $((SECS - 30)) ]; do
  sample $t | tee -a /tmp/soak-samples.txt
  sleep 30
  t=$((t + 30))
done
wait $(jobs -p | grep -v "^$CH$") 2>/dev/null || true
sleep 5
sample after | tee -a /tmp/soak-samples.txt
cat /tmp/soak-relay.txt /tmp/soak-conf.txt /tmp/soak-spray.txt /tmp/soak-churn.txt 2>/dev/null
python3 - <<'PY'
rows = [l.split() for l in open("/tmp/soak-samples.txt").read().splitlines()[1:] if l.strip()]
before, loaded, after = rows[0], rows[1:-1], rows[-1]
if len(loaded) < 3:
    raise SystemExit("soak: too few samples")
first, last = loaded[1], loaded[-1]  # loaded[0] is still warm-up
growth = (float(last[1]) - float(first[1])) / float(first[1])
fds = [int(r[2]) for r in loaded[1:]]
print(f"loaded: rss {first[1]} -> {last[1]} KiB ({growth:+.1%}), fds {min(fds)}..{max(fds)}, "
      f"panics {last[5]}; after: fds {before[2]} -> {after[2]}, free ports {before[3]} -> {after[3]}")
ok = (growth < 0.10 and max(fds) - min(fds) <= 20 and float(after[5]) == 0
      and int(after[2]) <= int(before[2]) + 2 and after[3] == before[3])
print("soak:", "FLAT" if ok else "NOT FLAT")
PY
grep -c panicked /tmp/soak-chorus.log | sed 's/^/panics in the log: /'
