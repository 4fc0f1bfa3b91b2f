//! rtpengine's "ng" control protocol, so that Kamailio's and OpenSIPS's
//! `rtpengine` modules drive chorus unchanged. A message is
//! `<cookie> <bencoded dictionary>`; the reply carries the same cookie.
//! Commands translate into the same calls as the HTTP API (`calls`).

use super::calls::{self, CallSnapshot};
use super::command::{self as commands, CallCommand, Outcome};
pub use super::ng_cookie::CookieCache;
use super::ng_cookie::Lookup;
use super::{lock, State};
use crate::error::Error;
use crate::session::{MuxOption, Options};
use crate::wire::bencode::{self, dict, Value};
use crate::worker::SideReportWithPorts;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// Keys chorus reads; anything else gets a `warning`, as rtpengine does.
const KNOWN_KEYS: &[&str] = &[
    "command",
    "call-id",
    "from-tag",
    "to-tag",
    "via-branch",
    "sdp",
    "flags",
    "replace",
    "ICE",
    "rtcp-mux",
    "direction",
    "received-from",
    "media-address",
    "address-family",
    "label",
    "transport-protocol",
    "SDES",
    "DTLS",
    "codec",
    "record-call",
    "limit",
];

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
                        Outcome::Call(snap) => reply.items.extend(call_items(&snap)),
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
                "statistics" => reply.items.push(("statistics", self.statistics())),
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
                options: self.options(d, warnings)?,
            },
            "answer" => CallCommand::Answer {
                call_id,
                from_tag: required(d, "from-tag")?,
                to_tag: required(d, "to-tag")?,
                sdp: required(d, "sdp")?,
                options: self.options(d, warnings)?,
            },
            "delete" => CallCommand::Delete {
                call_id,
                from_tag: str_of(d, "from-tag")?,
            },
            _ => CallCommand::Query { call_id },
        })
    }

    /// Translates ng keys and flags into offer/answer options.
    fn options(&self, d: &Value, warnings: &mut Vec<String>) -> Result<Options, Error> {
        let mut o = Options::default();
        behaviour_options(d, &mut o, warnings)?;
        self.address_options(d, &mut o)?;
        o.label = str_of(d, "label")?.map(str::to_string);
        media_options(d, &mut o, warnings)?;
        Ok(o)
    }

    /// `direction`, `received-from`, `media-address`, `address-family`.
    fn address_options(&self, d: &Value, o: &mut Options) -> Result<(), Error> {
        let state = self.state;
        let dir = strings(d, "direction")?;
        let iface = |name: &str| {
            state
                .interface_index(name)
                .ok_or_else(|| Error::BadRequest(format!("no interface named `{name}` in direction")))
        };
        if let Some(n) = dir.first() {
            o.from_interface = Some(iface(n)?);
        }
        if let Some(n) = dir.get(1) {
            o.to_interface = Some(iface(n)?);
        }
        o.received_from = match d.get("received-from") {
            None => None,
            Some(v) => {
                let parts = list_of_strings(v, "received-from")?;
                let addr = parts
                    .last()
                    .ok_or_else(|| Error::BadRequest("empty received-from".into()))?;
                Some(
                    addr.parse()
                        .map_err(|_| Error::BadRequest(format!("received-from `{addr}` is not an IP")))?,
                )
            }
        };
        if let Some(a) = str_of(d, "media-address")? {
            let ip: IpAddr = a
                .parse()
                .map_err(|_| Error::BadRequest(format!("media-address `{a}` is not an IP")))?;
            o.media_address = Some(ip);
        }
        if let Some(family) = str_of(d, "address-family")? {
            let want_v6 = match family {
                "IP4" => false,
                "IP6" => true,
                other => {
                    return Err(Error::BadRequest(format!(
                        "address-family `{other}` is neither IP4 nor IP6"
                    )))
                }
            };
            let idx = o.to_interface.unwrap_or(0);
            if state.home.advertise[idx].is_ipv6() != want_v6 {
                return Err(Error::BadRequest(format!(
                    "address-family {family} asked, but interface `{}` is {}",
                    state.home.interfaces[idx].name,
                    if want_v6 { "IPv4" } else { "IPv6" }
                )));
            }
        }
        Ok(())
    }

    /// rtpengine's `statistics` reply, the parts chorus can fill truthfully.
    fn statistics(&self) -> Value {
        let s = self.state;
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

fn unknown_keys(d: &Value) -> Option<String> {
    let Value::Dict(items) = d else { return None };
    let unknown: Vec<String> = items
        .iter()
        .map(|(k, _)| String::from_utf8_lossy(k).to_string())
        .filter(|k| !KNOWN_KEYS.contains(&k.as_str()) && !super::ng_streams::KEYS.contains(&k.as_str()))
        .collect();
    (!unknown.is_empty()).then(|| format!("unknown keys ignored: {}", unknown.join(", ")))
}

fn str_of<'a>(d: &'a Value, key: &str) -> Result<Option<&'a str>, Error> {
    match d.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_str()
            .map(Some)
            .ok_or_else(|| Error::BadRequest(format!("`{key}` must be a UTF-8 string"))),
    }
}

