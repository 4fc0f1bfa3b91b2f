//! rtpengine's "ng" control protocol, so that Kamailio's and OpenSIPS's
//! `rtpengine` modules drive chorus unchanged. A message is
//! `<cookie> <bencoded dictionary>`; the reply carries the same cookie.
//! Commands translate into the same calls as the HTTP API (`calls`).

use super::calls;
use super::command::{self as commands, CallCommand, Outcome};
pub use super::ng_cookie::CookieCache;
use super::ng_cookie::Lookup;
use super::ng_options::{required, str_of, unknown_keys};
use super::{lock, ng_options, ng_reply, State};
use crate::error::Error;
use crate::wire::bencode::{self, dict, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// A reply in the making: the dictionary and the warnings gathered.
struct Reply {
    items: Vec<(&'static str, Value)>,
    warnings: Vec<String>,
}

impl Reply {
    fn ok() -> Self {
        Reply {
            items: vec![("result", Value::str("ok"))],
            warnings: Vec::new(),
        }
    }
}

/// Who sent an ng message: it keys the cookie cache.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// A UDP datagram: retransmissions come from the same address and port.
    Udp(SocketAddr),
    /// An HTTP request: each may come on a new connection, so the IP only.
    Http(Option<std::net::IpAddr>),
}

impl Source {
    /// Appends who sent it to a cookie, written in place (no string per message).
    fn append_key(&self, key: &mut Vec<u8>) {
        use std::io::Write;
        // Writing into a Vec cannot fail.
        let _ = match self {
            Source::Udp(a) => write!(key, " udp {a}"),
            Source::Http(Some(ip)) => write!(key, " http {ip}"),
            Source::Http(None) => write!(key, " http"),
        };
    }
}

/// The ng front door, over UDP or HTTP.
pub struct Ng<'a> {
    pub state: &'a State,
    /// Another instance forwarded this message: run it here, whatever happens.
    pub forwarded: bool,
}

