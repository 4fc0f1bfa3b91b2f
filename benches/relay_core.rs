//! The relay's per-packet decision (validate, source check, statistics,
//! destination), without the syscalls around it.

use chorus::media::relay::{ClockRates, PeerSpec, RelayStream, Side, StreamKind};
use chorus::wire::rtp::write_header;
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn peer(addr: &str) -> PeerSpec {
    let a: SocketAddr = addr.parse().unwrap();
    PeerSpec {
        kind: StreamKind::Rtp,
        rtp: Some(a),
        rtcp: None,
        mux: false,
        sdp_ip: Some(a.ip()),
        signal_ip: None,
        any_source: false,
        clock_rates: ClockRates::default(),
        dtmf_pts: 0,
    }
}

fn bench(c: &mut Criterion) {
    let mut s = RelayStream {
        sides: [Side::new(peer("10.0.0.1:4000")), Side::new(peer("10.0.0.2:5000"))],
    };
    let from: SocketAddr = "10.0.0.1:4000".parse().unwrap();
    let mut pkt = [0u8; 172];
    let t0 = Instant::now();
    let mut seq = 0u16;
    c.bench_function("relay_decision/rtp_latched", |b| {
        b.iter(|| {
            seq = seq.wrapping_add(1);
            write_header(&mut pkt, 0, seq, seq as u32 * 160, 1234);
            let now = t0 + Duration::from_millis(20 * seq as u64);
            black_box(s.handle_packet(now, 0, from, black_box(&pkt), false).unwrap());
        })
    });
    let attacker: SocketAddr = "10.9.9.9:4000".parse().unwrap();
    c.bench_function("relay_decision/foreign_dropped", |b| {
        b.iter(|| black_box(s.handle_packet(t0, 0, attacker, black_box(&pkt), false).unwrap_err()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
