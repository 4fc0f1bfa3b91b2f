//! One stream's task: connect to the application, send what the tap hands
//! on, take back what the application plays, reconnect with backoff when
//! the connection is lost, and stop when the tap closes.

use super::backlog::Backlog;
use super::format::{self, Incoming, Meta, Outgoing, Wire};
use super::options::Checked;
use super::{Owner, Registry};
use crate::media::tap::{Out, Tap};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// Reconnect backoff: first wait, and the longest.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Time to open the connection (TCP, TLS, handshake).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The WebSocket's read buffer (messages may be larger: they are read in parts).
const READ_BUFFER: usize = 4096;
/// Largest message taken from an application (a second of 48 kHz PCM is 96 KB).
const MAX_MESSAGE: usize = 1 << 20;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Mozilla's roots, and the PEM certificates of `ca_file` (a private CA).
pub(super) fn tls_config(ca_file: Option<&str>) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(f) = ca_file {
        let certs = CertificateDer::pem_file_iter(f).map_err(|e| format!("stream_ca_file {f}: {e}"))?;
        for c in certs {
            let c = c.map_err(|e| format!("stream_ca_file {f}: {e}"))?;
            roots.add(c).map_err(|e| format!("stream_ca_file {f}: {e}"))?;
        }
    }
    // ring, not aws-lc-rs: no C build beyond ring's own; rustls marks it
    // deprecated only for lacking post-quantum key exchange.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

async fn connect(reg: &Registry, opts: &Checked) -> Result<Ws, String> {
    let mut req = opts.url.as_str().into_client_request().map_err(|e| e.to_string())?;
    for (k, v) in &opts.headers {
        let (Ok(k), Ok(v)) = (k.parse::<tokio_tungstenite::tungstenite::http::HeaderName>(), v.parse()) else {
            continue; // checked when the stream started
        };
        req.headers_mut().insert(k, v);
    }
    // tungstenite zeroes its whole read buffer before each read attempt
    // (128 KiB by default): at 4 KiB, a wake-up for a frame costs little.
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let connector = tokio_tungstenite::Connector::Rustls(reg.tls.clone());
    let go = tokio_tungstenite::connect_async_tls_with_config(req, Some(config), true, Some(connector));
    match tokio::time::timeout(CONNECT_TIMEOUT, go).await {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no connection within {CONNECT_TIMEOUT:?}")),
    }
}

/// How a connection ended.
enum End {
    /// The tap closed: the stream is over.
    Stopped,
    /// The connection failed; try again.
    Lost(String),
}

pub(super) async fn run(
    reg: &Registry,
    sid: &str,
    owner: &Owner,
    tap: Arc<Tap>,
    opts: Checked,
    meta: Meta,
    target: &'static str,
) {
    let event = |name: &str, extra: Value| {
        let mut body = json!({ "event": name, "stream_id": sid, "target": target });
        match owner {
            Owner::Call(id) => body["call_id"] = json!(id),
            Owner::Conference(id) => body["conference"] = json!(id),
        }
        if let (Some(b), Value::Object(x)) = (body.as_object_mut(), extra) {
            b.extend(x);
        }
        reg.report(owner, body);
    };
    let mut backoff = BACKOFF_MIN;
    let mut dropped_told = 0;
    while !tap.is_closed() {
        let why = match connect(reg, &opts).await {
            Ok(ws) => {
                reg.metrics.connections.with_label_values(&["connected"]).inc();
                event("stream_connected", json!({ "url": opts.url }));
                backoff = BACKOFF_MIN;
                let mut conn = Connection::new(reg, &tap, &opts, meta.clone(), target);
                match conn.pump(ws).await {
                    End::Stopped => break,
                    End::Lost(why) => {
                        reg.metrics.connections.with_label_values(&["lost"]).inc();
                        why
                    }
                }
            }
            Err(why) => {
                reg.metrics.connections.with_label_values(&["failed"]).inc();
                why
            }
        };
        tracing::warn!(stream = sid, error = %why, retry_ms = backoff.as_millis() as u64, "stream disconnected");
        event(
            "stream_disconnected",
            json!({ "reason": why, "retry_in_ms": backoff.as_millis() as u64 }),
        );
        wait_dropping(reg, &tap, backoff, target).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
        let dropped = tap.dropped.load(std::sync::atomic::Ordering::Relaxed);
        if dropped > dropped_told {
            event("stream_dropped", json!({ "frames_dropped": dropped }));
            dropped_told = dropped;
        }
    }
    event("stream_stopped", json!({}));
}

/// While disconnected: the tap's frames are let go (counted) for `d`.
async fn wait_dropping(reg: &Registry, tap: &Tap, d: Duration, target: &'static str) {
    let until = tokio::time::Instant::now() + d;
    while !tap.is_closed() {
        tokio::select! {
            _ = tap.wait() => {
                let n = std::iter::from_fn(|| tap.pop()).filter(|o| matches!(o, Out::Audio(_))).count();
                reg.metrics.frames.with_label_values(&[target, "dropped"]).inc_by(n as u64);
            }
            _ = tokio::time::sleep_until(until) => return,
        }
    }
}

