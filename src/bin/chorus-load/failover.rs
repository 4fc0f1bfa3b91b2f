//! Failover mode: sets up N calls on one instance, sends 20 ms RTP both ways
//! from two independent sockets per call (phones that sleep until a packet
//! comes or their next one is due), kills the instance with SIGKILL, and
//! measures every receiver's media gap: from its last packet before the
//! kill to its first after, and the first packet after relative to the
//! kill and to the takeover's start (read from the taker's log).

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

struct Phone {
    sock: UdpSocket,
    to: SocketAddr,
    last_before: Option<SystemTime>,
    first_after: Option<SystemTime>,
}

pub fn run(api: &str, calls: usize, pid: u32, seconds: u64, takeover_log: Option<&str>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut phones = Vec::with_capacity(2 * calls);
    for i in 0..calls {
        let (a, b) = (bind(), bind());
        let (to_a, to_b) = rt.block_on(super::setup_http(api, &format!("fo-{i}"), addr(&a), addr(&b)));
        phones.push(Phone {
            sock: a,
            to: to_a,
            last_before: None,
            first_after: None,
        });
        phones.push(Phone {
            sock: b,
            to: to_b,
            last_before: None,
            first_after: None,
        });
    }
    let mut poll = Poll::new().unwrap();
    for (i, p) in phones.iter_mut().enumerate() {
        poll.registry()
            .register(&mut p.sock, Token(i), Interest::READABLE)
            .unwrap();
    }
    // Two seconds of media, the kill, then `seconds` more.
    let start = Instant::now();
    let kill_at = start + Duration::from_secs(2);
    let end = kill_at + Duration::from_secs(seconds);
    let mut killed: Option<SystemTime> = None;
    let mut events = Events::with_capacity(1024);
    let mut buf = [0u8; 2048];
    let mut next_send = start;
    let mut seq = 0u16;
    while Instant::now() < end {
        if killed.is_none() && Instant::now() >= kill_at {
            // SAFETY: kill(2) with a pid and a signal number has no memory effects.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            killed = Some(SystemTime::now());
        }
        if Instant::now() >= next_send {
            let mut pkt = [0u8; 172];
            for (i, p) in phones.iter().enumerate() {
                chorus::wire::rtp::write_header(&mut pkt, 0, seq, u32::from(seq) * 160, i as u32).unwrap();
                let _ = p.sock.send_to(&pkt, p.to);
            }
            seq = seq.wrapping_add(1);
            next_send += Duration::from_millis(20);
        }
        let mut wait = next_send.saturating_duration_since(Instant::now());
        if killed.is_none() {
            wait = wait.min(kill_at.saturating_duration_since(Instant::now()));
        }
        poll.poll(&mut events, Some(wait)).unwrap();
        for ev in events.iter() {
            let p = &mut phones[ev.token().0];
            while p.sock.recv_from(&mut buf).is_ok() {
                let now = SystemTime::now();
                match killed {
                    None => p.last_before = Some(now),
                    Some(_) if p.first_after.is_none() => p.first_after = Some(now),
                    Some(_) => {}
                }
            }
        }
    }
    report(
        &phones,
        killed.expect("the kill happened"),
        takeover_log.and_then(takeover_start),
    );
}

fn report(phones: &[Phone], killed: SystemTime, takeover: Option<SystemTime>) {
    let ms = |a: SystemTime, b: SystemTime| b.duration_since(a).map(|d| d.as_secs_f64() * 1e3).unwrap_or(0.0);
    let resumed: Vec<&Phone> = phones.iter().filter(|p| p.first_after.is_some()).collect();
    let mut gap: Vec<f64> = resumed
        .iter()
        .filter_map(|p| Some(ms(p.last_before?, p.first_after?)))
        .collect();
    let mut from_kill: Vec<f64> = resumed.iter().map(|p| ms(killed, p.first_after.unwrap())).collect();
    let mut from_takeover: Vec<f64> = match takeover {
        Some(t) => resumed.iter().map(|p| ms(t, p.first_after.unwrap())).collect(),
        None => Vec::new(),
    };
    let stat = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => "n/a".to_string(),
            n => format!("median {:.0} ms, max {:.0} ms", v[n / 2], v[n - 1]),
        }
    };
    println!(
        "failover: {} phones, {} resumed; gap {}; first packet after the kill {}; after the takeover's start {}; detection {}",
        phones.len(),
        resumed.len(),
        stat(&mut gap),
        stat(&mut from_kill),
        stat(&mut from_takeover),
        takeover.map(|t| format!("{:.0} ms", ms(killed, t))).unwrap_or("n/a".into()),
    );
}

/// When the taker logged that it started (its `takeover_started` field,
/// in either log format).
fn takeover_start(path: &str) -> Option<SystemTime> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.contains("taking its calls over"))?;
    let after = line.split("takeover_started").nth(1)?;
    let from = after.find(|c: char| c.is_ascii_digit())?;
    let num: String = after[from..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs_f64(num.parse().ok()?))
}

fn bind() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap()
}

fn addr(s: &UdpSocket) -> SocketAddr {
    s.local_addr().unwrap()
}
