//! A relayed stream's transport stages in the worker: SRTP taken off what a
//! leg sends and put on what it receives, and the transcoder between legs
//! that share no codec. In place in the worker's buffer, no allocation.
//! And how a stream is made and brought to new keys and codecs.

use super::WStream;
use crate::media::codec::CodecSpec;
use crate::media::overlay::AddAudio;
use crate::media::relay::DropReason;
use crate::media::relay::{RelayStream, Side, StreamKind};
use crate::media::srtp::{Key, SrtpSide};
use crate::media::transcode::Transcoder;
use crate::media::transcode::MAX_PACKET;
use crate::metrics::WorkerCounters;
use crate::worker::WorkerError;
use std::net::SocketAddr;

impl WStream {
    /// What leg `side` sent, made plain in `buf`: its new length. A
    /// browser's media waits for its DTLS keys, both ways: nothing in the
    /// clear goes to or comes from it.
    pub(super) fn open(&mut self, side: usize, buf: &mut [u8], n: usize, rtcp: bool) -> Result<usize, DropReason> {
        let unkeyed = |i: usize| self.webrtc[i].is_some() && self.srtp[i].is_none();
        if unkeyed(side) || unkeyed(1 - side) {
            return Err(DropReason::Srtp);
        }
        let Some(srtp) = &mut self.srtp[side] else { return Ok(n) };
        let is_rtcp = rtcp || buf.get(..n).is_some_and(crate::wire::is_rtcp);
        srtp.unprotect(buf, n, is_rtcp).map_err(|_| DropReason::Srtp)
    }

    /// A plain packet in `buf`, protected for leg `to_side`: its new length.
    pub(super) fn seal(&mut self, to_side: usize, buf: &mut [u8], n: usize, rtcp: bool) -> Result<usize, DropReason> {
        if self.webrtc[to_side].is_some() && self.srtp[to_side].is_none() {
            return Err(DropReason::Srtp);
        }
        match &mut self.srtp[to_side] {
            Some(srtp) => srtp.protect(buf, n, rtcp).map_err(|_| DropReason::Srtp),
            None => Ok(n),
        }
    }

    /// RTP from leg `side` in the other leg's codec, with applications'
    /// audio for that leg added (`add`), sealed (with `tx`'s keys when the
    /// other side rides its transport) and sent to `to`.
    pub(super) fn transcode_out(
        &mut self,
        side: usize,
        tx: Option<&mut WStream>,
        packet: &[u8],
        (sock, to): (&mio::net::UdpSocket, SocketAddr),
        c: &WorkerCounters,
        add: &mut AddAudio<'_>,
    ) {
        let sealer = match tx {
            Some(t) => (&t.webrtc[1 - side], &mut t.srtp[1 - side]),
            None => (&self.webrtc[1 - side], &mut self.srtp[1 - side]),
        };
        let (webrtc, srtp_out) = sealer;
        let Some(t) = self.transcode[side].as_deref_mut() else {
            return;
        };
        if webrtc.is_some() && srtp_out.is_none() {
            return;
        }
        let dtmf = &mut self.dtmf_out[1 - side];
        let mut seal_send = |b: &mut [u8], len: usize| {
            let len = match srtp_out.as_deref_mut().map(|s| s.protect(b, len, false)) {
                Some(Ok(l)) => l,
                Some(Err(_)) => return false,
                None => len,
            };
            sock.send_to(&b[..len], to).is_ok()
        };
        let mut buf = [0u8; MAX_PACKET];
        t.push(
            packet,
            &mut buf,
            &mut |b, len| {
                // Key presses chorus sends ride the transcoder's packets.
                let event = dtmf
                    .as_deref_mut()
                    .and_then(|d| super::inject::shift_and_next(d, &mut b[..len]));
                if seal_send(b, len) {
                    WorkerCounters::add(&c.packets_relayed, 1);
                    WorkerCounters::add(&c.bytes_relayed, len as u64);
                }
                if let Some(ev) = event {
                    let mut e = [0u8; 16 + crate::media::srtp::TRAILER];
                    e[..16].copy_from_slice(&ev);
                    seal_send(&mut e, 16);
                }
            },
            add,
        );
    }
}

/// Counts a packet from leg `side` that was not relayed.
pub(super) fn count_drop(ws: &mut WStream, side: usize, reason: DropReason, c: &WorkerCounters) {
    ws.relay.sides[side].count_drop(reason);
    WorkerCounters::add(&c.drops[reason as usize], 1);
}

impl WStream {
    pub(super) fn new(kind: StreamKind) -> Self {
        let side = || Side::new(crate::media::relay::PeerSpec::unknown(kind));
        WStream {
            relay: RelayStream {
                sides: [side(), side()],
            },
            sock: [[None; 2]; 2],
            srtp: [None, None],
            webrtc: [None, None],
            transcode: [None, None],
            dtmf_out: [None, None],
            bundle: [None, None],
            has_followers: [false, false],
            kernel: [None, None],
            kernel_refused: [None, None],
        }
    }
}

/// Streams `a` and `b` of one call, both mutable; `None` for `b` when it is `a`.
pub(super) fn stream_pair(streams: &mut [WStream], a: usize, b: usize) -> (&mut WStream, Option<&mut WStream>) {
    if a == b {
        return (&mut streams[a], None);
    }
    let (lo, hi) = streams.split_at_mut(a.max(b));
    let (x, y) = (&mut lo[a.min(b)], &mut hi[0]);
    if a < b {
        (x, Some(y))
    } else {
        (y, Some(x))
    }
}

/// Brings one side's transcoder to `codecs`, kept when they did not change.
pub(super) fn set_transcoder(
    cur: &mut Option<Box<Transcoder>>,
    codecs: Option<(CodecSpec, CodecSpec)>,
    ssrc: u32,
) -> Result<(), WorkerError> {
    match codecs {
        None => *cur = None,
        Some(c) if cur.as_ref().is_some_and(|t| t.codecs() == c) => {}
        Some((from, to)) => *cur = Some(Box::new(Transcoder::new(from, to, ssrc).map_err(WorkerError::Codec)?)),
    }
    Ok(())
}

/// Brings one side's SRTP to `keys`: kept as it is when they did not change
/// (its replay windows and rollover counters go on), rebuilt when they did.
pub(super) fn set_srtp(cur: &mut Option<Box<SrtpSide>>, keys: Option<&(Key, Key)>) -> Result<(), WorkerError> {
    match keys {
        None => *cur = None,
        Some((theirs, ours)) if cur.as_ref().is_some_and(|s| s.has_keys(theirs, ours)) => {}
        Some((theirs, ours)) => *cur = Some(Box::new(SrtpSide::new(theirs, ours).map_err(WorkerError::Srtp)?)),
    }
    Ok(())
}
