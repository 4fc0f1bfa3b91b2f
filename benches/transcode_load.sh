#!/usr/bin/env bash
# Transcoded calls under load: a PCMU phone and an Opus endpoint per call,
# chorus converting every packet both ways, interleaved with plain relayed
# calls in each round. Runs in a private network namespace.
#
#   sudo benches/transcode_load.sh [calls...]      (default: 100 200)
#   ROUNDS=3 SECONDS_PER_RUN=10 benches/transcode_load.sh 100
#
# Prints one JSON line per run and a table of medians: relay CPU (cores),
# CPU per call, and transcoded calls per core.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${TRANSCODE_LOAD_NETNS:-}" ]; then
  cargo build --release --bins >&2
  exec env TRANSCODE_LOAD_NETNS=1 unshare -n "$0" "$@"
fi
ip link set lo up
CALLS=("${@:-100 200}")
[ $# -eq 0 ] && CALLS=(100 200)
ROUNDS=${ROUNDS:-3}
SECS=${SECONDS_PER_RUN:-10}
OUT=$(mktemp)
ulimit -n 20000 || true

./target/release/chorus serve --port-min 20000 --port-max 29999 --media-timeout 0 \
  --http-listen 127.0.0.1:8080 --workers 2 2>/tmp/chorus-transcode.log &
CH=$!
trap 'kill $CH 2>/dev/null || true' EXIT
sleep 1

for n in "${CALLS[@]}"; do
  for r in $(seq "$ROUNDS"); do
    ./target/release/chorus-load --target chorus --calls "$n" --seconds "$SECS" --pid $CH | tee -a "$OUT"
    ./target/release/chorus-load --target chorus --transcode --calls "$n" --seconds "$SECS" --pid $CH | tee -a "$OUT"
  done
done

python3 - "$OUT" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
med = statistics.median
print()
print("| calls | mode | relay CPU (cores), rounds | median | CPU ms per call-second | calls per core | loss % |")
print("|---|---|---|---|---|---|---|")
for n in sorted({r["calls"] for r in runs}):
    for mode in [False, True]:
        rs = [r for r in runs if r["calls"] == n and r.get("transcode", False) == mode]
        if not rs: continue
        cores = [r["relay_cpu_cores"] for r in rs]
        m = med(cores)
        print(f"| {n} | {'PCMU⇄Opus transcoded' if mode else 'plain relay'} | {', '.join(f'{c:.3f}' for c in cores)} | {m:.3f} | "
              f"{m / n * 1000:.2f} | {n / m:.0f} | {med([r['loss_pct'] for r in rs]):.3f} |")
PY
