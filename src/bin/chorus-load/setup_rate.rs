//! Set-up mode: `n` offer+answer+delete round trips with `--concurrency`
//! in flight, over ng (UDP) or HTTP; reports set-ups per second, latency
//! and the generator's own CPU per set-up. Over ng, each set-up in flight
//! is a thread blocking in `recv`, as a Kamailio worker does.

use super::{cpu_ticks, ng_request_on, sdp, target_name, Args, Proto, Target, TICKS_PER_S};
use std::net::SocketAddr;
use std::time::Instant;

pub(super) fn run(args: &Args, n: usize) {
    let c = args.concurrency.max(1);
    let a: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let b: SocketAddr = "127.0.0.1:40002".parse().unwrap();
    let own0 = cpu_ticks(std::process::id());
    let t0 = Instant::now();
    let mut latencies: Vec<f64> = match (args.target, args.proto) {
        (Target::Chorus, Proto::Http) => over_http(&args.api, n, c, (a, b)),
        (Target::Direct, _) => panic!("set-up mode needs a relay target"),
        _ => over_ng(args.ng, n, c, (a, b)),
    };
    let wall = t0.elapsed().as_secs_f64();
    let own = cpu_ticks(std::process::id()).saturating_sub(own0);
    let own_us = own as f64 / TICKS_PER_S * 1e6 / n as f64;
    latencies.sort_by(|x, y| x.total_cmp(y));
    let pct = |p: f64| latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1];
    let report = serde_json::json!({
        "label": args.label,
        "mode": "setup",
        "target": target_name(args),
        "proto": if args.target == Target::Rtpengine { "ng".to_string() } else { format!("{:?}", args.proto).to_lowercase() },
        "setups": n,
        "concurrency": c,
        "setups_per_s": (n as f64 / wall).round(),
        "setup_ms": { "p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0) },
        "generator_cpu_us_per_setup": own_us.round(),
    });
    println!("{report}");
}

/// `n` set-ups over chorus's HTTP API, `c` tasks at once; each set-up's
/// time in ms.
fn over_http(api: &str, n: usize, c: usize, (a, b): (SocketAddr, SocketAddr)) -> Vec<f64> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::new();
    rt.block_on(async {
        let tasks: Vec<_> = (0..c)
            .map(|t| {
                let (client, api) = (client.clone(), api.to_string());
                tokio::spawn(async move {
                    let mut lat = Vec::new();
                    for i in (t..n).step_by(c) {
                        let id = format!("setup-{i}");
                        let s = Instant::now();
                        let ok = |r: reqwest::Response| assert!(r.status().is_success(), "{}", r.status());
                        let offer = serde_json::json!({"from_tag": "ta", "sdp": sdp(a, 1)});
                        let url = format!("{api}/v1/calls/{id}");
                        ok(client.post(format!("{url}/offer")).json(&offer).send().await.unwrap());
                        let answer = serde_json::json!({"from_tag": "ta", "to_tag": "tb", "sdp": sdp(b, 1)});
                        ok(client.post(format!("{url}/answer")).json(&answer).send().await.unwrap());
                        ok(client.delete(url).send().await.unwrap());
                        lat.push(s.elapsed().as_secs_f64() * 1e3);
                    }
                    lat
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    })
}

/// `n` set-ups over ng to `ng`, `c` threads at once, each with its own
/// socket; each set-up's time in ms.
fn over_ng(ng: SocketAddr, n: usize, c: usize, (a, b): (SocketAddr, SocketAddr)) -> Vec<f64> {
    let threads: Vec<_> = (0..c)
        .map(|t| {
            std::thread::spawn(move || {
                let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                let (sa, sb) = (sdp(a, 1), sdp(b, 1));
                let mut lat = Vec::new();
                for i in (t..n).step_by(c) {
                    let id = format!("setup-{i}");
                    let st = Instant::now();
                    let offer = [("command", "offer"), ("call-id", &id), ("from-tag", "ta"), ("sdp", &sa)];
                    assert!(!ng_request_on(&s, ng, &offer).is_empty());
                    let answer = [
                        ("command", "answer"),
                        ("call-id", &id),
                        ("from-tag", "ta"),
                        ("to-tag", "tb"),
                        ("sdp", &sb),
                    ];
                    assert!(!ng_request_on(&s, ng, &answer).is_empty());
                    ng_request_on(&s, ng, &[("command", "delete"), ("call-id", &id), ("from-tag", "ta")]);
                    lat.push(st.elapsed().as_secs_f64() * 1e3);
                }
                lat
            })
        })
        .collect();
    threads.into_iter().flat_map(|t| t.join().unwrap()).collect()
}