impl Ng<'_> {
    /// Handles one message from `peer`. Returns the reply
    /// to send, or `None` to stay silent (a retransmission still running, or
    /// a message without a cookie, which cannot be answered).
    pub async fn handle(&self, message: &[u8], peer: Source) -> Option<Arc<[u8]>> {
        let Some(space) = message.iter().position(|&b| b == b' ') else {
            tracing::warn!(?peer, "ng message without a cookie dropped");
            self.state
                .metrics
                .requests
                .with_label_values(&["ng", "no_cookie"])
                .inc();
            return None;
        };
        let (cookie, body) = (&message[..space], &message[space + 1..]);
        // Two proxies never get each other's replies, on either door.
        let mut key = Vec::with_capacity(cookie.len() + 56);
        key.extend_from_slice(cookie);
        peer.append_key(&mut key);
        match lock(&self.state.ng_cookies).begin(&key, Instant::now()) {
            Lookup::Done(reply) => {
                self.state
                    .metrics
                    .requests
                    .with_label_values(&["ng", "retransmission"])
                    .inc();
                return Some(reply);
            }
            Lookup::InFlight => return None,
            Lookup::New => {}
        }
        let parsed = match bencode::decode(body) {
            Ok(v @ Value::Dict(_)) => Ok(v),
            Ok(_) => Err(Error::BadRequest("ng message is not a dictionary".into())),
            Err(e) => Err(Error::BadRequest(e.to_string())),
        };
        let reply = match parsed {
            Ok(d) => match self.forward(&d).await {
                Some(Ok(value)) => return Some(self.finish(cookie, &key, value)),
                Some(Err(e)) => Err(e),
                None => self.command(&d).await,
            },
            Err(e) => {
                self.state.metrics.requests.with_label_values(&["ng", e.code()]).inc();
                tracing::warn!(?peer, error = %e, "malformed ng message");
                Err(e)
            }
        };
        let value = match reply {
            Ok(r) => {
                let mut items = r.items;
                if !r.warnings.is_empty() {
                    items.push(("warning", Value::str(&r.warnings.join("; "))));
                }
                dict(items)
            }
            Err(e) => dict([
                ("result", Value::str("error")),
                ("error-reason", Value::str(&e.to_string())),
            ]),
        };
        Some(self.finish(cookie, &key, value))
    }

    /// Encodes the reply and keeps it for retransmissions.
    fn finish(&self, cookie: &[u8], key: &[u8], value: Value) -> Arc<[u8]> {
        // Encoded into a buffer the thread keeps, then copied once into
        // a reply of exactly its size (kept for retransmissions).
        thread_local! {
            static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let out: Arc<[u8]> = SCRATCH.with_borrow_mut(|buf| {
            buf.clear();
            buf.extend_from_slice(cookie);
            buf.push(b' ');
            value.encode(buf);
            let reply = Arc::from(&buf[..]);
            buf.truncate(0);
            buf.shrink_to(16 * 1024);
            reply
        });
        lock(&self.state.ng_cookies).finish(key, Instant::now(), out.clone());
        out
    }

    /// For a command on a call another instance owns: that instance's reply.
    async fn forward(&self, d: &Value) -> Option<Result<Value, Error>> {
        let command = d.get("command").and_then(Value::as_str)?;
        let call_id = d.get("call-id").and_then(Value::as_str)?;
        if self.forwarded || !matches!(command, "offer" | "answer" | "delete" | "query") {
            return None;
        }
        let super::forward::Route::Owner { url, .. } =
            super::forward::route(self.state, call_id, command == "offer").await
        else {
            return None;
        };
        // A cookie of its own: the owner caches replies by cookie and source.
        let n = self.state.next_key.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut body = format!("fwd-{}-{n} ", self.state.boot).into_bytes();
        d.encode(&mut body);
        let ct = Some("application/x-rtpengine-ng");
        let sent = super::forward::send(self.state, &url, reqwest::Method::POST, "/ng", ct, body).await;
        Some(sent.and_then(|(status, _, bytes)| {
            let bad = || Error::Unavailable(format!("the call's owner at {url} answered ng with HTTP {status}"));
            let space = bytes.iter().position(|&b| b == b' ').ok_or_else(bad)?;
            bencode::decode(&bytes[space + 1..]).map_err(|_| bad())
        }))
    }

    async fn command(&self, d: &Value) -> Result<Reply, Error> {
        let command = str_of(d, "command")?.ok_or_else(|| Error::BadRequest("no `command`".into()))?;
        let call_id = str_of(d, "call-id")?.unwrap_or("");
        let endpoint = match command {
            "ping" => "ng:ping",
            "offer" => "ng:offer",
            "answer" => "ng:answer",
            "delete" => "ng:delete",
            "query" => "ng:query",
            "list" => "ng:list",
            "statistics" => "ng:statistics",
            "start stream" => "ng:start_stream",
            "stop stream" => "ng:stop_stream",
            "start recording" => "ng:start_recording",
            "pause recording" => "ng:pause_recording",
            "stop recording" => "ng:stop_recording",
            "play DTMF" => "ng:play_dtmf",
            "play media" => "ng:play_media",
            "stop media" => "ng:stop_media",
            _ => {
                self.state
                    .metrics
                    .requests
                    .with_label_values(&["ng", "unknown_command"])
                    .inc();
                return Err(Error::NotImplemented(format!(
                    "unknown or unsupported command `{command}` (chorus supports ping, offer, answer, delete, query, list, statistics, start stream, stop stream, start recording, pause recording, stop recording, play DTMF, play media, stop media)"
                )));
            }
        };
        super::instrument(self.state, endpoint, call_id, async {
            let mut reply = Reply::ok();
            reply.warnings.extend(unknown_keys(d));
            match command {
                // Kamailio's rtpengine module stops choosing a node whose
                // ping is not answered with pong: a draining one.
                "ping" if self.state.draining.load(std::sync::atomic::Ordering::Relaxed) => {
                    return Err(Error::Draining)
                }
                "ping" => reply.items = vec![("result", Value::str("pong"))],
                "offer" | "answer" | "delete" | "query" => {
                    match commands::execute(self.state, self.call_command(command, d, &mut reply.warnings)?).await? {
                        Outcome::Sdp(sdp) => {
                            reply.items.push(("sdp", Value::str(&sdp)));
                            super::ng_streams::record_call(self.state, call_id, d, &mut reply.warnings).await?;
                        }
                        Outcome::Call(snap) => reply.items.extend(ng_reply::call_items(&snap)),
                    }
                }
                "list" => {
                    let limit = match d.get("limit") {
                        Some(Value::Int(n)) if *n > 0 => *n as usize,
                        Some(Value::Bytes(b)) => std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()).unwrap_or(32),
                        _ => 32,
                    };
                    let ids = calls::list_ids(self.state, 0, limit);
                    reply
                        .items
                        .push(("calls", Value::List(ids.iter().map(|i| Value::str(i)).collect())));
                }
                "statistics" => reply.items.push(("statistics", ng_reply::statistics(self.state))),
                "start stream" | "stop stream" | "start recording" | "pause recording" | "stop recording"
                | "play DTMF" | "play media" | "stop media" => reply
                    .items
                    .extend(super::ng_streams::execute(self.state, command, d).await?),
                _ => unreachable!("filtered above"),
            }
            Ok(reply)
        })
        .await
    }

    /// The call command an ng message asks for (`command` is one of offer,
    /// answer, delete, query).
    fn call_command<'d>(
        &self,
        command: &str,
        d: &'d Value,
        warnings: &mut Vec<String>,
    ) -> Result<CallCommand<'d>, Error> {
        let call_id = required(d, "call-id")?;
        Ok(match command {
            "offer" => CallCommand::Offer {
                call_id,
                from_tag: required(d, "from-tag")?,
                sdp: required(d, "sdp")?,
                options: ng_options::options(self.state, d, warnings)?,
            },
            "answer" => CallCommand::Answer {
                call_id,
                from_tag: required(d, "from-tag")?,
                to_tag: required(d, "to-tag")?,
                sdp: required(d, "sdp")?,
                options: ng_options::options(self.state, d, warnings)?,
            },
            "delete" => CallCommand::Delete {
                call_id,
                from_tag: str_of(d, "from-tag")?,
            },
            _ => CallCommand::Query { call_id },
        })
    }
}
/// ng commands running at once over UDP at most; past this, datagrams are
/// dropped (and counted) until some finish: a flood costs a bounded queue.
pub const NG_IN_FLIGHT: usize = 1024;

