//! A browser's side of a call in the worker: its STUN checks answered
//! (ICE-lite), its DTLS records exchanged, and the SRTP keys installed when
//! the handshake completes. Media then takes the ordinary SRTP path.

use super::{Runner, WStream};
use crate::media::dtls::{Dtls, Identity};
use crate::media::ice::IceLite;
use crate::media::relay::DropReason;
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
            let ice = IceLite::new(&s.ufrag, &s.pwd, s.remote_ufrag.as_deref()).map_err(WorkerError::Srtp)?;
            let dtls = Dtls::server(identity, s.remote_fingerprint.clone()).map_err(WorkerError::Srtp)?;
            *cur = Some(Box::new(WebRtc {
                spec: s.clone(),
                ice,
                dtls,
            }));
            ws.srtp[side] = None;
            Ok(true)
        }
    }
}

/// A browser that stopped checking has withdrawn consent (RFC 7675): no
/// more media goes to it until a check proves its address again.
pub(super) fn check_consent(ws: &mut WStream, now: Instant, call_id: &str) {
    for side in 0..2 {
        let Some(w) = ws.webrtc[side].as_ref() else { continue };
        let relay = &mut ws.relay.sides[side];
        if relay.latched().is_some() && w.ice.consent_expired(now) {
            tracing::info!(call = %call_id, side, "browser consent expired: media to it stops");
            relay.set_latched(None);
        }
    }
}

/// RFC 7983's demultiplexing by the first byte.
fn is_stun_or_dtls(first: u8) -> bool {
    first < 4 || (20..64).contains(&first)
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
        let Some(wcall) = self.calls.get_mut(call) else {
            return false;
        };
        let call_id = &wcall.call_id;
        let Some(ws) = wcall.streams.get_mut(stream) else {
            return false;
        };
        let (Some(w), Some(&first)) = (ws.webrtc[side].as_mut(), self.buf.first()) else {
            return false;
        };
        if !is_stun_or_dtls(first) {
            return false;
        }
        let packet = &self.buf[..n];
        let drop = |ws: &mut WStream, reason: DropReason| {
            ws.relay.sides[side].count_drop(reason);
            WorkerCounters::add(&self.counters.drops[reason as usize], 1);
        };
        let reply_from = self.sockets.get(slot).map(|s| &s.socket);
        if first < 4 {
            let mut resp = [0u8; MAX_RESPONSE];
            match w.ice.on_stun(now, from, packet, &mut resp) {
                Ok(checked) => {
                    let relay = &mut ws.relay.sides[side];
                    // The check proved the address: media goes where the browser nominates.
                    if checked.nominated || relay.latched().is_none() {
                        relay.set_latched(Some(from));
                    }
                    if let Some(s) = reply_from {
                        let _ = s.send_to(&resp[..checked.len], from);
                    }
                }
                Err(_) => drop(ws, DropReason::UnknownSource),
            }
            return true;
        }
        if !w.ice.is_validated(from) {
            drop(ws, DropReason::UnknownSource);
            return true;
        }
        let mut out = Vec::new();
        match w.dtls.on_datagram(packet, &mut out) {
            Ok(Some((theirs, ours))) => match SrtpSide::new(&theirs, &ours) {
                Ok(s) => {
                    tracing::info!(call = %call_id, stream, side, suite = theirs.suite.name(), "DTLS-SRTP established");
                    ws.srtp[side] = Some(Box::new(s));
                }
                Err(e) => tracing::warn!(call = %call_id, error = %e, "DTLS keys refused by libsrtp"),
            },
            Ok(None) => {}
            Err(e) => {
                drop(ws, DropReason::Srtp);
                tracing::warn!(call = %call_id, stream, side, error = %e, "DTLS");
            }
        }
        if let Some(s) = reply_from {
            for d in out {
                let _ = s.send_to(&d, from);
            }
        }
        true
    }
}
