//! CPU and allocations per packet of the SRTP libraries weighed for chorus:
//! protect (RTP to SRTP) and unprotect (SRTP to RTP) of a 20 ms PCMU packet
//! (12-byte header, 160-byte payload), AES_CM_128_HMAC_SHA1_80 and
//! AEAD_AES_128_GCM. Rounds interleave the candidates; medians are printed.
//!
//!   cargo run --release [packets per round] [rounds]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        System.realloc(p, l, n)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const KEY: [u8; 16] = [7; 16];
const SALT_CM: [u8; 14] = [9; 14];
const SALT_GCM: [u8; 12] = [9; 12];
const PAYLOAD: usize = 160;

#[derive(Clone, Copy, PartialEq)]
enum Profile {
    Cm80,
    Gcm,
}

fn rtp(seq: u16) -> [u8; 12 + PAYLOAD] {
    let mut p = [0x55u8; 12 + PAYLOAD];
    p[..12].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78]);
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p
}

/// One candidate: protect and unprotect `n` packets; returns (ns protect,
/// ns unprotect, allocations per packet).
type Run = fn(Profile, usize) -> (f64, f64, f64);

fn measure(n: usize, mut protect: impl FnMut(u16) -> Vec<u8>, mut unprotect: impl FnMut(&mut Vec<u8>)) -> (f64, f64, f64) {
    // Protect all first (kept), then unprotect all: each timed on its own.
    let a0 = ALLOCS.load(Relaxed);
    let t0 = Instant::now();
    let mut out: Vec<Vec<u8>> = Vec::with_capacity(n);
    for i in 0..n {
        out.push(protect(i as u16));
    }
    let protect_ns = t0.elapsed().as_nanos() as f64 / n as f64;
    let t1 = Instant::now();
    for p in out.iter_mut() {
        unprotect(p);
    }
    let unprotect_ns = t1.elapsed().as_nanos() as f64 / n as f64;
    // The harness itself allocates one Vec per packet (kept for unprotect).
    let allocs = (ALLOCS.load(Relaxed) - a0) as f64 / n as f64 - 1.0;
    for p in &out {
        assert_eq!(p.len(), 12 + PAYLOAD, "round trip keeps the packet");
    }
    (protect_ns, unprotect_ns, allocs)
}

fn libsrtp2(profile: Profile, n: usize) -> (f64, f64, f64) {
    let (policy, key): (fn() -> srtp::CryptoPolicy, Vec<u8>) = match profile {
        Profile::Cm80 => (srtp::CryptoPolicy::aes_cm_128_hmac_sha1_80, [&KEY[..], &SALT_CM].concat()),
        Profile::Gcm => (srtp::CryptoPolicy::aes_gcm_128_16_auth, [&KEY[..], &SALT_GCM].concat()),
    };
    let sp = || srtp::StreamPolicy {
        key: &key,
        rtp: policy(),
        rtcp: policy(),
        ..Default::default()
    };
    let mut tx = srtp::Session::with_outbound_template(sp()).unwrap();
    let mut rx = srtp::Session::with_inbound_template(sp()).unwrap();
    measure(
        n,
        |seq| {
            // In place, in a buffer with room for the tag (as a worker's would be).
            let mut buf = Vec::with_capacity(12 + PAYLOAD + 256);
            buf.extend_from_slice(&rtp(seq));
            tx.protect(&mut buf).unwrap();
            buf
        },
        |p| rx.unprotect(p).unwrap(),
    )
}

fn webrtc(profile: Profile, n: usize) -> (f64, f64, f64) {
    let (p, salt): (_, &[u8]) = match profile {
        Profile::Cm80 => (webrtc_srtp::protection_profile::ProtectionProfile::Aes128CmHmacSha1_80, &SALT_CM),
        Profile::Gcm => (webrtc_srtp::protection_profile::ProtectionProfile::AeadAes128Gcm, &SALT_GCM),
    };
    let mut tx = webrtc_srtp::context::Context::new(&KEY, salt, p, None, None).unwrap();
    let mut rx = webrtc_srtp::context::Context::new(&KEY, salt, p, None, None).unwrap();
    measure(
        n,
        |seq| Vec::from(tx.encrypt_rtp(&rtp(seq)).unwrap()),
        |p| {
            let len = rx.decrypt_rtp(p).unwrap().len();
            p.truncate(len);
        },
    )
}

fn pure_libsrtp(profile: Profile, n: usize) -> (f64, f64, f64) {
    let (p, salt): (_, &[u8]) = match profile {
        Profile::Cm80 => (libsrtp::ProtectionProfile::Aes128CmHmacSha180, &SALT_CM),
        Profile::Gcm => (libsrtp::ProtectionProfile::AeadAes128Gcm, &SALT_GCM),
    };
    let config = libsrtp::StreamConfig::new(vec![libsrtp::MasterKey::new(&KEY, salt, &None)], &p, &p);
    let mut tx = libsrtp::SendSession::new();
    tx.add_stream(None, &config).unwrap();
    let mut rx = libsrtp::RecvSession::new();
    rx.add_stream(None, &config).unwrap();
    measure(
        n,
        |seq| tx.rtp_protect(rtp(seq).to_vec()).unwrap(),
        |p| *p = rx.rtp_unprotect(std::mem::take(p)).unwrap(),
    )
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let candidates: [(&str, Run); 3] = [
        ("srtp 0.7 (libsrtp2 2.x, OpenSSL for GCM)", libsrtp2),
        ("webrtc-srtp 0.17", webrtc),
        ("libsrtp 0.1 (pure Rust)", pure_libsrtp),
    ];
    for (profile, name) in [(Profile::Cm80, "AES_CM_128_HMAC_SHA1_80"), (Profile::Gcm, "AEAD_AES_128_GCM")] {
        let mut results = vec![(Vec::new(), Vec::new(), 0.0); candidates.len()];
        for _ in 0..rounds {
            for (i, (_, run)) in candidates.iter().enumerate() {
                let (p, u, a) = run(profile, n);
                results[i].0.push(p);
                results[i].1.push(u);
                results[i].2 = a;
            }
        }
        println!("{name}, {n} packets of {} bytes, median of {rounds} interleaved rounds:", 12 + PAYLOAD);
        println!("  {:<44} {:>12} {:>14} {:>16}", "library", "protect ns", "unprotect ns", "allocs/packet");
        for (i, (label, _)) in candidates.iter().enumerate() {
            let (p, u, a) = &mut results[i];
            println!("  {label:<44} {:>12.0} {:>14.0} {:>16.1}", median(p), median(u), a);
        }
    }
}