/// Serves ng over UDP until the socket fails. Each message runs in its own
/// task, so a slow command never holds up others (the proxy waits 1 s).
pub async fn serve_udp(state: Arc<State>, socket: tokio::net::UdpSocket) {
    let socket = Arc::new(socket);
    let slots = Arc::new(tokio::sync::Semaphore::new(NG_IN_FLIGHT));
    // Largest UDP datagram: an ng offer with a big SDP still fits.
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "ng socket receive failed");
                continue;
            }
        };
        let message = &buf[..n];
        if let Err(e) = state.admit(peer.ip()) {
            // Answer with the reason (no bigger than the request, so no
            // amplification), without decoding the message.
            if let Some(space) = message.iter().position(|&b| b == b' ') {
                let mut reply = message[..=space].to_vec();
                dict([
                    ("result", Value::str("error")),
                    ("error-reason", Value::str(&e.to_string())),
                ])
                .encode(&mut reply);
                if reply.len() <= n {
                    let _ = socket.send_to(&reply, peer).await;
                }
            }
            continue;
        }
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            state.metrics.limited.with_label_values(&["ng_in_flight"]).inc();
            continue;
        };
        let message = message.to_vec();
        let (state, socket) = (state.clone(), socket.clone());
        tokio::spawn(async move {
            if let Some(reply) = (Ng {
                state: &state,
                forwarded: false,
            })
            .handle(&message, Source::Udp(peer))
            .await
            {
                if let Err(e) = socket.send_to(&reply, peer).await {
                    tracing::warn!(%peer, error = %e, "ng reply not sent");
                }
            }
            drop(permit);
        });
    }
}
