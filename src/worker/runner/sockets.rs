//! A worker's sockets: opening one onto epoll or the ring, reading one
//! that epoll reported, taking one off or closing it.

use super::{Owner, Runner, Sock, BUDGET_PER_SOCKET, BUF_BYTES};
use crate::worker::WorkerError;
use mio::net::UdpSocket;
use mio::{Interest, Token};
use std::io::ErrorKind;
use std::net::SocketAddr;

impl Runner {
    /// Reads up to the budget from one socket and relays what it reads.
    pub(super) fn service(&mut self, slot: usize) {
        for _ in 0..BUDGET_PER_SOCKET {
            let Some(s) = self.sockets.get(slot) else {
                return;
            };
            match s.socket.recv_from(&mut self.buf[..BUF_BYTES]) {
                Ok((n, from)) => self.relay_one(slot, n, from),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                // ICMP errors from earlier sends surface here; the socket is fine.
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "recv failed");
                    return;
                }
            }
        }
        self.queue(slot);
    }

    pub(super) fn open_socket(
        &mut self,
        mut socket: UdpSocket,
        local: SocketAddr,
        owner: Owner,
        rtcp: bool,
    ) -> Result<usize, WorkerError> {
        let entry = self.sockets.vacant_entry();
        let slot = entry.key();
        let watch_error = |e: std::io::Error| WorkerError::Watch {
            addr: local,
            error: e.to_string(),
        };
        // A call's sockets go on the ring when there is one; a conference's
        // stay on epoll (helpers read duplicates of them).
        let ring = match (&mut self.ring, owner) {
            (Some(r), Owner::Call { .. }) => {
                let gen = self.next_gen;
                self.next_gen = crate::worker::uring::next_gen(gen);
                r.arm(std::os::fd::AsRawFd::as_raw_fd(&socket), slot, gen)
                    .map_err(watch_error)?;
                Some(gen)
            }
            _ => {
                self.poll
                    .registry()
                    .register(&mut socket, Token(slot), Interest::READABLE)
                    .map_err(watch_error)?;
                None
            }
        };
        entry.insert(Sock {
            socket,
            local,
            owner,
            rtcp,
            queued: false,
            ring,
            left_ring: None,
        });
        // Packets may already wait (the socket was bound in the control
        // plane); edge-triggered polling would not report them. (A
        // multishot receive reads them as it starts.)
        if ring.is_none() {
            self.queue(slot);
        }
        Ok(slot)
    }

    pub(super) fn queue(&mut self, slot: usize) {
        if let Some(s) = self.sockets.get_mut(slot) {
            if !s.queued {
                s.queued = true;
                self.queued.push_back(slot);
            }
        }
    }

    /// Takes a socket off this worker, still open: off the ring (flush it
    /// before the socket is used elsewhere) or off epoll.
    pub(super) fn take_socket(&mut self, slot: usize) -> crate::worker::Bound {
        let mut s = self.sockets.remove(slot);
        self.unwatch_ring(slot, &s);
        if s.ring.is_none() {
            let _ = self.poll.registry().deregister(&mut s.socket);
        }
        (s.local, std::net::UdpSocket::from(s.socket))
    }

    pub(super) fn close_socket(&mut self, slot: usize) {
        let mut s = self.sockets.remove(slot);
        self.unwatch_ring(slot, &s);
        // A call's socket has no other descriptor: closing it takes it out
        // of epoll (one syscall fewer, four per call). A participant's may
        // have a duplicate with a helper worker, which would keep it in.
        if !matches!(s.owner, Owner::Call { .. }) {
            let _ = self.poll.registry().deregister(&mut s.socket);
        }
        // Dropping `s` closes the fd: the port can be bound again at once,
        // or, for a socket the ring read, once the cancel is flushed.
    }
}
