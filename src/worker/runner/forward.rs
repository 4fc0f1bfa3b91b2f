//! Both halves of receives read on another worker (`worker::recv_pool`):
//! the helper adopts a participant's socket and forwards what it reads;
//! the home worker takes those datagrams and handles them as its own.

use super::{guarded, Owner, Runner};
use crate::media::relay::DropReason;
use crate::metrics::WorkerCounters;
use crate::worker::recv_pool::{Forward, Handover};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

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
                        self.open_socket(s, local, Owner::Forward(to), rtcp)
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

    /// Helper: one datagram read for another worker's conference.
    pub(super) fn forward_one(&mut self, to: Forward, rtcp: bool, at: Instant, n: usize, from: SocketAddr) {
        let c = &*self.counters;
        if self.config.recv_pool.forward(to, rtcp, at, from, &self.buf[..n]) {
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
