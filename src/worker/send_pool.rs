//! Sends handed from one worker to another. A large conference's tick
//! makes one packet per participant, and at 1,000 phones their `sendto`
//! calls are most of the tick: its home worker copies each packet into
//! another worker's lane instead, wakes each of those workers once per
//! tick, and they send them. So one conference uses every core, and its
//! tick is short. A lane is a bounded queue of
//! fixed-size slots: no allocation per packet; when a lane is full (its
//! worker busy or dead) the home worker sends the packet itself.
use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, OnceLock};

/// The largest packet a lane carries: an Opus frame's most (1,275 bytes),
/// its RTP header and an SRTP tag, rounded up. Larger ones are sent at home.
pub const MAX_JOB: usize = 1320;
/// Packets queued per lane at most (a tick of 2,000 participants).
const LANE_SLOTS: usize = 2048;

/// One packet to send from a participant's socket.
pub struct SendJob {
    socket: Arc<UdpSocket>,
    to: SocketAddr,
    len: u16,
    bytes: [u8; MAX_JOB],
}

struct Lane {
    tx: Sender<SendJob>,
    rx: Receiver<SendJob>,
    waker: OnceLock<Arc<mio::Waker>>,
}

/// One lane per worker, shared by all.
pub struct SendPool {
    lanes: Vec<Lane>,
}

impl std::fmt::Debug for SendPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SendPool({} lanes)", self.lanes.len())
    }
}

impl SendPool {
    pub fn new(workers: usize) -> Arc<SendPool> {
        let lanes = (0..workers)
            .map(|_| {
                let (tx, rx) = crossbeam_channel::bounded(LANE_SLOTS);
                Lane {
                    tx,
                    rx,
                    waker: OnceLock::new(),
                }
            })
            .collect();
        Arc::new(SendPool { lanes })
    }

    /// Worker `index` is woken this way when its lane has packets.
    pub(super) fn register(&self, index: usize, waker: Arc<mio::Waker>) {
        if let Some(l) = self.lanes.get(index) {
            let _ = l.waker.set(waker);
        }
    }

    /// Whether `home` has another worker to hand sends to.
    pub fn can_offload(&self) -> bool {
        self.lanes.len() > 1
    }

    /// The lane for participant `pid` of a conference at `home`: one of the
    /// other workers, always the same for a participant (its packets stay
    /// in order). Home keeps none of the socket work: measured with two
    /// workers and 1,000 phones, sharing it evenly balanced the two cores
    /// better (0.42 and 0.24 against 0.17 and 0.45) but put the home
    /// worker's sends back into its tick (p99 ≤ 15 ms against ≤ 10 ms).
    pub fn lane_for(&self, home: usize, pid: u32) -> Option<usize> {
        // The first 64 workers' lanes (a tick's wake-ups are a 64-bit set).
        let others = self.lanes.len().min(64).checked_sub(1).filter(|n| *n > 0)?;
        let i = pid as usize % others;
        Some(if i >= home { i + 1 } else { i })
    }

    /// Queues `bytes` for `lane` to send from `socket` to `to`; false when
    /// it cannot (too large, or the lane is full): send it yourself.
    pub fn offer(&self, lane: usize, socket: &Arc<UdpSocket>, to: SocketAddr, bytes: &[u8]) -> bool {
        let Some(l) = self.lanes.get(lane) else { return false };
        if bytes.len() > MAX_JOB {
            return false;
        }
        let mut job = SendJob {
            socket: socket.clone(),
            to,
            len: bytes.len() as u16,
            bytes: [0; MAX_JOB],
        };
        job.bytes[..bytes.len()].copy_from_slice(bytes);
        match l.tx.try_send(job) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }

    /// Wakes the workers of the lanes in `lanes` (bit i: lane i).
    pub fn wake(&self, lanes: u64) {
        for (i, l) in self.lanes.iter().enumerate().take(64) {
            if lanes & (1 << i) != 0 {
                if let Some(w) = l.waker.get() {
                    let _ = w.wake();
                }
            }
        }
    }

    /// Sends what lane `index` holds; the number sent.
    pub(super) fn drain(&self, index: usize) -> (u64, u64) {
        let Some(l) = self.lanes.get(index) else { return (0, 0) };
        let (mut packets, mut bytes) = (0, 0);
        while let Ok(job) = l.rx.try_recv() {
            let b = &job.bytes[..usize::from(job.len)];
            if job.socket.send_to(b, job.to).is_ok() {
                packets += 1;
                bytes += b.len() as u64;
            }
        }
        (packets, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn participants_are_spread_over_the_other_workers_and_each_stays_on_one() {
        let pool = SendPool::new(3);
        let mut per_worker = [0; 3];
        for pid in 0..30 {
            let lane = pool.lane_for(1, pid).unwrap();
            per_worker[lane] += 1;
            assert_eq!(pool.lane_for(1, pid), Some(lane));
        }
        assert_eq!(per_worker, [15, 0, 15], "never the home worker");
        assert_eq!(SendPool::new(1).lane_for(0, 7), None);
    }

    #[test]
    fn queued_packets_are_sent_in_order_and_a_full_lane_refuses() {
        let pool = SendPool::new(2);
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        for i in 0..3u8 {
            assert!(pool.offer(1, &socket, to, &[i; 20]));
        }
        assert!(!pool.offer(1, &socket, to, &[0; MAX_JOB + 1]), "too large for a slot");
        assert_eq!(pool.drain(1), (3, 60));
        let mut buf = [0u8; 64];
        for i in 0..3u8 {
            let n = rx.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[i; 20]);
        }
        let full = (0..LANE_SLOTS + 1)
            .filter(|_| pool.offer(1, &socket, to, &[1; 10]))
            .count();
        assert_eq!(full, LANE_SLOTS);
    }
}
