//! An application at the end of chorus's audio streams, for benchmarks: a
//! WebSocket server that reads every message and throws it away (a
//! transcription service's first step), on one thread that sleeps until a
//! message comes. Runs until killed.

use futures_util::StreamExt;

pub fn run(listen: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .expect("--ws-sink address binds");
        eprintln!("ws sink on {listen}");
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                while let Some(Ok(_)) = ws.next().await {}
            });
        }
    });
}

/// Starts a stream on every call `load-0..calls` to `url` (`record`: a
/// recording with the defaults instead); the number started.
pub fn start_streams(api: &str, calls: usize, url: &str, format: &str, rate: Option<u32>) -> usize {
    let what = if url == "record" { "recordings" } else { "streams" };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let c = reqwest::Client::new();
    let mut body = serde_json::json!({"url": url, "from_tag": "ta", "tracks": "both", "format": format});
    if let Some(r) = rate {
        body["sample_rate"] = serde_json::json!(r);
    }
    if what == "recordings" {
        body = serde_json::json!({});
    }
    (0..calls)
        .filter(|i| {
            let r = rt.block_on(c.post(format!("{api}/v1/calls/load-{i}/{what}")).json(&body).send());
            matches!(r, Ok(r) if r.status().is_success())
        })
        .count()
}