/// `flags`, `replace`, `ICE` and `rtcp-mux`.
fn behaviour_options(d: &Value, o: &mut Options, warnings: &mut Vec<String>) -> Result<(), Error> {
    for flag in strings(d, "flags")? {
        match flag.to_ascii_lowercase().as_str() {
            // chorus's behaviour already: trusts SDP addresses, latches
            // symmetrically to the exact source, drops other sources.
            "trust-address" | "symmetric" | "strict-source" | "port-latching" => {}
            "sip-source-address" => o.sip_source_address = true,
            "generate-mid" => o.generate_mid = true,
            sdes if sdes.starts_with("sdes-") => sdes_option(&flag["SDES-".len()..], o, warnings)?,
            "asymmetric" => warnings.push("flag asymmetric is not supported: chorus always latches".into()),
            "loop-protect" => warnings.push("flag loop-protect is not implemented".into()),
            other => warnings.push(format!("unknown flag `{other}` ignored")),
        }
    }
    for r in strings(d, "replace")? {
        match r.as_str() {
            "origin" => o.replace_origin = true,
            "session-connection" | "session connection" => {} // always done
            other => warnings.push(format!("unknown replace `{other}` ignored")),
        }
    }
    match str_of(d, "ICE")? {
        None | Some("default") => {}
        Some("remove") => o.remove_ice = true,
        // Towards a browser chorus is an ICE-lite agent anyway.
        Some("force") if str_of(d, "transport-protocol")?.is_some_and(|p| p.starts_with("UDP/TLS/")) => {}
        Some(other) => {
            return Err(Error::NotImplemented(format!(
                "ICE={other} is not supported: chorus is an ICE-lite agent only towards WebRTC legs (transport-protocol UDP/TLS/RTP/SAVPF); elsewhere use ICE=remove"
            )))
        }
    }
    for m in strings(d, "rtcp-mux")? {
        o.rtcp_mux = Some(match m.as_str() {
            // `require`: offered, and chorus always takes it where offered.
            "offer" | "require" => MuxOption::Offer,
            "demux" => MuxOption::Demux,
            "accept" => MuxOption::Accept,
            "reject" => MuxOption::Reject,
            other => return Err(Error::BadRequest(format!("unknown rtcp-mux value `{other}`"))),
        });
    }
    Ok(())
}

/// `transport-protocol`, `codec` and `record-call`.
fn media_options(d: &Value, o: &mut Options, warnings: &mut Vec<String>) -> Result<(), Error> {
    if let Some(tp) = str_of(d, "transport-protocol")? {
        o.transport_protocol = Some(crate::session::checked_transport(tp.to_string())?);
    }
    for s in strings(d, "SDES")? {
        sdes_option(&s, o, warnings)?;
    }
    match str_of(d, "DTLS")? {
        None | Some("off" | "no" | "disable") => {}
        Some("passive") => o.dtls = Some(crate::media::dtls::Role::Server),
        Some("active") => o.dtls = Some(crate::media::dtls::Role::Client),
        Some(other) => warnings.push(format!("DTLS={other} ignored (chorus takes passive or active)")),
    }
    if let Some(codec) = d.get("codec") {
        if let Some(v) = codec.get("strip") {
            o.strip_codecs.extend(list_of_strings(v, "strip")?);
        }
        if let Some(v) = codec.get("mask") {
            o.mask_codecs.extend(list_of_strings(v, "mask")?);
        }
        for key in ["transcode", "offer"] {
            if let Some(v) = codec.get(key) {
                o.transcode.extend(list_of_strings(v, key)?);
            }
        }
        for key in ["accept", "consume"] {
            if codec.get(key).is_some() {
                return Err(Error::NotImplemented(format!(
                    "codec-{key} is not supported: chorus takes codec-offer, codec-transcode, codec-mask and codec-strip"
                )));
            }
        }
    }
    Ok(())
}

/// One SDES choice, from the `SDES` list or an `SDES-...` flag.
fn sdes_option(s: &str, o: &mut Options, warnings: &mut Vec<String>) -> Result<(), Error> {
    if let Some(name) = s.strip_prefix("no-") {
        o.sdes.no.push(crate::session::suite(name)?);
    } else if let Some(name) = s.strip_prefix("only-") {
        o.sdes.only.push(crate::session::suite(name)?);
    } else if matches!(s, "off" | "no" | "disable" | "disabled") {
        o.sdes.off = true;
    } else {
        warnings.push(format!("SDES option `{s}` ignored"));
    }
    Ok(())
}

fn required<'a>(d: &'a Value, key: &str) -> Result<&'a str, Error> {
    str_of(d, key)?.ok_or_else(|| Error::BadRequest(format!("missing `{key}`")))
}

/// A key whose value is a list of strings (or one string).
fn strings(d: &Value, key: &str) -> Result<Vec<String>, Error> {
    match d.get(key) {
        None => Ok(Vec::new()),
        Some(v) => list_of_strings(v, key),
    }
}

fn list_of_strings(v: &Value, key: &str) -> Result<Vec<String>, Error> {
    let bad = || Error::BadRequest(format!("`{key}` must be a list of strings"));
    match v {
        Value::Bytes(_) => Ok(vec![v.as_str().ok_or_else(bad)?.to_string()]),
        Value::List(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string).ok_or_else(bad))
            .collect(),
        _ => Err(bad()),
    }
}

/// rtpengine's shape of a call in `query` and `delete` replies: per tag,
/// medias and streams with `stats`, and `totals`, which Kamailio's
/// `$rtpstat` reads.
fn call_items(snap: &CallSnapshot) -> Vec<(&'static str, Value)> {
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
