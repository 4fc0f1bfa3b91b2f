//! Receives handed from one worker to another: the other half of
//! `send_pool`. A large conference's participants' sockets are read by
//! other workers ("helpers"), which copy each datagram, with its arrival
//! time, into the home worker's inbound lane; the home worker takes them
//! before each loop turn's tick and handles them as if it had read them.
//! So the receive calls and their wake-ups (half of a big conference's
//! socket work) leave the mixing worker, while the jitter buffers, the mix
//! and the encodes stay on it, with no lock between packet and mix.
//!
//! The home worker keeps its own descriptor of each socket (to send, and
//! to answer browsers' handshakes); the helper holds a duplicate, watched
//! in its epoll, until the home worker releases it (the participant left).
//! Lanes are bounded queues of fixed-size slots: no allocation per packet;
//! a full lane drops the packet and counts it (`queue_full`).

use super::send_pool::MAX_JOB;
use super::CallKey;
use crossbeam_channel::{Receiver, Sender};
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// Packets queued towards one home worker at most: 80 ms of a
/// 1,000-participant conference.
const INBOUND_SLOTS: usize = 4096;

/// One datagram read for another worker's conference.
pub struct RecvJob {
    pub at: Instant,
    pub from: SocketAddr,
    pub key: CallKey,
    pub pid: u32,
    pub rtcp: bool,
    len: u16,
    bytes: [u8; MAX_JOB],
}

impl RecvJob {
    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// Where a helper's packets go: the conference, participant and socket.
#[derive(Debug, Clone, Copy)]
pub struct Forward {
    pub home: usize,
    pub key: CallKey,
    pub pid: u32,
}

/// What a home worker tells a helper.
pub enum Handover {
    /// Watch this duplicate of a participant's socket and forward what it reads.
    Adopt {
        ticket: u64,
        socket: UdpSocket,
        to: Forward,
        rtcp: bool,
    },
    /// Close the duplicate adopted under this ticket (the participant left).
    Release(u64),
}

struct Lane {
    inbound_tx: Sender<RecvJob>,
    inbound_rx: Receiver<RecvJob>,
    /// Unbounded, but only joins and leaves travel here (the control
    /// plane's limits bound them), never packets.
    handover_tx: Sender<Handover>,
    handover_rx: Receiver<Handover>,
    waker: OnceLock<Arc<mio::Waker>>,
}

/// One lane per worker, shared by all.
pub struct RecvPool {
    lanes: Vec<Lane>,
}

impl std::fmt::Debug for RecvPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecvPool({} lanes)", self.lanes.len())
    }
}

impl RecvPool {
    pub fn new(workers: usize) -> Arc<RecvPool> {
        let lanes = (0..workers)
            .map(|_| {
                let (inbound_tx, inbound_rx) = crossbeam_channel::bounded(INBOUND_SLOTS);
                let (handover_tx, handover_rx) = crossbeam_channel::unbounded();
                Lane {
                    inbound_tx,
                    inbound_rx,
                    handover_tx,
                    handover_rx,
                    waker: OnceLock::new(),
                }
            })
            .collect();
        Arc::new(RecvPool { lanes })
    }

    /// Worker `index` is woken this way when a handover is queued for it.
    pub(super) fn register(&self, index: usize, waker: Arc<mio::Waker>) {
        if let Some(l) = self.lanes.get(index) {
            let _ = l.waker.set(waker);
        }
    }

    /// Queues `h` for worker `helper` and wakes it; false if it cannot.
    pub fn hand_over(&self, helper: usize, h: Handover) -> bool {
        let Some(l) = self.lanes.get(helper) else { return false };
        if l.handover_tx.send(h).is_err() {
            return false;
        }
        if let Some(w) = l.waker.get() {
            let _ = w.wake();
        }
        true
    }

    /// The next handover for worker `index`.
    pub(super) fn next_handover(&self, index: usize) -> Option<Handover> {
        self.lanes.get(index)?.handover_rx.try_recv().ok()
    }

    /// Queues a datagram read at `at` for its home worker; false when it
    /// cannot (too large, or the home lane is full): drop it.
    pub fn forward(&self, to: Forward, rtcp: bool, at: Instant, from: SocketAddr, bytes: &[u8]) -> bool {
        let Some(l) = self.lanes.get(to.home) else { return false };
        if bytes.len() > MAX_JOB {
            return false;
        }
        let mut job = RecvJob {
            at,
            from,
            key: to.key,
            pid: to.pid,
            rtcp,
            len: bytes.len() as u16,
            bytes: [0; MAX_JOB],
        };
        job.bytes[..bytes.len()].copy_from_slice(bytes);
        l.inbound_tx.try_send(job).is_ok()
    }

    /// The next datagram another worker read for worker `index`.
    pub(super) fn next_inbound(&self, index: usize) -> Option<RecvJob> {
        self.lanes.get(index)?.inbound_rx.try_recv().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_datagrams_arrive_in_order_and_a_full_lane_refuses() {
        let pool = RecvPool::new(2);
        let to = Forward {
            home: 1,
            key: 7,
            pid: 3,
        };
        let from: SocketAddr = "127.0.0.1:5004".parse().unwrap();
        let at = Instant::now();
        for i in 0..3u8 {
            assert!(pool.forward(to, false, at, from, &[i; 12]));
        }
        assert!(!pool.forward(to, false, at, from, &[0; MAX_JOB + 1]), "too large");
        for i in 0..3u8 {
            let job = pool.next_inbound(1).unwrap();
            assert_eq!((job.key, job.pid, job.from, job.bytes()), (7, 3, from, &[i; 12][..]));
        }
        assert!(pool.next_inbound(1).is_none());
        assert!(pool.next_inbound(0).is_none(), "nothing went to the other worker");
        for _ in 0..INBOUND_SLOTS {
            assert!(pool.forward(to, true, at, from, &[1]));
        }
        assert!(
            !pool.forward(to, true, at, from, &[1]),
            "full: the helper drops, never waits"
        );
        assert!(
            !pool.forward(Forward { home: 9, ..to }, true, at, from, &[1]),
            "no such worker"
        );
    }

    #[test]
    fn handovers_reach_their_helper_in_order() {
        let pool = RecvPool::new(2);
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = Forward {
            home: 0,
            key: 1,
            pid: 2,
        };
        let adopt = Handover::Adopt {
            ticket: 5,
            socket,
            to,
            rtcp: false,
        };
        assert!(pool.hand_over(1, adopt));
        assert!(pool.hand_over(1, Handover::Release(5)));
        assert!(!pool.hand_over(4, Handover::Release(5)), "no such worker");
        assert!(matches!(pool.next_handover(1), Some(Handover::Adopt { ticket: 5, .. })));
        assert!(matches!(pool.next_handover(1), Some(Handover::Release(5))));
        assert!(pool.next_handover(1).is_none() && pool.next_handover(0).is_none());
    }
}
