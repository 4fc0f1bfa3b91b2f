//! The worker loop's io_uring turn (`--io uring`, `worker::uring`): one
//! `io_uring_enter` submits the turn's sends and waits; completions are
//! datagrams (handled as `service` would), finished sends, and the
//! worker's epoll becoming readable (commands, conference sockets).

use super::stream::count_drop;
use super::{Owner, Runner, Sock};
use crate::media::relay::DropReason;
use crate::metrics::WorkerCounters;
use crate::worker::uring::{Done, Uring};
use crate::worker::WorkerConfig;
use mio::{Events, Poll};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// The worker's ring, when the configuration asks for one and the kernel
/// gives it; otherwise epoll, said once per worker.
pub(super) fn ring_for(config: &WorkerConfig, poll: &Poll) -> Option<Uring> {
    if !config.io_uring {
        return None;
    }
    match Uring::new(poll.as_raw_fd()) {
        Ok(r) => {
            if config.index == 0 {
                tracing::info!("media workers read and send call sockets with io_uring");
            }
            Some(r)
        }
        Err(error) => {
            tracing::warn!(worker = config.index, %error, "io_uring unavailable: this worker uses epoll");
            None
        }
    }
}

/// Sends `bytes` to `to` from `socket`: queued on the ring when there is
/// one with room (true), else at once with `sendto` (false).
pub(super) fn send(
    ring: Option<&mut Uring>,
    (socket, from): (&mio::net::UdpSocket, (usize, u32)),
    bytes: &[u8],
    to: SocketAddr,
) -> std::io::Result<bool> {
    if let Some(r) = ring {
        if r.send(socket.as_raw_fd(), bytes, to, from) {
            return Ok(true);
        }
    }
    socket.send_to(bytes, to).map(|_| false)
}

impl Runner {
    /// One turn: submit, wait up to `timeout`, handle every completion.
    /// False once the worker is told to stop.
    pub(super) fn ring_turn(&mut self, events: &mut Events, timeout: Duration) -> bool {
        let Some(ring) = &mut self.ring else { return true };
        if let Err(e) = ring.submit_and_wait(timeout) {
            tracing::error!(error = %e, "media worker io_uring wait failed");
        }
        let mut epoll = false;
        while let Some(done) = self.ring.as_mut().and_then(|r| r.next(&mut self.buf)) {
            match done {
                Done::Packet { slot, gen, n, from } => {
                    if self.on_ring(slot, gen) || self.left_ring(slot, gen) {
                        self.relay_one(slot, n, from);
                    }
                }
                Done::Bad { slot, gen, truncated } => {
                    let here = self.on_ring(slot, gen);
                    if here || self.left_ring(slot, gen) {
                        WorkerCounters::add(&self.counters.drops[DropReason::Malformed as usize], 1);
                    }
                    if let Some(from) = truncated.filter(|f| here && self.would_accept(slot, *f)) {
                        self.off_the_ring(slot, gen, from);
                    }
                }
                Done::Ended { slot, gen, error } => self.rearm(slot, gen, error),
                Done::Sent { result: Ok(n), .. } => {
                    WorkerCounters::add(&self.counters.packets_relayed, 1);
                    WorkerCounters::add(&self.counters.bytes_relayed, n as u64);
                }
                Done::Sent {
                    slot,
                    gen,
                    result: Err(_),
                } => self.send_failed(slot, gen),
                Done::Epoll => epoll = true,
                Done::Cancelled => {}
            }
        }
        if !epoll {
            return true;
        }
        // The ring's poll fires when epoll gets new events; a full batch
        // may leave some behind, which would wait for the next new one.
        loop {
            if !self.epoll_turn(events, Some(Duration::ZERO)) {
                return false;
            }
            if events.iter().count() < events.capacity() {
                return true;
            }
        }
    }

    /// Whether a datagram from `from` on socket `slot` could be relayed:
    /// only the peer a call side would accept may move its socket off the
    /// ring, not anyone who sprays long datagrams at relay ports.
    fn would_accept(&self, slot: usize, from: SocketAddr) -> bool {
        let Some(s) = self.sockets.get(slot) else { return false };
        let Owner::Call { call, stream, side } = s.owner else {
            return true;
        };
        let ws = self.calls.get(call).and_then(|c| c.streams.get(stream));
        ws.is_some_and(|ws| ws.relay.sides[side].would_accept(from, s.rtcp))
    }

