//! SDP parse and rewrite cost (control-plane work per offer/answer).

use chorus::sdp::{rewrite, MuxOut, Rewrite, Sdp, StreamOut};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

fn load(case: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/sdp/{case}/input.sdp", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn bench(c: &mut Criterion) {
    for case in ["polycom_vvx", "webrtc_chrome", "bria_audio_video"] {
        let text = load(case);
        c.bench_function(&format!("sdp_parse/{case}"), |b| {
            b.iter(|| Sdp::parse(black_box(&text)).unwrap())
        });
        let sdp = Sdp::parse(&text).unwrap();
        let streams: Vec<StreamOut> = sdp
            .media
            .iter()
            .map(|_| StreamOut::new(40000, 40001, MuxOut::Absent))
            .collect();
        let plan = Rewrite {
            address: "203.0.113.1".parse().unwrap(),
            streams: &streams,
            remove_ice: true,
            origin_version: Some(7),
            replace_origin: false,
            strip_codecs: &[],
            session_transport: None,
        };
        c.bench_function(&format!("sdp_rewrite/{case}"), |b| {
            b.iter(|| rewrite(black_box(&sdp), &plan))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
