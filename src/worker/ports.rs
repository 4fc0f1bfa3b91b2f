//! UDP ports: which ones of the configured range are free, binding them
//! with the socket options a media server needs (buffer sizes, DSCP), and
//! keeping the sockets of freed ports bound for the next call.

use socket2::{Domain, Protocol, Socket, Type};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// The free ports of one interface. Allocation rotates through the range so
/// that a port just freed is not handed out again at once while others are
/// free (late packets of the old call would reach the new one).
#[derive(Debug)]
pub struct PortPool {
    min: u16,
    used: Vec<bool>,
    cursor: usize,
    free: usize,
    /// Per port of the range: its socket, kept bound since its call ended.
    parked: Vec<Option<UdpSocket>>,
}

/// Sockets parked in all pools, and how many may be: each holds a file
/// descriptor, so the limit is set at start from the process's (0: none).
static PARKED: AtomicUsize = AtomicUsize::new(0);
static PARK_LIMIT: AtomicUsize = AtomicUsize::new(0);

pub fn set_park_limit(n: usize) {
    PARK_LIMIT.store(n, Relaxed);
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
            parked: (0..n).map(|_| None).collect(),
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

impl PortPool {
    /// Keeps a freed port's socket bound for the next call that takes the
    /// port, which then skips `socket`, `setsockopt` and `bind` and the
    /// ending call's `close` (0.72–0.81x the CPU per set-up, BENCHMARKS.md).
    /// Parked, it is connected to its own address, so it takes no datagram:
    /// senders see the port closed, as it would be, and an attacker cannot
    /// fill idle sockets' buffers. Dropped (closed) when the port is not
    /// free, already parked, or the limit is reached.
    pub fn park(&mut self, local: SocketAddr, socket: UdpSocket) {
        let Some(i) = self.index(local.port()) else { return };
        if self.used[i] || self.parked[i].is_some() || PARKED.load(Relaxed) >= PARK_LIMIT.load(Relaxed) {
            return;
        }
        if seal(&socket, local).is_ok() {
            self.parked[i] = Some(socket);
            PARKED.fetch_add(1, Relaxed);
        }
    }

    /// The parked socket of a port just taken, ready for a call; `None`
    /// when there is none (or it would not open up: it is closed, so the
    /// port binds afresh).
    pub fn unpark(&mut self, port: u16) -> Option<UdpSocket> {
        let i = self.index(port)?;
        let socket = self.parked[i].take()?;
        PARKED.fetch_sub(1, Relaxed);
        unseal(&socket).ok()?;
        Some(socket)
    }

    pub fn parked(&self) -> usize {
        self.parked.iter().filter(|s| s.is_some()).count()
    }

    fn index(&self, port: u16) -> Option<usize> {
        (port as usize)
            .checked_sub(self.min as usize)
            .filter(|&i| i < self.used.len())
    }
}

impl Drop for PortPool {
    fn drop(&mut self) {
        PARKED.fetch_sub(self.parked(), Relaxed);
    }
}

/// Raises the soft limit on open files to the hard one (a 10,000-port range
/// needs 10,000 descriptors, and shells often start at 1,024). Returns it.
#[allow(unsafe_code)]
pub fn raise_open_files_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write one rlimit we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            ..lim
        };
        if lim.rlim_cur < lim.rlim_max && libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            lim = raised;
        }
    }
    lim.rlim_cur
}

/// How many sockets may be parked with `limit` descriptors and `ports` in
/// the ranges. Parked sockets sit on free ports only, so a limit that
/// covers every port (and a reserve for the rest) lets all free ports park;
/// a tighter one gives them a quarter, the rest staying for live calls.
pub fn park_limit_for(limit: u64, ports: usize) -> usize {
    const RESERVE: usize = 1024;
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    (limit / 4).max(limit.saturating_sub(ports.saturating_add(RESERVE)))
}

/// Connects a parked socket to its own address (loopback when it is bound
/// to all): only datagrams it sent itself would be accepted.
fn seal(socket: &UdpSocket, local: SocketAddr) -> std::io::Result<()> {
    let to = match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    socket.connect(SocketAddr::new(to, local.port()))
}