/// One connection to the application.
struct Connection<'a> {
    reg: &'a Registry,
    tap: &'a Tap,
    opts: &'a Checked,
    out: Outgoing,
    dropped_seen: u64,
    back: Backlog,
    /// This stream's frame counters, looked up once.
    sent: prometheus::IntCounter,
    dropped: prometheus::IntCounter,
}

impl<'a> Connection<'a> {
    fn new(reg: &'a Registry, tap: &'a Tap, opts: &'a Checked, meta: Meta, target: &'static str) -> Self {
        let out = Outgoing::new(opts.format, meta);
        let back = Backlog::new(out.rate());
        Connection {
            reg,
            tap,
            opts,
            out,
            dropped_seen: tap.dropped.load(std::sync::atomic::Ordering::Relaxed),
            back,
            sent: reg.metrics.frames.with_label_values(&[target, "sent"]),
            dropped: reg.metrics.frames.with_label_values(&[target, "dropped"]),
        }
    }

    async fn pump(&mut self, ws: Ws) -> End {
        let (mut sink, mut stream) = ws.split();
        for m in self.out.opening() {
            if let Err(e) = sink.send(to_message(m)).await {
                return End::Lost(e.to_string());
            }
        }
        let mut pace = tokio::time::interval(Duration::from_millis(20));
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut outgoing = Vec::new();
            tokio::select! {
                _ = self.tap.wait() => {
                    self.drain(&mut outgoing);
                    if self.tap.is_closed() {
                        outgoing.push(self.out.stop());
                        for m in outgoing {
                            let _ = sink.feed(to_message(m)).await;
                        }
                        let _ = sink.send(Message::Close(None)).await;
                        return End::Stopped;
                    }
                }
                msg = stream.next() => match msg {
                    Some(Ok(Message::Text(t))) => self.incoming(&Wire::Text(t.to_string()), &mut outgoing),
                    Some(Ok(Message::Binary(b))) => self.incoming(&Wire::Binary(b.to_vec()), &mut outgoing),
                    Some(Ok(Message::Close(_))) | None => return End::Lost("closed by the application".into()),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return End::Lost(e.to_string()),
                },
                _ = pace.tick(), if self.back.waiting() => self.back.top_up(self.tap),
            }
            // One write for what one wake-up drained.
            let n = outgoing.len();
            for m in outgoing {
                if let Err(e) = sink.feed(to_message(m)).await {
                    return End::Lost(e.to_string());
                }
            }
            if n > 0 {
                if let Err(e) = sink.flush().await {
                    return End::Lost(e.to_string());
                }
            }
        }
    }

    /// Everything the tap holds, as messages.
    fn drain(&mut self, outgoing: &mut Vec<Wire>) {
        let m = &self.reg.metrics;
        while let Some(o) = self.tap.pop() {
            match o {
                Out::Audio(f) => {
                    m.delay.observe(f.at.elapsed().as_secs_f64());
                    self.sent.inc();
                    outgoing.extend(self.out.audio(&f));
                }
                Out::Dtmf(d) => outgoing.push(self.out.dtmf(d)),
                Out::Played(id) => {
                    if let Some(name) = self.back.marks.remove(&id) {
                        outgoing.push(self.out.mark(&name));
                    }
                }
            }
        }
        let dropped = self.tap.dropped.load(std::sync::atomic::Ordering::Relaxed);
        if dropped > self.dropped_seen {
            self.dropped.inc_by(dropped - self.dropped_seen);
            self.dropped_seen = dropped;
        }
    }

    /// A message from the application.
    fn incoming(&mut self, msg: &Wire, outgoing: &mut Vec<Wire>) {
        let count = |kind: &str| self.reg.metrics.from_app.with_label_values(&[kind]).inc();
        let parsed = match format::parse(self.opts.format, msg) {
            Ok(p) => p,
            Err(e) => {
                count("invalid");
                tracing::debug!(error = %e, "stream: invalid message from the application");
                return;
            }
        };
        if !self.opts.back {
            // A one-way stream: nothing the application sends is played.
            return count("ignored");
        }
        match parsed {
            Incoming::Audio(pcm) => {
                count("audio");
                let lost = self.back.audio(&pcm);
                self.reg
                    .metrics
                    .from_app
                    .with_label_values(&["overflow"])
                    .inc_by(lost as u64);
                self.back.top_up(self.tap);
            }
            Incoming::Mark(name) => {
                count("mark");
                self.back.mark(name);
                self.back.top_up(self.tap);
            }
            Incoming::Clear => {
                count("clear");
                for name in self.back.clear(self.tap) {
                    outgoing.push(self.out.mark(&name));
                }
            }
            Incoming::Ignored => count("ignored"),
        }
    }
}

fn to_message(w: Wire) -> Message {
    match w {
        Wire::Text(t) => Message::Text(t.into()),
        Wire::Binary(b) => Message::Binary(b.into()),
    }
}
