//! Fuzz targets: one function per thing the network or the proxy feeds.
//!
//! Each takes arbitrary bytes, drives the real code with them, and checks an
//! invariant beyond "does not panic" where there is one to check (a packet
//! view accounts for its bytes, a rewritten SDP parses again, a bencode value
//! round-trips, an HTTP error is a JSON error and never a 500). The same
//! functions serve the coverage-guided fuzzer (`fuzz/`, run by
//! `scripts/fuzz`) and the regression test that replays every corpus and
//! every past crash in `cargo test` (`tests/fuzz_corpus.rs`).
//!
//! Not part of chorus's API: hidden from the docs, kept stable only for
//! those two users.

mod apps;
mod control;
mod media;
mod wire;

/// Every target, by the name `scripts/fuzz` and the corpus folders use.
pub const TARGETS: &[&str] = &[
    "rtp",
    "rtcp",
    "bencode",
    "sdp_session",
    "jitter",
    "relay",
    "conference",
    "ng",
    "http",
    "sdes",
    "srtp",
    "webrtc",
    "app_stream",
    "wav",
    "overlay",
];

/// Runs `target` on `data`. Unknown targets panic: a typo in a fuzz harness
/// must not pass as a clean run.
pub fn run(target: &str, data: &[u8]) {
    match target {
        "rtp" => wire::rtp(data),
        "rtcp" => wire::rtcp(data),
        "bencode" => wire::bencode(data),
        "sdp_session" => control::sdp_session(data),
        "jitter" => media::jitter(data),
        "relay" => media::relay(data),
        "conference" => media::conference(data),
        "ng" => control::ng(data),
        "http" => control::http(data),
        "sdes" => wire::sdes(data),
        "srtp" => wire::srtp(data),
        "webrtc" => media::webrtc(data),
        "app_stream" => apps::app_stream(data),
        "wav" => apps::wav(data),
        "overlay" => apps::overlay(data),
        other => panic!("no fuzz target `{other}`; targets: {TARGETS:?}"),
    }
}

/// Reads structure out of fuzz bytes; runs dry as zeros, never panics.
pub(crate) struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    pub(crate) fn u8(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().map_or((0, &[][..]), |(f, r)| (*f, r));
        self.0 = rest;
        first
    }

    pub(crate) fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    pub(crate) fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// Up to `n` bytes.
    pub(crate) fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (b, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        b
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
