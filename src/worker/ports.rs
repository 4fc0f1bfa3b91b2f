//! UDP ports: which ones of the configured range are free, and binding them
//! with the socket options a media server needs (buffer sizes, DSCP).

use socket2::{Domain, Protocol, Socket, Type};
use std::net::{IpAddr, SocketAddr, UdpSocket};

/// The free ports of one interface. Allocation rotates through the range so
/// that a port just freed is not handed out again at once while others are
/// free (late packets of the old call would reach the new one).
#[derive(Debug)]
pub struct PortPool {
    min: u16,
    used: Vec<bool>,
    cursor: usize,
    free: usize,
}

impl PortPool {
    /// Ports `min..=max`; `min` is rounded up to even so pairs align.
    pub fn new(min: u16, max: u16) -> Self {
        let min = min + (min & 1);
        let n = (max as usize + 1).saturating_sub(min as usize);
        PortPool {
            min,
            used: vec![false; n],
            cursor: 0,
            free: n,
        }
    }

    pub fn free(&self) -> usize {
        self.free
    }

    /// An even port whose odd neighbour is free too.
    pub fn take_pair(&mut self) -> Option<u16> {
        let n = self.used.len() & !1;
        for k in 0..n / 2 {
            let i = ((self.cursor + 2 * k) % n) & !1;
            if !self.used[i] && !self.used[i + 1] {
                self.used[i] = true;
                self.used[i + 1] = true;
                self.free -= 2;
                self.cursor = (i + 2) % n;
                return Some(self.min + i as u16);
            }
        }
        None
    }

    /// Any free port; odd leftovers first, so pairs stay available.
    pub fn take_single(&mut self) -> Option<u16> {
        let n = self.used.len();
        let pick = (0..n)
            .map(|k| (self.cursor + k) % n)
            .find(|&i| !self.used[i] && i % 2 == 1 && self.used[i - 1])
            .or_else(|| (0..n).map(|k| (self.cursor + k) % n).find(|&i| !self.used[i]))?;
        self.used[pick] = true;
        self.free -= 1;
        Some(self.min + pick as u16)
    }

    /// Takes this port if it is in the range and free.
    pub fn take(&mut self, port: u16) -> bool {
        let slot = (port as usize)
            .checked_sub(self.min as usize)
            .and_then(|i| self.used.get_mut(i));
        match slot {
            Some(u) if !*u => {
                *u = true;
                self.free -= 1;
                true
            }
            _ => false,
        }
    }

    pub fn put(&mut self, port: u16) {
        if let Some(i) = (port as usize).checked_sub(self.min as usize) {
            if let Some(u) = self.used.get_mut(i) {
                if *u {
                    *u = false;
                    self.free += 1;
                }
            }
        }
    }
}

/// Socket options for media sockets.
#[derive(Debug, Clone, Copy)]
pub struct SocketOptions {
    pub recv_buffer: usize,
    pub send_buffer: usize,
    /// DSCP code point (6 bits) for outgoing packets; 46 is EF.
    pub dscp: u8,
}

/// Binds a non-blocking UDP socket on `ip:port`.
pub fn bind(ip: IpAddr, port: u16, opts: &SocketOptions) -> std::io::Result<UdpSocket> {
    let addr = SocketAddr::new(ip, port);
    // Non-blocking from the start (SOCK_NONBLOCK): one syscall fewer per
    // socket, which counts when a takeover binds thousands at once.
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::DGRAM.nonblocking(),
        Some(Protocol::UDP),
    )?;
    if ip.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if opts.recv_buffer > 0 {
        socket.set_recv_buffer_size(opts.recv_buffer)?;
    }
    if opts.send_buffer > 0 {
        socket.set_send_buffer_size(opts.send_buffer)?;
    }
    let tos = (opts.dscp as u32) << 2;
    if tos != 0 {
        match ip {
            IpAddr::V4(_) => socket.set_tos_v4(tos)?,
            IpAddr::V6(_) => socket.set_tclass_v6(tos)?,
        }
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_even_and_exhaust() {
        let mut p = PortPool::new(30001, 30005); // rounds to 30002..=30005
        let a = p.take_pair().unwrap();
        let b = p.take_pair().unwrap();
        assert_eq!(a % 2, 0);
        assert_eq!(b % 2, 0);
        assert_ne!(a, b);
        assert_eq!(p.take_pair(), None);
        assert_eq!(p.free(), 0);
        p.put(a);
        p.put(a + 1);
        assert_eq!(p.take_pair(), Some(a));
    }

    #[test]
    fn singles_prefer_odd_leftovers() {
        let mut p = PortPool::new(40000, 40005);
        let a = p.take_pair().unwrap();
        p.put(a + 1);
        assert_eq!(p.take_single(), Some(a + 1));
        assert_eq!(p.free(), 4);
    }
}
