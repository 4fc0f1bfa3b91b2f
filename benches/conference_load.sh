#!/usr/bin/env bash
# Conference load over real sockets with real Opus frames, side by side in
# one run: chorus (one media worker) and Janus AudioBridge (Debian's
# `janus`, plain-RTP participants). Participants per core and the mixer's
# added delay. Runs in a private network namespace (root).
#
#   benches/conference_load.sh          SECONDS_PER_RUN=10 ROUNDS=1
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${CONFERENCE_LOAD_NETNS:-}" ]; then
  command -v janus >/dev/null || { echo "janus missing: apt-get install janus" >&2; exit 1; }
  cargo build --release --bins >&2
  exec env CONFERENCE_LOAD_NETNS=1 unshare -n "$0" "$@"
fi
ip link set lo up
ulimit -n 20000 || true
SECS=${SECONDS_PER_RUN:-10}
# Janus with only the HTTP transport and the AudioBridge plugin.
JC=$(mktemp -d)
sed -e "s|configs_folder = \"/etc/janus\"|configs_folder = \"$JC\"|" \
    -e 's|#disable = "libjanus_voicemail.so,libjanus_recordplay.so"|disable = "libjanus_duktape.so,libjanus_echotest.so,libjanus_lua.so,libjanus_nosip.so,libjanus_recordplay.so,libjanus_sip.so,libjanus_streaming.so,libjanus_textroom.so,libjanus_videocall.so,libjanus_videoroom.so,libjanus_voicemail.so"|' \
    -e 's|#disable = "libjanus_rabbitmq.so"|disable = "libjanus_rabbitmq.so,libjanus_mqtt.so,libjanus_nanomsg.so,libjanus_pfunix.so,libjanus_websockets.so"|' \
    /etc/janus/janus.jcfg > "$JC/janus.jcfg"
cp /etc/janus/janus.transport.http.jcfg "$JC/"
printf 'general: {\n}\n' > "$JC/janus.plugin.audiobridge.jcfg"
./target/release/chorus serve --port-min 20000 --port-max 29999 --media-timeout 0 \
  --http-listen 127.0.0.1:8080 --ng-listen 127.0.0.1:22222 --workers 1 2>/dev/null &
CH=$!
janus -C "$JC/janus.jcfg" -F "$JC" -L "$JC/janus.log" >/dev/null 2>&1 &
JA=$!
trap 'kill $CH $JA 2>/dev/null || true' EXIT
sleep 3
L=./target/release/chorus-load
run() { # label participants [flags...]
  local label=$1 n=$2; shift 2
  $L --conference "$n" "$@" --seconds "$SECS" --pid $CH --label "chorus, $label"
  $L --conference "$n" "$@" --seconds "$SECS" --pid $JA --janus http://127.0.0.1:8088 --label "janus, $label"
}
alone() { # chorus at sizes Janus cannot mix on this machine
  local label=$1 n=$2; shift 2
  $L --conference "$n" "$@" --seconds "$SECS" --pid $CH --label "chorus, $label"
}
for round in $(seq "${ROUNDS:-1}"); do
  # Desk phones: everyone sends every 20 ms, silence included, no levels.
  run "3 speakers, plain silence, opus, 100" 100 --no-levels
  run "3 speakers, plain silence, pcmu, 100" 100 --no-levels --pcmu
  run "3 speakers, silence marked, opus, 100" 100
  run "all talk, no levels, opus, 100" 100 --all-talk --no-levels
  for n in 500 1000; do
    alone "3 speakers, plain silence, opus, $n" $n --no-levels
    alone "3 speakers, plain silence, pcmu, $n" $n --no-levels --pcmu
  done
  alone "3 speakers, silence marked, opus, 1000" 1000
  alone "all talk, no levels, opus, 500" 500 --all-talk --no-levels
done
