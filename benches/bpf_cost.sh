#!/usr/bin/env bash
# The eBPF forwarder's own time per packet, from the kernel's BPF
# statistics (kernel.bpf_stats_enabled, on only for the run): chorus with
# --kernel-forward on carries 1,000 calls from chorus-load's endpoints for
# 8 s, then bpftool reports run_time_ns / run_cnt of chorus_forward.
#
#   benches/bpf_cost.sh                      (root; needs bpftool)
#   CHORUS_BIN=/path/to/chorus benches/bpf_cost.sh   (another build, for A/B)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${BPF_COST_NETNS:-}" ]; then
  command -v bpftool >/dev/null || { echo "bpftool missing: apt-get install bpftool" >&2; exit 1; }
  cargo build --release --bins >&2
  exec env BPF_COST_NETNS=1 unshare -n "$0" "$@"
fi
ip link set lo up
sysctl -qw net.ipv4.ip_local_port_range="50000 65000"
ulimit -n 20000
${CHORUS_BIN:-./target/release/chorus} serve --port-min 40000 --port-max 49999 --media-timeout 0 --http-listen 127.0.0.1:8081 --ng-listen 127.0.0.1:22224 --workers 2 --kernel-forward on 2>/tmp/chk.log &
CHK=$!
sleep 1
sysctl -qw kernel.bpf_stats_enabled=1
./target/release/chorus-load --target chorus --name chorus-kernel --api http://127.0.0.1:8081 --calls 1000 --seconds 8 --pid $CHK --endpoints | python3 -c "import json,sys; r=json.loads(sys.stdin.read()); print('pps', r['pps'], 'loss', r['loss_pct'])"
# BPF programs are global: the newest chorus_forward is this run's.
ID=$(bpftool prog show | grep chorus_forward | tail -1 | cut -d: -f1)
bpftool prog show id "$ID" | awk '{for(i=1;i<=NF;i++){if($i=="run_time_ns")t=$(i+1); if($i=="run_cnt")c=$(i+1)}} END {if (c) printf "chorus_forward: %.0f ns per run over %d runs\n", t/c, c}'
sysctl -qw kernel.bpf_stats_enabled=0
kill $CHK