    /// A socket whose peer sends datagrams longer than the ring's buffers
    /// goes on epoll, which reads up to 64 KiB: the first is lost (the
    /// kernel truncated it), the rest of the stream is relayed whole.
    fn off_the_ring(&mut self, slot: usize, gen: u32, from: SocketAddr) {
        let (Some(ring), Some(s)) = (&mut self.ring, self.sockets.get_mut(slot)) else {
            return;
        };
        ring.cancel(slot, gen);
        s.left_ring = s.ring.take();
        let registered = self
            .poll
            .registry()
            .register(&mut s.socket, mio::Token(slot), mio::Interest::READABLE);
        match registered {
            Ok(()) => tracing::info!(
                local = %s.local,
                %from,
                "a datagram longer than io_uring's {} bytes: this socket is read with epoll now",
                crate::worker::uring::BUF
            ),
            Err(error) => tracing::error!(local = %s.local, %error, "a socket leaving io_uring cannot go on epoll"),
        }
        // Edge-triggered: what already waits would not be reported.
        self.queue(slot);
    }

    /// A queued send failed: a drop of the call side whose packet it was
    /// (the other side of the sending socket's stream), as a direct send's
    /// failure is, when that socket is still there.
    fn send_failed(&mut self, slot: usize, gen: u32) {
        let reason = DropReason::SendFailed;
        if let Some(&Owner::Call { call, stream, side }) = self.on_ring(slot, gen).then(|| &self.sockets[slot].owner) {
            if let Some(ws) = self.calls.get_mut(call).and_then(|c| c.streams.get_mut(stream)) {
                return count_drop(ws, 1 - side, reason, &self.counters);
            }
        }
        WorkerCounters::add(&self.counters.drops[reason as usize], 1);
    }

    /// Whether a completion for (`slot`, `gen`) is for the socket there now.
    fn on_ring(&self, slot: usize, gen: u32) -> bool {
        self.sockets.get(slot).is_some_and(|s| s.ring == Some(gen))
    }

    /// Whether a datagram completed for (`slot`, `gen`) was received by the
    /// ring for the socket there now before it moved to epoll: relayed, as
    /// it came before anything epoll reads (the batch runs first).
    fn left_ring(&self, slot: usize, gen: u32) -> bool {
        self.sockets.get(slot).is_some_and(|s| s.left_ring == Some(gen))
    }

    /// A socket's multishot receive ended: again, unless the socket is gone
    /// or the kernel refuses it for good.
    fn rearm(&mut self, slot: usize, gen: u32, error: Option<i32>) {
        if !self.on_ring(slot, gen) {
            return;
        }
        // Out of buffers (they are back by now) or a plain end: go on.
        let fatal = error.filter(|e| *e != libc::ENOBUFS);
        let fd = self.sockets[slot].socket.as_raw_fd();
        let rearmed = match (fatal, &mut self.ring) {
            (None, Some(r)) => r.arm(fd, slot, gen).map_err(|e| e.to_string()),
            (Some(e), _) => Err(std::io::Error::from_raw_os_error(e).to_string()),
            (None, None) => Ok(()),
        };
        if let Err(error) = rearmed {
            let local = self.sockets[slot].local;
            tracing::error!(%local, %error, "io_uring stopped reading a socket");
        }
    }

    /// Before a socket read by the ring closes or moves: stop its receive
    /// (queued; [`flush_ring`](Self::flush_ring) before the port is reused).
    pub(super) fn unwatch_ring(&mut self, slot: usize, s: &Sock) {
        if let (Some(gen), Some(r)) = (s.ring, &mut self.ring) {
            r.cancel(slot, gen);
        }
    }

    /// Makes the queued cancels so: the sockets closed since are closed in
    /// the kernel too, so their ports may be bound again (before a reply
    /// or event lets the control plane hand them out).
    pub(super) fn flush_ring(&mut self) {
        if let Some(r) = &mut self.ring {
            r.flush();
        }
    }
}