/// Undoes [`seal`] (connect to AF_UNSPEC keeps the bound address) and
/// drops what arrived before it, as a closed port would have.
#[allow(unsafe_code)]
fn unseal(socket: &UdpSocket) -> std::io::Result<()> {
    // SAFETY: an all-zero sockaddr_storage is a valid AF_UNSPEC address of
    // the stated length, on a descriptor this socket owns.
    let r = unsafe {
        let unspec: libc::sockaddr_storage = std::mem::zeroed();
        libc::connect(
            socket.as_raw_fd(),
            (&unspec as *const libc::sockaddr_storage).cast(),
            std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut byte = [0u8; 1];
    // Bounded: a flood that started after the unseal is the new call's.
    for _ in 0..64 {
        if socket.recv(&mut byte).is_err() {
            break;
        }
    }
    Ok(())
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

    const OPTS: SocketOptions = SocketOptions {
        recv_buffer: 0,
        send_buffer: 0,
        dscp: 0,
    };

    /// The park limit is process-wide: tests that set it take turns.
    static LIMIT: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// A one-port pool on `ip` and its socket, on an even port in `from`
    /// that nobody else on this machine holds.
    fn lone_port(ip: IpAddr, from: u16) -> (PortPool, u16, UdpSocket) {
        (from..from + 100)
            .step_by(2)
            .find_map(|p| Some((PortPool::new(p, p), p, bind(ip, p, &OPTS).ok()?)))
            .unwrap()
    }

    /// A freed port's socket parked and taken by the next call: while
    /// parked nothing reaches it; once taken, new datagrams do.
    #[test]
    fn a_parked_socket_takes_nothing_and_is_handed_out_again() {
        let _turn = LIMIT.lock().unwrap_or_else(|e| e.into_inner());
        set_park_limit(usize::MAX);
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (mut pool, port, socket) = lone_port(lo, 41000);
        assert!(pool.take(port));
        let local = SocketAddr::new(lo, port);
        pool.park(local, socket);
        assert!(pool.parked[0].is_none(), "a port in use is not parked");
        let socket = bind(lo, port, &OPTS).unwrap_or_else(|_| panic!("the unparked socket was closed"));
        pool.put(port);
        pool.park(local, socket);
        // To a sender the parked port looks closed (ICMP port unreachable).
        probe.connect(local).unwrap();
        probe.send(b"late").unwrap();
        probe.set_read_timeout(Some(std::time::Duration::from_secs(1))).unwrap();
        let refused = probe.recv(&mut [0u8; 8]).unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused, "{refused}");
        assert!(pool.take(port));
        std::thread::sleep(std::time::Duration::from_millis(20));
        let socket = pool.unpark(port).expect("parked");
        assert!(pool.unpark(port).is_none(), "handed out once");
        probe.send_to(b"new", local).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut buf = [0u8; 8];
        let (n, from) = socket.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"new"[..], probe.local_addr().unwrap()));
        assert!(socket.recv_from(&mut buf).is_err(), "nothing sent while parked arrives");
    }

    /// Sealing a socket bound to all addresses binds it to loopback for a
    /// while; unsealed, it takes datagrams to any address again.
    #[test]
    fn a_socket_bound_to_all_addresses_is_so_again_after_parking() {
        let _turn = LIMIT.lock().unwrap_or_else(|e| e.into_inner());
        set_park_limit(usize::MAX);
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let (mut pool, port, socket) = lone_port(any, 41100);
        pool.park(SocketAddr::new(any, port), socket);
        assert!(pool.take(port));
        let socket = pool.unpark(port).expect("parked");
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        probe.send_to(b"any", ("127.0.0.2", port)).unwrap();
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(1)))
            .unwrap();
        socket.set_nonblocking(false).unwrap();
        let mut buf = [0u8; 8];
        let (n, _) = socket.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"any");
    }

    #[test]
    fn no_socket_is_parked_past_the_limit() {
        let _turn = LIMIT.lock().unwrap_or_else(|e| e.into_inner());
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let local = s.local_addr().unwrap();
        let mut pool = PortPool::new(local.port() & !1, local.port());
        let i = pool.index(local.port()).unwrap();
        set_park_limit(PARKED.load(Relaxed));
        pool.park(local, s);
        assert!(pool.parked[i].is_none());
        assert!(pool.unpark(local.port()).is_none());
        set_park_limit(PARKED.load(Relaxed) + 1);
        pool.park(local, UdpSocket::bind(local).unwrap());
        assert!(pool.parked[i].is_some(), "parked once there is room");
    }

    #[test]
    fn every_free_port_parks_when_the_descriptors_cover_the_range() {
        assert_eq!(park_limit_for(65536, 10_000), 65536 - 11_024);
        assert_eq!(park_limit_for(20000, 10_000), 8976);
        // A limit short of the range: a quarter, the rest for live calls.
        assert_eq!(park_limit_for(1024, 10_000), 256);
        assert_eq!(park_limit_for(0, 10_000), 0);
    }
}
