//! What ng replies carry beyond `result`: a call in rtpengine's shape (for
//! `query` and `delete`, which Kamailio's `$rtpstat` reads) and the
//! instance's `statistics`.

use super::calls::CallSnapshot;
use super::{lock, State};
use crate::wire::bencode::{dict, Value};
use crate::worker::SideReportWithPorts;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Instant, SystemTime};

/// rtpengine's `statistics` reply, the parts chorus can fill truthfully.
pub(super) fn statistics(s: &State) -> Value {
    let sum = |f: fn(&crate::metrics::WorkerCounters) -> &std::sync::atomic::AtomicU64| -> i64 {
        s.workers.iter().map(|w| f(&w.counters).load(Relaxed)).sum::<u64>() as i64
    };
    let packets = sum(|c| &c.packets_relayed);
    let bytes = sum(|c| &c.bytes_relayed);
    let errors: i64 = s
        .workers
        .iter()
        .map(|w| w.counters.drops.iter().map(|d| d.load(Relaxed)).sum::<u64>())
        .sum::<u64>() as i64;
    let (pr, br, er) = lock(&s.ng_rates).sample(Instant::now(), packets, bytes, errors);
    let calls = s.call_count() as i64;
    dict([
        (
            "currentstatistics",
            dict([
                ("sessionsown", Value::Int(calls)),
                ("sessionsforeign", Value::Int(0)),
                ("sessionstotal", Value::Int(calls)),
                ("transcodedmedia", Value::Int(0)),
                ("packetrate", Value::Int(pr)),
                ("byterate", Value::Int(br)),
                ("errorrate", Value::Int(er)),
            ]),
        ),
        (
            "totalstatistics",
            dict([
                ("uptime", Value::str(&s.started.elapsed().as_secs().to_string())),
                (
                    "managedsessions",
                    Value::Int(s.metrics.call_seconds.get_sample_count() as i64 + calls),
                ),
                ("timeoutsessions", Value::Int(s.metrics.calls_timed_out.get() as i64)),
                ("relayedpackets", Value::Int(packets)),
                ("relayedbytes", Value::Int(bytes)),
                ("relayedpacketerrors", Value::Int(errors)),
            ]),
        ),
    ])
}

/// Rates between two `statistics` requests (per second).
#[derive(Default)]
pub struct Rates {
    last: Option<(Instant, i64, i64, i64)>,
}

impl Rates {
    fn sample(&mut self, now: Instant, p: i64, b: i64, e: i64) -> (i64, i64, i64) {
        let r = match self.last {
            Some((t, p0, b0, e0)) if now > t => {
                let dt = now.duration_since(t).as_secs_f64();
                let rate = |x: i64, x0: i64| ((x - x0) as f64 / dt).round() as i64;
                (rate(p, p0), rate(b, b0), rate(e, e0))
            }
            _ => (0, 0, 0),
        };
        self.last = Some((now, p, b, e));
        r
    }
}

/// rtpengine's shape of a call in `query` and `delete` replies: per tag,
/// medias and streams with `stats`, and `totals`, which Kamailio's
/// `$rtpstat` reads.
pub(super) fn call_items(snap: &CallSnapshot) -> Vec<(&'static str, Value)> {
    let now_unix = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let created = snap.created_unix();
    let mut totals = [[0i64; 3]; 2]; // [RTP, RTCP] x [packets, bytes, errors]
    let mut tags = Vec::new();
    for (i, leg) in snap.session.legs.iter().enumerate() {
        let Some(tag) = &leg.tag else { continue };
        let mut medias = Vec::new();
        for (si, st) in snap.session.streams.iter().enumerate() {
            let Some(side) = snap.report.streams.get(si).and_then(|r| r.sides.get(i)) else {
                continue;
            };
            let stats = &side.side;
            totals[0][0] += stats.rtp.packets as i64;
            totals[0][1] += stats.rtp.bytes as i64;
            totals[0][2] += stats.dropped as i64;
            totals[1][0] += stats.rtcp_packets as i64;
            totals[1][1] += stats.rtcp_bytes as i64;
            medias.push(dict([
                ("index", Value::Int(si as i64 + 1)),
                ("type", Value::str(&st.media)),
                ("streams", Value::List(side_streams(side, now_unix))),
                ("stats", dict([("lost", Value::Int(stats.rtp.lost as i64))])),
            ]));
        }
        let mut t = vec![
            ("tag", Value::str(tag)),
            ("created", Value::Int(created as i64)),
            ("medias", Value::List(medias)),
        ];
        if let Some(l) = &leg.label {
            t.push(("label", Value::str(l)));
        }
        tags.push((tag.as_bytes().to_vec(), dict(t)));
    }
    let block = |t: [i64; 3]| {
        dict([
            ("packets", Value::Int(t[0])),
            ("bytes", Value::Int(t[1])),
            ("errors", Value::Int(t[2])),
        ])
    };
    vec![
        ("created", Value::Int(created as i64)),
        ("created_us", Value::Int(((created.fract()) * 1e6) as i64)),
        ("last signal", Value::Int(now_unix)),
        ("tags", Value::Dict(tags)),
        ("totals", dict([("RTP", block(totals[0])), ("RTCP", block(totals[1]))])),
    ]
}

