//! What the proxy sends: SDP through the offer/answer session, ng commands
//! and HTTP requests through the real dispatch of a running control plane.

use super::Input;
use crate::config::Config;
use crate::control::{calls, conference_commands as conferences, http, ng, State};
use crate::error::Error;
use crate::sdp::Sdp;
use crate::session::{LocalPorts, MuxOption, Options, Resources, Session};
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

/// Hands out ports without sockets; runs out after a few, as a real pool can.
struct Ports(u16);

impl Resources for Ports {
    fn fingerprint(&self) -> String {
        "sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF".into()
    }

    fn key_material(&mut self, out: &mut [u8]) -> Result<(), Error> {
        // Deterministic: tests compare rewritten SDP.
        for (i, b) in out.iter_mut().enumerate() {
            *b = i as u8;
        }
        Ok(())
    }

    fn allocate(&mut self, _iface: usize, pair: bool) -> Result<LocalPorts, Error> {
        if self.0 > 40100 {
            return Err(Error::PortsExhausted("default".into()));
        }
        self.0 += 2;
        Ok(LocalPorts {
            rtp: self.0,
            rtcp: pair.then_some(self.0 + 1),
        })
    }
    fn release(&mut self, _iface: usize, _ports: LocalPorts) {}
}

/// Up to eight SDP bodies separated by NUL bytes, applied in turn as
/// offer from A, answer from B, re-offer from B, answer from A, ... with
/// options from each body's first byte. Every rewrite must parse again.
pub(super) fn sdp_session(data: &[u8]) {
    let mut session = Session::default();
    let mut ports = Ports(40000);
    let advertise: [IpAddr; 2] = [[203, 0, 113, 1].into(), "2001:db8::1".parse().expect("literal")];
    for (i, body) in data.split(|b| *b == 0).take(8).enumerate() {
        let mut input = Input(body);
        let flags = input.u8();
        let more = input.u8();
        let Ok(text) = std::str::from_utf8(input.bytes(body.len())) else {
            continue;
        };
        let Ok(sdp) = Sdp::parse(text) else { continue };
        let opts = Options {
            remove_ice: flags & 1 != 0,
            rtcp_mux: [
                None,
                Some(MuxOption::Offer),
                Some(MuxOption::Demux),
                Some(MuxOption::Reject),
            ][usize::from(flags >> 1 & 3)],
            to_interface: Some(usize::from(flags >> 3 & 1)),
            replace_origin: flags & 16 != 0,
            // SRTP, WebRTC and transcoding reach the same rewrite.
            transport_protocol: [None, Some("RTP/AVP"), Some("RTP/SAVP"), Some("UDP/TLS/RTP/SAVPF")]
                [usize::from(more & 3)]
            .map(str::to_string),
            transcode: if more & 4 != 0 {
                vec!["opus".into(), "PCMU".into()]
            } else {
                Vec::new()
            },
            mask_codecs: if more & 8 != 0 { vec!["PCMU".into()] } else { Vec::new() },
            generate_mid: more & 16 != 0,
            dtls: (more & 32 != 0).then_some(crate::media::dtls::Role::Client),
            ..Options::default()
        };
        let (me, other) = if i % 4 < 2 { ("a", "b") } else { ("b", "a") };
        let result = if i % 2 == 0 {
            session.offer(me, &sdp, &opts, &advertise, &mut ports)
        } else {
            session.answer(other, me, &sdp, &opts, &advertise, &mut ports)
        };
        if let Ok((rewritten, _)) = result {
            if let Err(e) = Sdp::parse(&rewritten) {
                panic!("chorus's rewrite does not parse ({e}):\n{rewritten}\nfrom:\n{text}");
            }
        }
    }
}

/// One control plane per process, with real workers and sockets on a port
/// range of its own (tests use 20000+40·slot; this is slot 275).
fn control_plane() -> &'static (tokio::runtime::Runtime, Arc<State>) {
    static PLANE: OnceLock<(tokio::runtime::Runtime, Arc<State>)> = OnceLock::new();
    PLANE.get_or_init(|| {
        let config = Config {
            port_min: 31000,
            port_max: 31199,
            workers: 1,
            ng_listen: None,
            ..Config::default()
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime starts");
        let started = State::start(config).expect("the control plane starts");
        // Worker events are not needed here; the receiver stays open so
        // workers never see a closed channel.
        std::mem::forget(started.events);
        (runtime, started.state)
    })
}

/// Ends every call and conference the input created, so runs do not pile up.
async fn clean(state: &State) {
    for id in calls::list_ids(state, 0, usize::MAX) {
        let _ = calls::delete(state, &id, None).await;
    }
    let page = conferences::list(state, 0, usize::MAX);
    for id in page["conferences"].as_array().into_iter().flatten() {
        if let Some(id) = id.as_str() {
            let _ = conferences::delete(state, id).await;
        }
    }
}

/// Whole ng messages (`<cookie> <bencode>`), up to four separated by NUL.
/// Every message with a cookie gets a reply that starts with it.
pub(super) fn ng(data: &[u8]) {
    let (runtime, state) = control_plane();
    runtime.block_on(async {
        let door = ng::Ng {
            state,
            forwarded: false,
        };
        for message in data.split(|b| *b == 0).take(4) {
            let reply = door.handle(message, ng::Source::Udp(([127, 0, 0, 1], 9).into())).await;
            if let (Some(reply), Some(space)) = (&reply, message.iter().position(|b| *b == b' ')) {
                assert!(reply.starts_with(&message[..=space]), "the reply carries the cookie");
            }
        }
        clean(state).await;
    });
}

/// The HTTP requests a proxy or an application sends, with arbitrary bodies:
/// one byte picks the endpoint, the rest is the body. Errors must be JSON
/// with a code, and never a 500 (that would be a bug, not bad input).
pub(super) fn http(data: &[u8]) {
    use tower::ServiceExt;
    const ENDPOINTS: &[(&str, &str)] = &[
        ("POST", "/v1/calls/c1/offer"),
        ("POST", "/v1/calls/c1/answer"),
        ("POST", "/v1/calls/c1/delete"),
        ("GET", "/v1/calls?limit=5"),
        ("POST", "/v1/conferences"),
        ("POST", "/v1/conferences/r1/participants"),
        ("PATCH", "/v1/conferences/r1/participants/1"),
        ("POST", "/ng"),
    ];
    let (runtime, state) = control_plane();
    runtime.block_on(async {
        for request in data.split(|b| *b == 0).take(6) {
            let mut input = Input(request);
            let (method, path) = ENDPOINTS[usize::from(input.u8()) % ENDPOINTS.len()];
            let body = input.bytes(request.len()).to_vec();
            let req = axum::http::Request::builder()
                .method(method)
                .uri(path)
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body))
                .expect("a fixed request builds");
            let resp = http::router(state.clone()).oneshot(req).await.expect("infallible");
            let status = resp.status().as_u16();
            assert_ne!(status, 500, "{method} {path} answered 500");
            if status >= 400 && path != "/ng" {
                let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
                    .await
                    .expect("body reads");
                let v: serde_json::Value = serde_json::from_slice(&bytes).expect("errors are JSON");
                assert!(v["error"]["code"].is_string(), "{v}");
            }
        }
        clean(state).await;
    });
}
