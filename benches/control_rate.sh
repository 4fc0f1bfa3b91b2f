#!/usr/bin/env bash
# Control-plane rate, side by side in one run: offer+answer+delete round
# trips per second over ng (UDP) and HTTP against chorus, and over ng against
# rtpengine; then the same over ng while chorus relays 1,000 calls of media,
# to show that control stays well inside the proxy's 1 s timeout under load.
# Each round also runs the direct case: `chorus-load --ng-echo`, a responder
# that answers every command at once and parses nothing. Its CPU per set-up
# is the floor under any ng server here (three datagrams in, three out), and
# the rate the generator reaches against it is the generator's own ceiling.
# Runs in a private network namespace (root; rtpengine-daemon installed).
#
#   benches/control_rate.sh            ROUNDS=3 SETUPS=20000 CONCURRENCY=4
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${CONTROL_RATE_NETNS:-}" ]; then
  command -v rtpengine >/dev/null || { echo "rtpengine missing: apt-get install rtpengine-daemon" >&2; exit 1; }
  cargo build --release --bins >&2
  exec env CONTROL_RATE_NETNS=1 unshare -n "$0" "$@"
fi
ip link set lo up
ulimit -n 20000 || true
ROUNDS=${ROUNDS:-3}
SETUPS=${SETUPS:-20000}
C=${CONCURRENCY:-4}
OUT=$(mktemp)
./target/release/chorus serve --port-min 20000 --port-max 29999 --media-timeout 0 \
  --http-listen 127.0.0.1:8080 --ng-listen 127.0.0.1:22222 --workers 2 2>/dev/null &
CH=$!
rtpengine --config-file=none --table=-1 --delete-delay=0 --interface=127.0.0.1 \
  --listen-ng=127.0.0.1:22223 --port-min=30000 --port-max=39999 --num-threads=2 \
  -f -E --log-level=3 >/dev/null 2>&1 &
RE=$!
./target/release/chorus-load --ng-echo 127.0.0.1:22224 2>/dev/null &
EC=$!
trap 'kill $CH $RE $EC 2>/dev/null || true' EXIT
sleep 2
L=./target/release/chorus-load
# One run: the relay's CPU (utime+stime) and context switches (all its
# threads) around the set-ups, added to chorus-load's JSON line.
measured() {
  local pid=$1; shift
  local c0 s0 c1 s1
  c0=$(awk '{print $14+$15}' /proc/$pid/stat)
  s0=$(cat /proc/$pid/task/*/status | awk '/ctxt_switches/ {s+=$2} END {print s}')
  "$L" "$@" > "$OUT.one"
  c1=$(awk '{print $14+$15}' /proc/$pid/stat)
  s1=$(cat /proc/$pid/task/*/status | awk '/ctxt_switches/ {s+=$2} END {print s}')
  python3 -c "
import json, sys
r = json.loads([l for l in open('$OUT.one') if l.startswith('{')][-1])
n = r['setups']
r['cpu_us_per_setup'] = ($c1 - $c0) / $(getconf CLK_TCK) * 1e6 / n
r['context_switches_per_setup'] = ($s1 - $s0) / n
print(json.dumps(r))" | tee -a "$OUT"
}
for r in $(seq "$ROUNDS"); do
  measured $CH --setups "$SETUPS" --concurrency "$C" --proto ng --label "chorus ng"
  measured $CH --setups "$SETUPS" --concurrency "$C" --proto http --label "chorus http"
  measured $RE --target rtpengine --ng 127.0.0.1:22223 --setups "$SETUPS" --concurrency "$C" --label "rtpengine ng"
  measured $EC --ng 127.0.0.1:22224 --setups "$SETUPS" --concurrency "$C" --proto ng --label "direct (ng echo)"
done
# Under media load: 1,000 relayed calls (100,000 packets/s) while set-ups run.
$L --target chorus --calls 1000 --seconds 15 --warmup 2 --label "media during set-ups" > "$OUT.media" &
MEDIA=$!
sleep 4
$L --setups 5000 --concurrency "$C" --proto ng --label "chorus ng under 1,000-call media load" | tee -a "$OUT"
wait $MEDIA
cat "$OUT.media"
python3 - "$OUT" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
print()
print("| control path | set-ups/s (median) | set-up p50 ms | p99 ms | max ms | CPU µs per set-up (rounds) | context switches per set-up | generator µs per set-up | rounds |")
print("|---|---|---|---|---|---|---|---|---|")
by = {}
for r in runs:
    by.setdefault(r["label"], []).append(r)
for label, rs in by.items():
    m = lambda f: statistics.median(f(r) for r in rs)
    cpu = ", ".join(f"{r['cpu_us_per_setup']:.0f}" for r in rs if "cpu_us_per_setup" in r) or "–"
    cs = ", ".join(f"{r['context_switches_per_setup']:.1f}" for r in rs if "context_switches_per_setup" in r) or "–"
    gen = ", ".join(f"{r['generator_cpu_us_per_setup']:.0f}" for r in rs)
    print(f"| {label} | {m(lambda r: r['setups_per_s']):.0f} | {m(lambda r: r['setup_ms']['p50']):.2f} | "
          f"{m(lambda r: r['setup_ms']['p99']):.2f} | {max(r['setup_ms']['max'] for r in rs):.2f} | {cpu} | {cs} | {gen} | {len(rs)} |")
# Round by round, each server's CPU above the direct floor of the same round.
floor = [r["cpu_us_per_setup"] for r in by.get("direct (ng echo)", [])]
for label in ("chorus ng", "rtpengine ng"):
    above = [r["cpu_us_per_setup"] - f for r, f in zip(by.get(label, []), floor)]
    if above:
        print(f"{label}: µs per set-up above the direct floor, by round: " + ", ".join(f"{a:.0f}" for a in above))
ratio = [c["cpu_us_per_setup"] / r["cpu_us_per_setup"] for c, r in zip(by.get("chorus ng", []), by.get("rtpengine ng", []))]
if ratio:
    print("chorus ng / rtpengine ng, CPU per set-up by round: " + ", ".join(f"{x:.2f}" for x in ratio))
PY
