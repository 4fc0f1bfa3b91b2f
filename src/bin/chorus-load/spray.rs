//! `--spray MIN-MAX`: a hostile sender for the soak. For `seconds` it sends
//! `--rate` datagrams per second to random ports of chorus's media range,
//! from random source ports on 127.0.0.1 (the peers' own address, so it hits
//! the latching rules) and 127.0.0.2-9 (strangers): random bytes, RTP with
//! lying CSRC counts, extension lengths and padding, RTCP compounds with a
//! zero-length first packet, counts that do not fit, padding longer than the
//! packet, and 60 KB datagrams.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// xorshift64*: enough randomness for junk, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn packet(rng: &mut Rng, buf: &mut Vec<u8>) {
    buf.clear();
    let kind = rng.below(6);
    let len = match kind {
        5 => 60_000,
        _ => 4 + rng.below(300) as usize,
    };
    buf.extend((0..len).map(|_| rng.next() as u8));
    match kind {
        // RTP: version 2, a CSRC count, X and P bits as chance has them.
        1 => {
            buf[0] = 0x80 | (rng.next() as u8 & 0x3f);
            buf[1] = rng.below(128) as u8;
        }
        // RTCP: zero-length first packet, then another.
        2 => {
            buf.clear();
            buf.extend_from_slice(&[0x81, 201, 0, 0]);
            buf.extend_from_slice(&[0x80, 200 + rng.below(8) as u8, 0, 1, 1, 2, 3, 4]);
        }
        // RTCP: a report count the length cannot hold, or padding too long.
        3 => {
            buf.clear();
            buf.extend_from_slice(&[0x80 | 0x1f, 201, 0, 1, 1, 2, 3, 4]);
            if rng.below(2) == 0 {
                buf[0] = 0xa0;
                buf[7] = 0xff;
            }
        }
        // RTCP header with a length word that points anywhere.
        4 => {
            buf[0] = 0x80 | (rng.next() as u8 & 0x3f);
            buf[1] = 200 + rng.below(14) as u8;
        }
        _ => {}
    }
}

pub fn run(min: u16, max: u16, rate: u64, seconds: u64) {
    let sockets: Vec<UdpSocket> = (1..=9u8)
        .filter_map(|i| UdpSocket::bind(SocketAddr::from(([127, 0, 0, i], 0))).ok())
        .collect();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id()));
    let mut buf = Vec::with_capacity(65536);
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let mut sent = 0u64;
    while Instant::now() < end {
        // Pace in 10 ms slices.
        for _ in 0..rate.div_ceil(100) {
            packet(&mut rng, &mut buf);
            let port = min + rng.below(u64::from(max - min) + 1) as u16;
            let s = &sockets[rng.below(sockets.len() as u64) as usize];
            let _ = s.send_to(&buf, ("127.0.0.1", port));
            sent += 1;
        }
        let due = start + Duration::from_millis(sent * 1000 / rate.max(1));
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    }
    println!("spray: {sent} hostile datagrams in {seconds} s to ports {min}-{max}");
}
