//! The ng cookie cache under a steady stream of commands: the mean cost of
//! a command's begin and finish, and the worst single one (the cache's
//! upkeep lands on one command). Keys as ng makes them, 700-byte replies,
//! a command every 50 µs (20,000/s), 600,000 commands: past its bounds
//! several times.
//!
//!   cargo bench --bench cookie_cache

use chorus::control::ng_cookie::CookieCache;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let reply: Arc<[u8]> = Arc::from(vec![7u8; 700]);
    for round in 1..=3 {
        let mut c = CookieCache::default();
        let t0 = Instant::now();
        let n = 600_000u64;
        let (mut worst, mut over_1ms) = (Duration::ZERO, 0);
        let start = Instant::now();
        for i in 0..n {
            let key = format!("{i:08} 127.0.0.1:5060");
            let now = t0 + Duration::from_micros(i * 50);
            let s = Instant::now();
            c.begin(key.as_bytes(), now);
            c.finish(key.as_bytes(), now, reply.clone());
            let took = s.elapsed();
            worst = worst.max(took);
            over_1ms += u32::from(took > Duration::from_millis(1));
        }
        let mean = start.elapsed().as_nanos() as f64 / n as f64;
        println!("round {round}: {mean:.0} ns per command, worst {worst:.2?}, {over_1ms} over 1 ms");
    }
}
