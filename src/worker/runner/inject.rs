//! Key presses chorus sends into a relayed call (see `media::dtmf_out`):
//! queued by command, and sent one event packet after each packet relayed
//! to the leg, sealed like it.

use super::{CallKey, Runner, WStream};
use crate::media::dtmf_out::DtmfOut;
use crate::worker::WorkerError;
use mio::net::UdpSocket;
use std::net::SocketAddr;

/// The plain RTP packet about to be relayed to the leg: its sequence number
/// moved up past the events sent; the event to send after it, if any.
pub(super) fn shift_and_next(d: &mut DtmfOut, rtp: &mut [u8]) -> Option<[u8; 16]> {
    let (Some(seq), Some(ts), Some(ssrc)) = (rtp.get(2..4), rtp.get(4..8), rtp.get(8..12)) else {
        return None;
    };
    let seq = u16::from_be_bytes([seq[0], seq[1]]).wrapping_add(d.shift);
    let ts = u32::from_be_bytes([ts[0], ts[1], ts[2], ts[3]]);
    let ssrc = u32::from_be_bytes([ssrc[0], ssrc[1], ssrc[2], ssrc[3]]);
    rtp[2..4].copy_from_slice(&seq.to_be_bytes());
    let mut out = [0u8; 16];
    d.after(ssrc, seq, ts, &mut out).map(|_| out)
}

/// Seals the event for `leg` as the stream's packets are, and sends it.
pub(super) fn send(ws: &mut WStream, leg: usize, event: [u8; 16], sock: &UdpSocket, to: SocketAddr) {
    let mut b = [0u8; 16 + crate::media::srtp::TRAILER];
    b[..16].copy_from_slice(&event);
    if let Ok(n) = ws.seal(leg, &mut b, 16, false) {
        let _ = sock.send_to(&b[..n], to);
    }
}

impl Runner {
    pub(super) fn queue_dtmf(
        &mut self,
        key: CallKey,
        (stream, leg): (usize, usize),
        codes: &[u8],
        (duration_ms, volume, event): (u32, u8, (u8, u32)),
    ) -> Result<(), WorkerError> {
        let no = |what: &str| WorkerError::NoTapPoint(what.to_string());
        let ci = *self.by_key.get(&key).ok_or_else(|| no("the call has ended"))?;
        let ws = self.calls[ci]
            .streams
            .get_mut(stream)
            .filter(|_| leg < 2)
            .ok_or_else(|| no("the call has no such stream"))?;
        if ws.bundle.iter().any(Option::is_some) {
            return Err(WorkerError::Refused(
                "key presses go into plain, SRTP or transcoded streams; this one is bundled".into(),
            ));
        }
        let d = ws.dtmf_out[leg].get_or_insert_with(|| Box::new(DtmfOut::new(event.0)));
        if !d.queue(codes, duration_ms, volume, event) {
            return Err(WorkerError::Refused(format!(
                "{} key presses wait already",
                crate::media::dtmf_out::MAX_QUEUED
            )));
        }
        Ok(())
    }
}
