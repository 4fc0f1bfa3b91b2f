//! A browser's side of a call in the worker: its STUN checks answered
//! (ICE-lite), its DTLS records exchanged, and the SRTP keys installed when
//! the handshake completes. Media then takes the ordinary SRTP path.

use super::{Runner, WStream};
use crate::media::dtls::{Dtls, Identity};
use crate::media::ice::IceLite;
use crate::media::relay::{DropReason, Side};
use crate::media::srtp::SrtpSide;
use crate::metrics::WorkerCounters;
use crate::wire::stun::MAX_RESPONSE;
use crate::worker::{WebRtcSpec, WorkerError};
use std::net::SocketAddr;
use std::time::Instant;

pub(super) struct WebRtc {
    spec: WebRtcSpec,
    ice: IceLite,
    dtls: Dtls,
}

impl WebRtc {
    pub(super) fn new(spec: &WebRtcSpec, identity: &Identity) -> Result<WebRtc, WorkerError> {
        Ok(WebRtc {
            spec: spec.clone(),
            ice: IceLite::new(&spec.ufrag, &spec.pwd, spec.remote_ufrag.as_deref()).map_err(WorkerError::Srtp)?,
            dtls: Dtls::new(identity, spec.remote_fingerprint.clone(), spec.role).map_err(WorkerError::Srtp)?,
        })
    }
}

/// Brings one side's WebRTC stage to `spec`. Returns true when it was
/// (re)built: new credentials or certificate, so its SRTP keys are void.
pub(super) fn set_webrtc(
    ws: &mut WStream,
    side: usize,
    spec: Option<&WebRtcSpec>,
    identity: &Identity,
) -> Result<bool, WorkerError> {
    let cur = &mut ws.webrtc[side];
    match spec {
        None => {
            let had = cur.take().is_some();
            Ok(had)
        }
        Some(s) if cur.as_ref().is_some_and(|w| w.spec == *s) => Ok(false),
        Some(s) => {
            *cur = Some(Box::new(WebRtc::new(s, identity)?));
            ws.srtp[side] = None;
            Ok(true)
        }
    }
}

/// A browser that stopped checking has withdrawn consent (RFC 7675): no
/// more media goes to it until a check proves its address again. As DTLS
/// client, chorus's last flight goes again while the browser is silent.
pub(super) fn check_consent(ws: &mut WStream, now: Instant, call_id: &str, sockets: &slab::Slab<super::Sock>) {
    for side in 0..2 {
        let Some(w) = ws.webrtc[side].as_deref_mut() else {
            continue;
        };
        let sock = ws.sock[side][0].and_then(|s| sockets.get(s)).map(|s| &s.socket);
        let who = format_args!("call {call_id} side {side}");
        housekeep(w, &mut ws.relay.sides[side], sock, now, &who);
    }
}

/// One browser side's timers: the DTLS client's last flight again, and
/// consent (RFC 7675).
pub(super) fn housekeep(
    w: &mut WebRtc,
    relay: &mut Side,
    sock: Option<&mio::net::UdpSocket>,
    now: Instant,
    who: &dyn std::fmt::Display,
) {
    let mut again = Vec::new();
    w.dtls.retransmit(now, &mut again);
    if let (Some(to), Some(sock)) = (relay.latched(), sock) {
        for d in again {
            let _ = sock.send_to(&d, to);
        }
    }
    if relay.latched().is_some() && w.ice.consent_expired(now) {
        tracing::info!(%who, "browser consent expired: media to it stops");
        relay.set_latched(None);
    }
}

/// RFC 7983's demultiplexing by the first byte.
fn is_stun_or_dtls(first: u8) -> bool {
    first < 4 || (20..64).contains(&first)
}

/// One browser side's parts, as a call stream or a conference member holds them.
pub(super) struct BrowserSide<'a> {
    pub webrtc: &'a mut WebRtc,
    pub relay: &'a mut Side,
    pub srtp: &'a mut Option<Box<SrtpSide>>,
}

impl BrowserSide<'_> {
    /// A STUN or DTLS datagram from `from`: answered from `reply`. Returns
    /// why it was dropped, if it was.
    pub(super) fn datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        packet: &[u8],
        reply: Option<&mio::net::UdpSocket>,
        who: &dyn std::fmt::Display,
    ) -> Option<DropReason> {
        let w = &mut *self.webrtc;
        if packet.first().is_some_and(|b| *b < 4) {
            let mut resp = [0u8; MAX_RESPONSE];
            let checked = w.ice.on_stun(now, from, packet, &mut resp).ok()?;
            // The check proved the address: media goes where the browser nominates.
            if checked.nominated || self.relay.latched().is_none() {
                self.relay.set_latched(Some(from));
            }
            if let Some(s) = reply {
                let _ = s.send_to(&resp[..checked.len], from);
                // As DTLS client, chorus starts once ICE has proved the address.
                let mut hello = Vec::new();
                if let Err(e) = w.dtls.start(now, &mut hello) {
                    tracing::warn!(%who, error = %e, "DTLS");
                }
                for d in hello {
                    let _ = s.send_to(&d, from);
                }
            }
            return None;
        }
        if !w.ice.is_validated(from) {
            return Some(DropReason::UnknownSource);
        }
        let mut out = Vec::new();
        let result = w.dtls.on_datagram(now, packet, &mut out);
        if let Some(s) = reply {
            for d in out {
                let _ = s.send_to(&d, from);
            }
        }
        match result {
            Ok(Some((theirs, ours))) => match SrtpSide::new(&theirs, &ours) {
                Ok(s) => {
                    tracing::info!(%who, suite = theirs.suite.name(), "DTLS-SRTP established");
                    *self.srtp = Some(Box::new(s));
                    None
                }
                Err(e) => {
                    tracing::warn!(%who, error = %e, "DTLS keys refused by libsrtp");
                    Some(DropReason::Srtp)
                }
            },
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(%who, error = %e, "DTLS");
                Some(DropReason::Srtp)
            }
        }
    }
}

/// Whether a datagram on a browser's port is STUN or DTLS, not media.
pub(super) fn is_handshake(packet: &[u8]) -> bool {
    packet.first().is_some_and(|b| is_stun_or_dtls(*b))
}

impl Runner {
    /// A datagram on a browser's side that is STUN or DTLS; false when it
    /// is neither (media, handled by the caller) or the side is no browser's.
    #[allow(clippy::too_many_arguments)] // the datagram and where it came from
    pub(super) fn webrtc_datagram(
        &mut self,
        now: Instant,
        call: usize,
        stream: usize,
        side: usize,
        slot: usize,
        n: usize,
        from: SocketAddr,
    ) -> bool {
        let packet = &self.buf[..n];
        if !is_handshake(packet) {
            return false;
        }
        let Some(wcall) = self.calls.get_mut(call) else {
            return false;
        };
        let Some(ws) = wcall.streams.get_mut(stream) else {
            return false;
        };
        let Some(webrtc) = ws.webrtc[side].as_deref_mut() else {
            return false;
        };
        let mut b = BrowserSide {
            webrtc,
            relay: &mut ws.relay.sides[side],
            srtp: &mut ws.srtp[side],
        };
        let reply = self.sockets.get(slot).map(|s| &s.socket);
        let who = format_args!("call {} stream {stream} side {side}", wcall.call_id);
        if let Some(reason) = b.datagram(now, from, packet, reply, &who) {
            ws.relay.sides[side].count_drop(reason);
            WorkerCounters::add(&self.counters.drops[reason as usize], 1);
        }
        true
    }
}
