#!/usr/bin/env bash
# Relay load, side by side in one run: chorus vs rtpengine (userspace, ng),
# plus a direct peer-to-peer baseline for latency. Runs in a private network
# namespace on its own loopback, so port ranges collide with nothing.
#
#   sudo benches/relay_compare.sh [calls...]       (default: 500 1000)
#   ROUNDS=3 SECONDS_PER_RUN=10 benches/relay_compare.sh 1000
#   SRTP=1 benches/relay_compare.sh 1000   (adds SDES-SRTP bridging rounds:
#     leg A on RTP/SAVP, leg B on RTP/AVP, both relays decrypt and encrypt)
#   ENDPOINTS=1 benches/relay_compare.sh 500 1000   (endpoints as phones:
#     one socket per leg, each receiver asleep in epoll until its packet)
#   KERNEL=0 benches/relay_compare.sh   (leaves out chorus-kernel, a second
#     chorus that forwards latched plain RTP in the kernel with eBPF; the
#     first, `chorus`, relays in userspace with epoll)
#   URING=1 benches/relay_compare.sh   (adds chorus-uring: the userspace
#     relay on io_uring, --io uring)
#
# Besides the relay's own CPU, each run reports the whole host's (every
# process, interrupts, softirq) per packet; the direct run's, taken in the
# same round, is what the traffic costs without a relay.
#
# Needs root (unshare -n) and rtpengine (apt-get install rtpengine-daemon).
# Prints one JSON line per run and a markdown table of medians.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${RELAY_COMPARE_NETNS:-}" ]; then
  command -v rtpengine >/dev/null || { echo "rtpengine missing: apt-get install rtpengine-daemon" >&2; exit 1; }
  cargo build --release --bins >&2
  exec env RELAY_COMPARE_NETNS=1 unshare -n "$0" "$@"
