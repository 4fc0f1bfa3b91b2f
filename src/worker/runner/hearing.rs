//! What applications say to a call leg (bidirectional streams, playbacks):
//! mixed under the packets relayed to the leg (`media::overlay`), or, when
//! nothing is relayed to it (on hold), sent as a stream of chorus's own
//! (`media::fill`) on a 20 ms timer that runs only while such a tap lasts.

use super::taps::LegTap;
use super::{Runner, WCall, WStream, BUF_BYTES};
use crate::media::fill::Filler;
use crate::media::overlay::Overlay;
use crate::wire::rtp::RtpView;
use std::time::{Duration, Instant};

/// How often the worker looks at quiet legs when no frame is due sooner.
const IDLE: Duration = Duration::from_millis(20);

/// One leg that applications speak to.
pub(super) struct Hearing {
    stream: usize,
    leg: usize,
    /// One per payload type relayed to the leg, made by its first packet
    /// and kept: a sender switching codecs back and forth (or crafting
    /// packets to) builds each codec's decoder and encoder once, not per
    /// packet. At most one per codec the SDP names.
    overlays: Vec<Overlay>,
    /// In the leg's first codec; none if it cannot be made.
    filler: Option<Filler>,
}

/// A bidirectional tap on leg `leg` of `stream` began (its codecs are the
/// leg's first): the leg is heard from now on.
pub(super) fn open(call: &mut WCall, (stream, leg): (usize, usize), seed: u64) {
    if call.hearings.iter().any(|h| (h.stream, h.leg) == (stream, leg)) {
        return;
    }
    let codec = call.taps.last().and_then(|t| t.codecs.first());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let ssrc = (seed as u32).wrapping_mul(0x9E37_79B9) ^ (call.key as u32).rotate_left(13) ^ nanos;
    call.hearings.push(Hearing {
        stream,
        leg,
        overlays: Vec::new(),
        filler: codec.and_then(|c| Filler::new(c, ssrc).ok()),
    });
}

/// Adds the audio of applications speaking to leg `to` of `stream` into
/// `pcm` (at `rate`); how many samples the longest of them added.
pub(super) fn add_back(taps: &mut [LegTap], stream: usize, to: usize, rate: u32, pcm: &mut [f32]) -> usize {
    taps.iter_mut()
        .filter(|t| t.hears(stream, to))
        .map(|t| t.add_back(rate, pcm))
        .max()
        .unwrap_or(0)
}

/// A packet is being relayed to leg `to` of `stream` (chorus's own stream
/// for it stops).
pub(super) fn relayed(hearings: &mut [Hearing], (stream, to): (usize, usize), now: Instant) {
    for h in hearings.iter_mut().filter(|h| (h.stream, h.leg) == (stream, to)) {
        if let Some(f) = &mut h.filler {
            f.relayed(now);
        }
    }
}

/// Mixes applications' audio into the RTP packet `buf[..n]` about to be
/// relayed to leg `to` of `stream`, in its codec; the packet's new length.
pub(super) fn mix_into(
    (taps, hearings): (&mut [LegTap], &mut [Hearing]),
    (stream, to): (usize, usize),
    now: Instant,
    buf: &mut [u8],
    n: usize,
) -> usize {
    let Some(h) = hearings.iter_mut().find(|h| (h.stream, h.leg) == (stream, to)) else {
        return n;
    };
    if let Some(f) = &mut h.filler {
        f.relayed(now);
    }
    let Some(pt) = buf
        .get(..n)
        .and_then(|b| RtpView::parse(b).ok())
        .map(|v| v.payload_type())
    else {
        return n;
    };
    let i = match h.overlays.iter().position(|o| o.pt() == pt) {
        Some(i) => i,
        None => {
            // The codec's first packet; telephone-event and comfort noise
            // have no codec here and pass as they are.
            let codec = taps
                .iter()
                .find(|t| t.hears(stream, to))
                .and_then(|t| t.codecs.iter().find(|c| c.pt == pt));
            let Some(o) = codec.and_then(|c| Overlay::new(c).ok()) else {
                return n;
            };
            h.overlays.push(o);
            h.overlays.len() - 1
        }
    };
    h.overlays[i].apply(buf, n, &mut |rate, pcm| add_back(taps, stream, to, rate, pcm))
}

/// Legs no application speaks to any more are let go.
pub(super) fn prune(taps: &[LegTap], hearings: &mut Vec<Hearing>) {
    hearings.retain(|h| taps.iter().any(|t| t.hears(h.stream, h.leg)));
}

impl Runner {
    /// Frames of chorus's own to the quiet legs applications speak to, and
    /// when to look again (none: no leg is spoken to). A call whose frame
    /// panics ends; the others go on.
    pub(super) fn fill_calls(&mut self, now: Instant) {
        let mut wake: Option<Instant> = None;
        let mut failed = Vec::new();
        for (ci, call) in self.calls.iter_mut().filter(|(_, c)| !c.hearings.is_empty()) {
            match super::guarded(|| fill_call(call, now, &self.sockets, &mut self.buf)) {
                Ok(at) => wake = [wake, at].into_iter().flatten().min(),
                Err(panic) => failed.push((ci, panic)),
            }
        }
        self.fill_at = wake;
        for (ci, panic) in failed {
            crate::metrics::WorkerCounters::add(&self.counters.panics, 1);
            self.fail_call(ci, &panic);
        }
    }
}

/// One call's quiet legs: their frames due; when the next is.
fn fill_call(call: &mut WCall, now: Instant, sockets: &slab::Slab<super::Sock>, buf: &mut [u8]) -> Option<Instant> {
    let mut wake: Option<Instant> = None;
    for h in call.hearings.iter_mut() {
        let (stream, leg) = (h.stream, h.leg);
        let Some(f) = &mut h.filler else { continue };
        if f.due(now) {
            let taps = &mut call.taps;
            let add = &mut |rate, pcm: &mut [f32]| add_back(taps, stream, leg, rate, pcm);
            if let Some(n) = f.packet(now, &mut buf[..BUF_BYTES], add) {
                send_own(&mut call.streams, (stream, leg), sockets, buf, n);
            }
        }
        let at = f.due_at(now);
        let at = if at > now { at } else { now + IDLE };
        wake = Some(wake.map_or(at, |w| w.min(at)));
    }
    wake
}

/// Seals chorus's own packet for leg `leg` as the stream's are (on the
/// transport it rides) and sends it where the leg's RTP goes.
fn send_own(
    streams: &mut [WStream],
    (stream, leg): (usize, usize),
    sockets: &slab::Slab<super::Sock>,
    buf: &mut [u8],
    n: usize,
) {
    let Some(ws) = streams.get(stream) else { return };
    let Some(to) = ws.relay.sides[leg].rtp_destination() else {
        return;
    };
    let tx = ws.bundle[leg].map_or(stream, |b| b.owner);
    let Some(t) = streams.get_mut(tx) else { return };
    let Some(sock) = t.sock[leg][0].and_then(|s| sockets.get(s)) else {
        return;
    };
    // Not counted as relayed: nobody sent it.
    if let Ok(n) = t.seal(leg, buf, n, false) {
        let _ = sock.socket.send_to(&buf[..n], to);
    }
}
