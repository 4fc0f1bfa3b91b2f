//! A relayed call's packet, from the socket it came in on to the one it
//! leaves from: opened (SRTP, which stream of a bundle), judged by the
//! relay, heard by key-press detection and taps; then transcoded or mixed
//! with what taps add back, sealed, and sent (on the ring when there is
//! one). No allocation, no lock.

use super::stream::{count_drop, stream_pair};
use super::{bundle, hearing, inject, io, taps, Runner, WorkerEvent, BUF_BYTES};
use crate::media::relay::{DropReason, Forward, PacketKind};
use crate::metrics::WorkerCounters;
use std::net::SocketAddr;
use std::time::Instant;

impl Runner {
    /// A packet on one side of a relayed call: the relay decision, then the send.
    #[allow(clippy::too_many_arguments)] // the packet and where it came from
    pub(super) fn call_packet(
        &mut self,
        now: Instant,
        call: usize,
        stream: usize,
        side: usize,
        rtcp: bool,
        n: usize,
        from: SocketAddr,
    ) {
        if let Some((si, n, fwd)) = self.call_receive(now, call, (stream, side), rtcp, n, from) {
            self.call_send(now, call, (si, side), rtcp, n, fwd);
        }
    }

    /// Opens and judges a packet that came in on `side` of `stream`; key
    /// presses and taps hear it on the way. Returns the stream it belongs
    /// to (a bundle's may be another), its length in the clear and the
    /// relay's decision, or `None` once it is dropped (and counted).
    fn call_receive(
        &mut self,
        now: Instant,
        ci: usize,
        (stream, side): (usize, usize),
        rtcp: bool,
        n: usize,
        from: SocketAddr,
    ) -> Option<(usize, usize, Forward)> {
        let c = &*self.counters;
        let call = self.calls.get_mut(ci)?;
        #[cfg(feature = "test-hooks")]
        if self.armed_panics.contains(&call.key) {
            panic!("test hook: injected panic");
        }
        let ws = call.streams.get_mut(stream)?;
        let n = match ws.open(side, &mut self.buf, n, rtcp) {
            Ok(plain) => plain,
            Err(reason) => {
                count_drop(ws, side, reason, c);
                return None;
            }
        };
        // On a bundled transport: which stream it is, and where the browser is.
        let si = bundle::demux(&call.streams, stream, side, &self.buf[..n]);
        bundle::sync_latch(&mut call.streams, si);
        let ws = &mut call.streams[si];
        let fwd = match ws.relay.handle_packet(now, side, from, &self.buf[..n], rtcp) {
            Ok(f) => f,
            Err(reason) => {
                WorkerCounters::add(&c.drops[reason as usize], 1);
                return None;
            }
        };
        call.last_activity = now;
        if fwd.kind == PacketKind::Rtp {
            let dtmf = ws.relay.sides[side].dtmf_end(now, &self.buf[..n]);
            if let Some((digit, duration_ms)) = dtmf {
                self.events.send(WorkerEvent::Dtmf {
                    key: call.key,
                    call_id: call.call_id.clone(),
                    leg: side,
                    digit,
                    duration_ms,
                });
            }
            if !call.taps.is_empty() {
                let taps = (&mut call.taps, &mut call.hearings);
                taps::feed(taps, now, (si, side), &self.buf[..n], dtmf.map(|d| d.0));
            }
        }
        Some((si, n, fwd))
    }

    /// Sends a judged packet of stream `si`, which came in on `side`, from
    /// the other side's socket: transcoded, or with what taps add mixed in
    /// and a key press injected, sealed for the other side's transport.
    fn call_send(&mut self, now: Instant, ci: usize, (si, side): (usize, usize), rtcp: bool, n: usize, fwd: Forward) {
        let c = &*self.counters;
        let Some(call) = self.calls.get_mut(ci) else {
            return;
        };
        // Towards a bundled side the owner's socket and keys carry it.
        let tx = call.streams[si].bundle[1 - side].map_or(si, |b| b.owner);
        let out = call.streams.get(tx).map_or(&[None, None], |t| &t.sock[1 - side]);
        // A side that multiplexes has no RTCP socket: RTCP leaves from RTP.
        let tx_slot = if fwd.from_rtcp_socket {
            out[1].or(out[0])
        } else {
            out[0]
        };
        let tx_sock = tx_slot.and_then(|t| Some((t, self.sockets.get(t)?)));
        let sock = tx_sock.map(|(_, t)| &t.socket);
        let (ws, tx_stream) = stream_pair(&mut call.streams, si, tx);
        if fwd.kind == PacketKind::Rtp && ws.transcode[side].is_some() {
            if let Some(sock) = sock {
                hearing::relayed(&mut call.hearings, (si, 1 - side), now);
                let taps = &mut call.taps;
                let add = &mut |rate, pcm: &mut [f32]| hearing::add_back(taps, si, 1 - side, rate, pcm);
                ws.transcode_out(side, tx_stream, &self.buf[..n], (sock, fwd.to), c, add);
            }
            return;
        }
        let n = match fwd.kind {
            PacketKind::Rtp if !call.taps.is_empty() => {
                let at = (si, 1 - side);
                let taps = (&mut call.taps[..], &mut call.hearings[..]);
                hearing::mix_into(taps, at, now, &mut self.buf[..BUF_BYTES], n)
            }
            _ => n,
        };
        let event = match (&mut ws.dtmf_out[1 - side], fwd.kind) {
            (Some(d), PacketKind::Rtp) => inject::shift_and_next(d, &mut self.buf[..n]),
            _ => None,
        };
        let sealer = tx_stream.unwrap_or(ws);
        let n = match sealer.seal(1 - side, &mut self.buf, n, fwd.kind == PacketKind::Rtcp) {
            Ok(sealed) => sealed,
            Err(reason) => return count_drop(&mut call.streams[si], side, reason, c),
        };
        // On the ring unless a key press follows it (which goes out now:
        // the two must not swap).
        let ring = self.ring.as_mut().filter(|_| event.is_none());
        // A ring send's failure comes back with the socket's slot and
        // generation (none matches a socket off the ring).
        let from = tx_sock.map(|(t, s)| (&s.socket, (t, s.ring.unwrap_or(u32::MAX))));
        let sent = from.map(|f| io::send(ring, f, &self.buf[..n], fwd.to));
        if let (Some(ev), Some(s)) = (event, sock) {
            inject::send(sealer, 1 - side, ev, s, fwd.to);
        }
        let reason = match sent {
            Some(Ok(queued)) => {
                // A queued send is counted when it completes.
                if !queued {
                    WorkerCounters::add(&c.packets_relayed, 1);
                    WorkerCounters::add(&c.bytes_relayed, n as u64);
                }
                if fwd.kind == PacketKind::Rtp && !rtcp && !fwd.from_rtcp_socket {
                    self.offer_to_kernel(now, ci, si, side, fwd.to);
                }
                return;
            }
            Some(Err(_)) => DropReason::SendFailed,
            None => DropReason::NoDestination,
        };
        count_drop(&mut call.streams[si], side, reason, c);
    }
}