fi
ip link set lo up
CALLS=("${@:-500 1000}")
[ $# -eq 0 ] && CALLS=(500 1000)
ROUNDS=${ROUNDS:-3}
SECS=${SECONDS_PER_RUN:-10}
OUT=$(mktemp)
ulimit -n 20000 || true
EP=${ENDPOINTS:+--endpoints}

# The generator's sockets take ports above every relay's range.
sysctl -qw net.ipv4.ip_local_port_range="50000 65000"
./target/release/chorus serve --port-min 20000 --port-max 29999 --media-timeout 0 \
  --http-listen 127.0.0.1:8080 --workers 2 --kernel-forward off --io epoll 2>/tmp/chorus-bench.log &
CH=$!
CHK=""
if [ "${KERNEL:-1}" != 0 ]; then
  ./target/release/chorus serve --port-min 40000 --port-max 49999 --media-timeout 0 \
    --http-listen 127.0.0.1:8081 --ng-listen 127.0.0.1:22224 --workers 2 --kernel-forward on \
    2>/tmp/chorus-kernel-bench.log &
  CHK=$!
fi
rtpengine --config-file=none --table=-1 --delete-delay=0 --interface=127.0.0.1 \
  --listen-ng=127.0.0.1:22223 --port-min=30000 --port-max=39999 --num-threads=2 \
  -f -E --log-level=3 >/tmp/rtpengine-bench.log 2>&1 &
RE=$!
CHU=""
if [ -n "${URING:-}" ]; then
  ./target/release/chorus serve --port-min 10000 --port-max 19999 --media-timeout 0 \
    --http-listen 127.0.0.1:8082 --ng-listen 127.0.0.1:22225 --workers 2 --kernel-forward off --io uring \
    2>/tmp/chorus-uring-bench.log &
  CHU=$!
fi
trap 'kill $CH $CHK $CHU $RE 2>/dev/null || true' EXIT
sleep 2

for n in "${CALLS[@]}"; do
  for r in $(seq "$ROUNDS"); do
    ./target/release/chorus-load --target direct --calls "$n" --seconds "$SECS" $EP --label "round $r" | tee -a "$OUT"
    ./target/release/chorus-load --target chorus --calls "$n" --seconds "$SECS" --pid $CH $EP --label "round $r" | tee -a "$OUT"
    ./target/release/chorus-load --target rtpengine --ng 127.0.0.1:22223 --calls "$n" --seconds "$SECS" --pid $RE $EP --label "round $r" | tee -a "$OUT"
    if [ -n "$CHU" ]; then
      ./target/release/chorus-load --target chorus --name chorus-uring --api http://127.0.0.1:8082 \
        --calls "$n" --seconds "$SECS" --pid $CHU $EP --label "round $r" | tee -a "$OUT"
    fi
    if [ -n "$CHK" ]; then
      ./target/release/chorus-load --target chorus --name chorus-kernel --api http://127.0.0.1:8081 \
        --calls "$n" --seconds "$SECS" --pid $CHK $EP --label "round $r" | tee -a "$OUT"
    fi
    if [ -n "${SRTP:-}" ]; then
      ./target/release/chorus-load --target chorus --srtp --calls "$n" --seconds "$SECS" --pid $CH $EP --label "round $r" | tee -a "$OUT"
      ./target/release/chorus-load --target rtpengine --srtp --ng 127.0.0.1:22223 --calls "$n" --seconds "$SECS" --pid $RE $EP --label "round $r" | tee -a "$OUT"
    fi
  done
done

python3 - "$OUT" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
med = lambda xs: statistics.median(xs) if xs else float("nan")
print()
print("| calls | relay | packets/s | loss % | CPU µs/packet | relay CPU (cores) | latency p50 ms | p99 ms | p99.9 ms |")
print("|---|---|---|---|---|---|---|---|---|")
kinds = [("direct", False), ("chorus", False), ("chorus-uring", False), ("chorus-kernel", False), ("rtpengine", False), ("chorus", True), ("rtpengine", True)]
for n in sorted({r["calls"] for r in runs}):
    for t, srtp in kinds:
        rs = [r for r in runs if r["calls"] == n and r["target"] == t and r.get("srtp", False) == srtp]
        if not rs: continue
        name = t + (" SRTP⇄RTP" if srtp else "")
        cpu = [r["relay_cpu_us_per_packet"] for r in rs if r["relay_cpu_us_per_packet"] is not None]
        cores = [r["relay_cpu_cores"] for r in rs if r["relay_cpu_cores"] is not None]
        f = lambda x: f"{x:.2f}" if x == x else "–"
        print(f"| {n} | {name} | {med([r['pps'] for r in rs]):.0f} | {med([r['loss_pct'] for r in rs]):.3f} | {f(med(cpu))} | {f(med(cores))} | "
              f"{med([r['latency_ms']['p50'] for r in rs]):.3f} | {med([r['latency_ms']['p99'] for r in rs]):.3f} | {med([r['latency_ms']['p999'] for r in rs]):.3f} |")
    cpu = lambda t, srtp: [r["relay_cpu_us_per_packet"] for r in runs if r["calls"] == n and r["target"] == t
                           and r.get("srtp", False) == srtp and r["relay_cpu_us_per_packet"] is not None]
    for a, b, what in [(("chorus", False), ("rtpengine", False), "chorus/rtpengine, plain"),
                       (("chorus-kernel", False), ("rtpengine", False), "chorus-kernel/rtpengine, plain"),
                       (("chorus-uring", False), ("rtpengine", False), "chorus-uring/rtpengine, plain"),
                       (("chorus-uring", False), ("chorus", False), "chorus-uring/chorus (io_uring/epoll)"),
                       (("chorus", True), ("rtpengine", True), "chorus/rtpengine, SRTP bridging"),
                       (("chorus", True), ("chorus", False), "chorus SRTP bridging/plain"),
                       (("rtpengine", True), ("rtpengine", False), "rtpengine SRTP bridging/plain")]:
        x, y = cpu(*a), cpu(*b)
        if x and y:
            print(f"\n{n} calls: {what} CPU per packet = {med(x)/med(y):.2f} (medians of {len(x)} and {len(y)} rounds)")
    # Whole host, round by round: each relay's run less the direct run of
    # the same round (what the traffic itself costs the host).
    rounds = sorted({r.get("label", "") for r in runs if r["calls"] == n})
    extra = {}
    for label in rounds:
        rr = {r["target"]: r for r in runs if r["calls"] == n and r.get("label", "") == label and not r.get("srtp")}
        if "direct" in rr and rr["direct"].get("host_cpu_us_per_packet") is not None:
            base = rr["direct"]["host_cpu_us_per_packet"]
            for t in ("chorus", "chorus-uring", "chorus-kernel", "rtpengine"):
                if t in rr and rr[t].get("host_cpu_us_per_packet") is not None:
                    extra.setdefault(t, []).append((rr[t]["host_cpu_us_per_packet"] - base, rr[t]["relay_cpu_us_per_packet"]))
    for t, xs in extra.items():
        host = ", ".join(f"{h:.2f}" for h, _ in xs)
        own = ", ".join(f"{o:.2f}" for _, o in xs)
        print(f"{n} calls: {t}: whole host less direct, µs/packet by round: {host}; the relay's own: {own}")
    for t in ("chorus", "chorus-uring", "chorus-kernel"):
        if t not in extra or "rtpengine" not in extra:
            continue
        ratios = [c[0] / e[0] for c, e in zip(extra[t], extra["rtpengine"]) if e[0] > 0]
        own = [c[1] / e[1] for c, e in zip(extra[t], extra["rtpengine"]) if e[1]]
        if ratios:
            print(f"{n} calls: {t}/rtpengine by round, whole host: {min(ratios):.3f}–{max(ratios):.3f}; the relay's own: {min(own):.3f}–{max(own):.3f}")
    print()
PY
