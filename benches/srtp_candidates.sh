#!/usr/bin/env bash
# CPU and allocations per packet of the SRTP libraries weighed for chorus's
# secure legs: libsrtp2 (through the `srtp` crate, built with OpenSSL),
# webrtc-srtp and the pure-Rust `libsrtp`. A standalone crate, so none of
# them enters chorus's own build. Needs libssl-dev (Debian) and make.
#
#   benches/srtp_candidates.sh [packets per round] [rounds]   default 200000 5
set -euo pipefail
cd "$(dirname "$0")/srtp-candidates"
command -v make >/dev/null && dpkg -s libssl-dev >/dev/null 2>&1 || {
  apt-get install -y libssl-dev make pkg-config >/dev/null
}
cargo run --release --quiet -- "${1:-200000}" "${2:-5}"