/// rtpengine's `streams` of one side of a media: RTP, then RTCP unless muxed.
fn side_streams(side: &SideReportWithPorts, now_unix: i64) -> Vec<Value> {
    let stats = &side.side;
    let last = stats.rtp.idle_s.map(|idle| now_unix - idle as i64).unwrap_or(0);
    let stream = |local: Option<SocketAddr>, peer: Option<SocketAddr>, rtcp: bool, packets: u64, bytes: u64| {
        let mut flags = vec![Value::str(if rtcp { "RTCP" } else { "RTP" })];
        if peer.is_some() {
            flags.push(Value::str("filled"));
        }
        if stats.latched && !rtcp {
            flags.push(Value::str("confirmed"));
        }
        let family = if local.is_some_and(|a| a.is_ipv6()) {
            "IPv6"
        } else {
            "IPv4"
        };
        dict([
            ("local port", Value::Int(local.map(|a| a.port() as i64).unwrap_or(0))),
            (
                "local address",
                Value::str(&local.map(|a| a.ip().to_string()).unwrap_or_default()),
            ),
            ("family", Value::str(family)),
            ("endpoint", endpoint(peer)),
            ("advertised endpoint", endpoint(peer)),
            ("last packet", Value::Int(last)),
            ("flags", Value::List(flags)),
            (
                "stats",
                dict([
                    ("packets", Value::Int(packets as i64)),
                    ("bytes", Value::Int(bytes as i64)),
                    ("errors", Value::Int(if rtcp { 0 } else { stats.dropped as i64 })),
                ]),
            ),
        ])
    };
    let mut streams = vec![stream(
        side.local_rtp,
        stats.peer_rtp,
        false,
        stats.rtp.packets,
        stats.rtp.bytes,
    )];
    if side.local_rtcp.is_some() {
        streams.push(stream(
            side.local_rtcp,
            stats.peer_rtcp,
            true,
            stats.rtcp_packets,
            stats.rtcp_bytes,
        ));
    }
    streams
}

fn endpoint(a: Option<SocketAddr>) -> Value {
    match a {
        Some(a) => dict([
            ("family", Value::str(if a.is_ipv6() { "IPv6" } else { "IPv4" })),
            ("address", Value::str(&a.ip().to_string())),
            ("port", Value::Int(a.port() as i64)),
        ]),
        None => dict([]),
    }
}

#[cfg(test)]
mod tests {
    use super::Rates;
    use std::time::{Duration, Instant};

    #[test]
    fn rates_are_per_second_between_two_samples() {
        let mut r = Rates::default();
        let t0 = Instant::now();
        assert_eq!(
            r.sample(t0, 100, 1000, 1),
            (0, 0, 0),
            "nothing to compare the first with"
        );
        assert_eq!(r.sample(t0 + Duration::from_secs(2), 300, 5000, 5), (100, 2000, 2));
        // No time passed: no rate, rather than a division by zero.
        assert_eq!(r.sample(t0 + Duration::from_secs(2), 900, 9000, 9), (0, 0, 0));
    }
}
