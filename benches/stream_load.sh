#!/usr/bin/env bash
# WebSocket audio streams and recordings under load: relayed calls without
# streams, then the same calls each streaming leg A (both tracks, 100
# frames/s) as Twilio JSON and as raw 16 kHz PCM to a sink that reads and
# drops every message, then each recorded (stereo 16 kHz WAV, the
# default), interleaved in each round. Runs in a private network namespace.
#
#   sudo benches/stream_load.sh [calls]            (default: 200)
#   ROUNDS=3 SECONDS_PER_RUN=10 benches/stream_load.sh 200
#   MODES="plain record" benches/stream_load.sh 200    (a subset)
#   CONTROL_THREADS=2 benches/stream_load.sh 200       (control-plane threads)
#
# Prints one JSON line per run and a table of medians: chorus's CPU, the
# CPU a stream adds, streams per core on top of the calls, frames dropped,
# and the delay from a packet's arrival to its frame's WebSocket write
# (chorus_audio_stream_delay_seconds, interpolated in its buckets).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${STREAM_LOAD_NETNS:-}" ]; then
  cargo build --release --bins >&2
  exec env STREAM_LOAD_NETNS=1 unshare -n "$0" "$@"
fi
ip link set lo up
CALLS=${1:-200}
ROUNDS=${ROUNDS:-3}
SECS=${SECONDS_PER_RUN:-10}
OUT=$(mktemp)
ulimit -n 20000 || true

REC=/tmp/chorus-bench-recordings
./target/release/chorus serve --port-min 20000 --port-max 29999 --media-timeout 0 --max-streams 2000 \
  --recording-dir $REC --control-threads "${CONTROL_THREADS:-1}" \
  --http-listen 127.0.0.1:8080 --workers 2 2>/tmp/chorus-streams.log &
CH=$!
./target/release/chorus-load --ws-sink 127.0.0.1:9100 2>/dev/null &
SINK=$!
trap 'kill $CH $SINK 2>/dev/null || true; rm -rf $REC' EXIT
sleep 1

scrape() { curl -s localhost:8080/metrics | grep '^chorus_audio_stream_' || true; }

run() {
  local label=$1; shift
  scrape > /tmp/streams-before.txt
  local sink0; sink0=$(awk '{print $14+$15}' /proc/$SINK/stat)
  ./target/release/chorus-load --target chorus --calls "$CALLS" --seconds "$SECS" --pid $CH --label "$label" "$@" \
    > /tmp/streams-run.json
  local sink1; sink1=$(awk '{print $14+$15}' /proc/$SINK/stat)
  scrape > /tmp/streams-after.txt
  python3 - "$label" "$sink0" "$sink1" <<'PY' | tee -a "$OUT"
import json, sys
label, s0, s1 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
run = json.load(open("/tmp/streams-run.json"))
def read(path):
    out = {}
    for line in open(path):
        name, value = line.rsplit(" ", 1)
        out[name] = float(value)
    return out
b, a = read("/tmp/streams-before.txt"), read("/tmp/streams-after.txt")
d = {k: a[k] - b.get(k, 0.0) for k in a}
buckets = sorted((float(k.split('le="')[1].split('"')[0]), v) for k, v in d.items()
                 if k.startswith("chorus_audio_stream_delay_seconds_bucket") and "+Inf" not in k)
total = d.get("chorus_audio_stream_delay_seconds_count", 0.0)
def pct(p):
    if total == 0: return None
    want, prev_le, prev_n = p * total, 0.0, 0.0
    for le, n in buckets:
        if n >= want:
            return round(1000 * (prev_le + (le - prev_le) * (want - prev_n) / max(n - prev_n, 1e-9)), 3)
        prev_le, prev_n = le, n
    return None
frames = lambda o: sum(v for k, v in d.items() if k.startswith("chorus_audio_stream_frames_total") and f'outcome="{o}"' in k)
run.update({"label": label, "frames_sent": frames("sent"), "frames_dropped": frames("dropped"),
            "delay_ms": {"p50": pct(0.5), "p99": pct(0.99)},
            "sink_cpu_s": (s1 - s0) / 100.0})
print(json.dumps(run))
PY
}

for r in $(seq "$ROUNDS"); do
  for m in ${MODES:-plain twilio raw16k record}; do
    case $m in
      plain) run plain ;;
      twilio) run twilio --stream-url ws://127.0.0.1:9100/ --stream-format twilio ;;
      raw16k) run raw16k --stream-url ws://127.0.0.1:9100/ --stream-format raw --stream-rate 16000 ;;
      record) run record --stream-url record; rm -rf $REC ;;
    esac
  done
done

python3 - "$OUT" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
med = statistics.median
plain = [r["relay_cpu_cores"] for r in runs if r["label"] == "plain"]
print()
print("| calls | streams | chorus CPU (cores), rounds | median | added per stream (ms CPU/s) | streams per added core | frames sent / dropped | delay p50 / p99 (ms) | loss % |")
print("|---|---|---|---|---|---|---|---|---|")
for label in ["plain", "twilio", "raw16k", "record"]:
    rs = [r for r in runs if r["label"] == label]
    if not rs: continue
    cores = [r["relay_cpu_cores"] for r in rs]
    m, n, s = med(cores), rs[0]["calls"], med([r["streams"] for r in rs])
    added = m - med(plain)
    per = f"{added / s * 1000:.2f}" if s and label != "plain" else "-"
    spc = f"{s / added:.0f}" if s and added > 0 else "-"
    sent = med([r["frames_sent"] for r in rs]); dropped = med([r["frames_dropped"] for r in rs])
    d50 = med([r["delay_ms"]["p50"] or 0 for r in rs]); d99 = med([r["delay_ms"]["p99"] or 0 for r in rs])
    delay = f"{d50:.2f} / {d99:.2f}" if label != "plain" else "-"
    print(f"| {n} | {s if label != 'plain' else 0} {label} | {', '.join(f'{c:.3f}' for c in cores)} | {m:.3f} | {per} | {spc} | "
          f"{sent:.0f} / {dropped:.0f} | {delay} | {med([r['loss_pct'] for r in rs]):.3f} |")
PY
