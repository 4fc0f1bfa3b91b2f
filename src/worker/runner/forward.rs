//! Both halves of receives read on another worker (`worker::recv_pool`):
//! the helper adopts a participant's socket and forwards what it reads;
//! the home worker takes those datagrams and handles them as its own.

use super::{guarded, Owner, Runner};
use crate::media::relay::DropReason;
use crate::metrics::WorkerCounters;
use crate::worker::recv_pool::{Forward, Handover};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Datagrams one forwarded socket may hand on per `BURST_WINDOW`. The
/// home worker's inbound lane is shared by all its forwarded
/// participants: without a share each, one flooded port would fill it and
/// silence the others. 32 in 20 ms is sixteen times a phone's rate, room
/// for 10 ms packets, RTCP and a browser's handshake flights.
const BURST_LIMIT: u16 = 32;
const BURST_WINDOW: Duration = Duration::from_millis(20);

/// What a forwarded socket handed on in its current window.
#[derive(Debug, Clone, Copy)]
pub(super) struct Burst {
    since: Option<Instant>,
    sent: u16,
}

impl Burst {
    pub(super) const NEW: Burst = Burst { since: None, sent: 0 };

    /// Whether one more datagram read at `now` may go on.
    fn admit(&mut self, now: Instant) -> bool {
        if self
            .since
            .is_none_or(|t| now.saturating_duration_since(t) >= BURST_WINDOW)
        {
            *self = Burst {
                since: Some(now),
                sent: 0,
            };
        }
        self.sent = self.sent.saturating_add(1);
        self.sent <= BURST_LIMIT
    }
}

impl Runner {
    /// Helper: the sockets home workers hand over or take back.
    pub(super) fn take_handovers(&mut self) {
        let pool = Arc::clone(&self.config.recv_pool);
        while let Some(h) = pool.next_handover(self.config.index) {
            match h {
                Handover::Adopt {
                    ticket,
                    socket,
                    to,
                    rtcp,
                } => {
                    let local = socket.local_addr();
                    let opened = local.map_err(|e| e.to_string()).and_then(|local| {
                        let s = mio::net::UdpSocket::from_std(socket);
                        self.open_socket(s, local, Owner::Forward(to, Burst::NEW), rtcp)
                            .map_err(|e| e.to_string())
                    });
                    match opened {
                        Ok(slot) => {
                            self.adopted.insert(ticket, slot);
                        }
                        // Out of descriptors or memory: this participant is not heard.
                        Err(error) => {
                            tracing::error!(%error, pid = to.pid, "cannot watch a participant's socket for its conference's worker")
                        }
                    }
                }
                Handover::Release(ticket) => {
                    if let Some(slot) = self.adopted.remove(&ticket) {
                        self.close_socket(slot);
                    }
                }
            }
        }
    }

    /// Helper: one datagram read from `slot` for another worker's conference.
    pub(super) fn forward_one(
        &mut self,
        slot: usize,
        to: Forward,
        rtcp: bool,
        at: Instant,
        n: usize,
        from: SocketAddr,
    ) {
        let c = &*self.counters;
        let admitted = match self.sockets.get_mut(slot).map(|s| &mut s.owner) {
            Some(Owner::Forward(_, burst)) => burst.admit(at),
            _ => false,
        };
        if !admitted {
            WorkerCounters::add(&c.drops[DropReason::Flood as usize], 1);
        } else if self.config.recv_pool.forward(to, rtcp, at, from, &self.buf[..n]) {
            WorkerCounters::add(&c.forwarded, 1);
        } else {
            WorkerCounters::add(&c.drops[DropReason::QueueFull as usize], 1);
        }
    }

    /// Home: what helpers read for this worker's conferences, handled as
    /// if read here, at the time it was read.
    pub(super) fn take_forwarded(&mut self) {
        let pool = Arc::clone(&self.config.recv_pool);
        while let Some(job) = pool.next_inbound(self.config.index) {
            // Gone since it was read: the participant left or the conference ended.
            let Some((ci, slot)) = self.member_slot(job.key, job.pid, job.rtcp) else {
                continue;
            };
            let bytes = job.bytes();
            let n = bytes.len();
            self.buf[..n].copy_from_slice(bytes);
            let (pid, rtcp, at, from) = (job.pid, job.rtcp, job.at, job.from);
            if let Err(panic) = guarded(|| self.member_packet(at, ci, pid, slot, rtcp, n, from)) {
                WorkerCounters::add(&self.counters.panics, 1);
                self.fail_conference(ci, &panic);
            }
        }
    }

    /// Home: hands the sockets of a newly joined participant to `helper`.
    /// The home worker keeps its own descriptors (to send, and to answer
    /// handshakes) but stops watching them; the tickets are kept to take
    /// the duplicates back when the participant leaves.
    pub(super) fn hand_over_member(
        &mut self,
        helper: usize,
        to: Forward,
        slots: [Option<usize>; 2],
    ) -> [Option<u64>; 2] {
        let mut tickets = [None, None];
        for (i, slot) in slots.into_iter().enumerate() {
            let Some(s) = slot.and_then(|slot| self.sockets.get_mut(slot)) else {
                continue;
            };
            let Ok(dup) = s.socket_dup() else { continue };
            let ticket = (self.config.index as u64) << 48 | self.next_ticket;
            self.next_ticket += 1;
            let adopt = Handover::Adopt {
                ticket,
                socket: dup,
                to,
                rtcp: i == 1,
            };
            if self.config.recv_pool.hand_over(helper, adopt) {
                let _ = self.poll.registry().deregister(&mut s.socket);
                tickets[i] = Some(ticket);
            }
        }
        tickets
    }

    /// Home: takes back what `hand_over_member` gave `helper`.
    pub(super) fn release_member(&self, helper: usize, tickets: [Option<u64>; 2]) {
        for ticket in tickets.into_iter().flatten() {
            self.config.recv_pool.hand_over(helper, Handover::Release(ticket));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forwarded_port_hands_on_its_share_per_window_and_no_more() {
        let t0 = Instant::now();
        let mut b = Burst::NEW;
        let admitted = (0..100).filter(|_| b.admit(t0)).count();
        assert_eq!(admitted, usize::from(BURST_LIMIT));
        assert!(!b.admit(t0 + Duration::from_millis(19)), "still the same window");
        assert!(b.admit(t0 + BURST_WINDOW), "a new window");
        // A phone's steady 20 ms packets, with RTCP now and then, always pass.
        let mut phone = Burst::NEW;
        assert!((0..500u64).all(|k| phone.admit(t0 + Duration::from_millis(10 * k))));
    }
}
