//! io_uring for a worker's call sockets (`--io uring`): one multishot
//! receive per socket into a ring of provided buffers, sends queued and
//! submitted together, and the wait for both (and for the worker's epoll,
//! watched by a multishot poll) in one `io_uring_enter` per loop turn.
//! Receiving costs no system call; sending costs a share of one.
//!
//! Memory is fixed at start: `BUFS` receive buffers and `SENDS` send
//! slots. A flood cannot grow it: when every buffer is taken the socket's
//! multishot ends (ENOBUFS), its packets wait in the socket's own bounded
//! queue, and the worker re-arms it once buffers are back.

// The kernel reads the buffer ring, the message header and the send slots
// through raw pointers; each `unsafe` block says why it is sound.
#![allow(unsafe_code)]

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use std::alloc::Layout;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::RawFd;
use std::time::Duration;

/// Receive buffers: a datagram longer than this is dropped as truncated.
/// (RTP stays within an Ethernet MTU; loopback peers could send more.)
pub const BUF: usize = 2048;
const BUFS: u16 = 2048;
/// Send slots: a send finds none free only when 1024 are in flight; it
/// then goes out with a plain `sendto`.
const SENDS: usize = 1024;
const BGID: u16 = 0;
/// user_data: the kind in the top two bits.
const RECV: u64 = 0;
const SEND: u64 = 1 << 62;
const POLL: u64 = 2 << 62;
const CANCEL: u64 = 3 << 62;

/// What one completion was.
pub enum Done {
    /// A datagram for socket `slot` (of generation `gen`), copied out.
    Packet {
        slot: usize,
        gen: u32,
        n: usize,
        from: SocketAddr,
    },
    /// A datagram whose source is unreadable, or one too long for a buffer
    /// (`truncated`: the kernel kept only what fitted, sent from `from`).
    Bad {
        slot: usize,
        gen: u32,
        truncated: Option<SocketAddr>,
    },
    /// The socket's multishot receive ended, with the kernel's error (none:
    /// it simply stopped; ENOBUFS: every buffer was taken): re-arm it.
    Ended { slot: usize, gen: u32, error: Option<i32> },
    /// A send finished: its bytes, or the error, and the socket slot and
    /// generation it was queued with.
    Sent {
        slot: usize,
        gen: u32,
        result: io::Result<usize>,
    },
    /// The worker's epoll has events (commands, other sockets).
    Epoll,
    /// A cancel went through (the receive it ended reports as `Ended`).
    Cancelled,
}

pub struct Uring {
    ring: IoUring,
    bufs: Box<[u8]>,
    /// The buffer ring shared with the kernel: `BUFS` entries, page-aligned.
    entries: *mut types::BufRingEntry,
    layout: Layout,
    tail: u16,
    /// Where multishot receives put the source address (read by the kernel).
    msghdr: Box<libc::msghdr>,
    send_bufs: Box<[u8]>,
    send_addrs: Box<[libc::sockaddr_in6]>,
    /// Per send slot: the socket slot and generation it was queued from.
    send_from: Box<[(usize, u32)]>,
    free_sends: Vec<u16>,
    epoll_fd: RawFd,
    /// A receive that ended with a datagram: the end is reported next.
    ended: Option<(usize, u32)>,
    /// Cancels queued since the last flush.
    cancels: usize,
}

// The raw pointer is to memory this value owns; nothing else aliases it.
unsafe impl Send for Uring {}

/// A socket's generation fits in 30 bits of user_data.
const GEN_MASK: u32 = 0x3fff_ffff;

/// The generation after `gen`: it wraps within what user_data carries, so
/// a completion's generation always equals the one its socket was armed
/// with (a full `u32` would stop matching after 2^30 sockets).
pub fn next_gen(gen: u32) -> u32 {
    gen.wrapping_add(1) & GEN_MASK
}

fn user_data(kind: u64, slot: usize, gen: u32) -> u64 {
    kind | (u64::from(gen & GEN_MASK) << 32) | (slot as u64 & 0xffff_ffff)
}

/// The socket slot and generation a completion's user_data names.
fn slot_and_gen(ud: u64) -> (usize, u32) {
    ((ud & 0xffff_ffff) as usize, (ud >> 32) as u32 & GEN_MASK)
}

fn sockaddr_of(name: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes([*name.first()?, *name.get(1)?]);
    let port = u16::from_be_bytes([*name.get(2)?, *name.get(3)?]);
    match i32::from(family) {
        libc::AF_INET => {
            let a: [u8; 4] = name.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port))
        }
        libc::AF_INET6 => {
            let a: [u8; 16] = name.get(8..24)?.try_into().ok()?;
            // The scope (an interface index) matters to link-local peers.
            let scope = u32::from_ne_bytes(name.get(24..28)?.try_into().ok()?);
            Some(SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(a), port, 0, scope)))
        }
        _ => None,
    }
}

fn write_sockaddr(to: SocketAddr, out: &mut libc::sockaddr_in6) -> libc::socklen_t {
    // SAFETY: sockaddr_in6 is plain data; all zeroes is a valid value.
    *out = unsafe { std::mem::zeroed() };
    match to {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_in fits in sockaddr_in6 and has no stricter alignment.
            let sin = unsafe { &mut *(out as *mut libc::sockaddr_in6 as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            out.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            out.sin6_port = a.port().to_be();
            out.sin6_addr.s6_addr = a.ip().octets();
            out.sin6_scope_id = a.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

impl Uring {
    /// A ring for one worker, watching `epoll_fd` (the worker's mio poll).
    pub fn new(epoll_fd: RawFd) -> io::Result<Uring> {
        // Completions' kernel work runs when this thread waits for them
        // (it is the only one that uses the ring), not as interrupts. A
        // kernel without that (before 6.1) gets epoll: a default ring
        // measured slower than epoll (BENCHMARKS.md).
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(4096)?;
        let layout = Layout::from_size_align(usize::from(BUFS) * std::mem::size_of::<types::BufRingEntry>(), 4096)
            .map_err(io::Error::other)?;
        // SAFETY: a non-zero size; freed in Drop with the same layout.
        let entries = unsafe { std::alloc::alloc_zeroed(layout) } as *mut types::BufRingEntry;
        if entries.is_null() {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        // SAFETY: a zeroed msghdr is valid; only the name length matters to
        // a multishot receive (room for either address family).
        let mut msghdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        msghdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        let mut u = Uring {
            ring,
            bufs: vec![0u8; usize::from(BUFS) * BUF].into_boxed_slice(),
            entries,
            layout,
            tail: 0,
            msghdr,
            send_bufs: vec![0u8; SENDS * BUF].into_boxed_slice(),
            // SAFETY: plain data, all zeroes is valid.
            send_addrs: vec![unsafe { std::mem::zeroed() }; SENDS].into_boxed_slice(),
            send_from: vec![(0, 0); SENDS].into_boxed_slice(),
            free_sends: (0..SENDS as u16).collect(),
            epoll_fd,
            ended: None,
            cancels: 0,
        };
        // SAFETY: `entries` is page-aligned, BUFS long and lives as long as the ring.
        unsafe {
            u.ring
                .submitter()
                .register_buf_ring_with_flags(entries as u64, BUFS, BGID, 0)?;
        }
        for bid in 0..BUFS {
            u.recycle(bid);
        }
        u.watch_epoll()?;
        Ok(u)
    }

    /// Hands buffer `bid` (back) to the kernel.
    fn recycle(&mut self, bid: u16) {
        let mask = BUFS - 1;
        // SAFETY: the index is within the ring; the kernel reads entries
        // only up to the tail, which is published after the entry is written.
        unsafe {
            let e = &mut *self.entries.add(usize::from(self.tail & mask));
            e.set_addr(self.bufs.as_ptr().add(usize::from(bid) * BUF) as u64);
            e.set_len(BUF as u32);
            e.set_bid(bid);
            self.tail = self.tail.wrapping_add(1);
            let tail = types::BufRingEntry::tail(self.entries) as *const std::sync::atomic::AtomicU16;
            (*tail).store(self.tail, std::sync::atomic::Ordering::Release);
        }
    }

    fn push(&mut self, e: squeue::Entry) -> io::Result<()> {
        // SAFETY: every pointer in the entries built here (message header,
        // send slot, address) lives in `self` until its completion.
        if unsafe { self.ring.submission().push(&e) }.is_ok() {
            return Ok(());
        }
        self.ring.submit()?;
        // SAFETY: as above.
        unsafe { self.ring.submission().push(&e) }.map_err(|_| io::Error::other("submission queue full"))
    }

    fn watch_epoll(&mut self) -> io::Result<()> {
        let e = opcode::PollAdd::new(types::Fd(self.epoll_fd), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(POLL);
        self.push(e)
    }

    /// Starts (or restarts) the multishot receive of socket `slot`.
    pub fn arm(&mut self, fd: RawFd, slot: usize, gen: u32) -> io::Result<()> {
        let e = opcode::RecvMsgMulti::new(types::Fd(fd), &*self.msghdr, BGID)
            .build()
            .user_data(user_data(RECV, slot, gen));
        self.push(e)
    }

    /// Stops socket `slot`'s receive (queued: [`flush`](Self::flush) makes
    /// it so). An in-flight receive holds the socket: until it is
    /// cancelled, the port stays bound even once its descriptor is closed.
    pub fn cancel(&mut self, slot: usize, gen: u32) {
        let e = opcode::AsyncCancel::new(user_data(RECV, slot, gen))
            .build()
            .user_data(CANCEL);
        if self.push(e).is_ok() {
            self.cancels += 1;
        }
    }

    /// Submits the queued cancels and runs their completions: every
    /// cancelled receive has let go of its socket when this returns. One
    /// system call however many sockets a call closed.
    pub fn flush(&mut self) {
        if self.cancels == 0 {
            return;
        }
        self.cancels = 0;
        // With deferred task work, a cancelled request lets go of its file
        // only when this thread collects completions: a zero wait does it.
        let ts = types::Timespec::new();
        let args = types::SubmitArgs::new().timespec(&ts);
        if let Err(e) = self.ring.submitter().submit_with_args(1, &args) {
            if !matches!(e.raw_os_error(), Some(libc::ETIME) | Some(libc::EINTR)) {
                tracing::warn!(error = %e, "io_uring: cannot cancel sockets' receives");
            }
        }
    }

    /// Queues a datagram to `to` from `fd` (the socket at `from`: slot and
    /// generation, given back with its completion); false (nothing queued)
    /// when no send slot is free or it is longer than one: send it directly.
    pub fn send(&mut self, fd: RawFd, bytes: &[u8], to: SocketAddr, from: (usize, u32)) -> bool {
        if bytes.len() > BUF {
            return false;
        }
        let Some(i) = self.free_sends.pop() else { return false };
        let k = usize::from(i);
        let buf = &mut self.send_bufs[k * BUF..k * BUF + bytes.len()];
        buf.copy_from_slice(bytes);
        let len = write_sockaddr(to, &mut self.send_addrs[k]);
        self.send_from[k] = from;
        let e = opcode::Send::new(types::Fd(fd), buf.as_ptr(), bytes.len() as u32)
            .dest_addr(&self.send_addrs[k] as *const libc::sockaddr_in6 as *const libc::sockaddr)
            .dest_addr_len(len)
            .build()
            .user_data(SEND | u64::from(i));
        if self.push(e).is_err() {
            self.free_sends.push(i);
            return false;
        }
        true
    }

    /// Submits what is queued and waits up to `timeout` for a completion.
    pub fn submit_and_wait(&mut self, timeout: Duration) -> io::Result<()> {
        if !self.ring.completion().is_empty() {
            self.ring.submit()?;
            return Ok(());
        }
        let ts = types::Timespec::from(timeout);
        let args = types::SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The next completion, with a received datagram copied into `buf`
    /// (its buffer goes straight back to the kernel).
    pub fn next(&mut self, buf: &mut [u8]) -> Option<Done> {
        if let Some((slot, gen)) = self.ended.take() {
            return Some(Done::Ended { slot, gen, error: None });
        }
        let cqe = self.ring.completion().next()?;
        let (ud, res, flags) = (cqe.user_data(), cqe.result(), cqe.flags());
        let (slot, gen) = slot_and_gen(ud);
        Some(match ud & (3 << 62) {
            SEND => {
                let i = (ud & 0xffff) as u16;
                self.free_sends.push(i);
                let (slot, gen) = self.send_from[usize::from(i)];
                let result = if res < 0 {
                    Err(io::Error::from_raw_os_error(-res))
                } else {
                    Ok(res as usize)
                };
                Done::Sent { slot, gen, result }
            }
            POLL => {
                if !cqueue::more(flags) {
                    let _ = self.watch_epoll();
                }
                Done::Epoll
            }
            CANCEL => Done::Cancelled,
            _ => {
                let Some(bid) = cqueue::buffer_select(flags) else {
                    let error = (res < 0).then_some(-res);
                    return Some(Done::Ended { slot, gen, error });
                };
                let done = self.copy_out(bid, res, buf, slot, gen);
                self.recycle(bid);
                if !cqueue::more(flags) {
                    self.ended = Some((slot, gen));
                }
                done
            }
        })
    }

    fn copy_out(&self, bid: u16, res: i32, buf: &mut [u8], slot: usize, gen: u32) -> Done {
        let start = usize::from(bid) * BUF;
        let len = usize::try_from(res).unwrap_or(0).min(BUF);
        let data = &self.bufs[start..start + len];
        let Ok(out) = types::RecvMsgOut::parse(data, &self.msghdr) else {
            return Done::Bad {
                slot,
                gen,
                truncated: None,
            };
        };
        let payload = out.payload_data();
        let truncated = out.is_payload_truncated();
        let from = sockaddr_of(out.name_data());
        match from {
            Some(from) if !truncated && payload.len() <= buf.len() => {
                buf[..payload.len()].copy_from_slice(payload);
                Done::Packet {
                    slot,
                    gen,
                    n: payload.len(),
                    from,
                }
            }
            _ => Done::Bad {
                slot,
                gen,
                truncated: from.filter(|_| truncated),
            },
        }
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        let _ = self.ring.submitter().unregister_buf_ring(BGID);
        // SAFETY: allocated in `new` with this layout; the kernel no longer
        // reads it once the ring is unregistered (and the ring drops next).
        unsafe { std::alloc::dealloc(self.entries as *mut u8, self.layout) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    /// A ring, or None (said) on a machine whose kernel refuses io_uring.
    fn ring_here(poll: &mio::Poll) -> Option<Uring> {
        match Uring::new(poll.as_raw_fd()) {
            Ok(u) => Some(u),
            Err(e) => {
                eprintln!("SKIPPED: this machine refuses io_uring: {e}");
                None
            }
        }
    }

    #[test]
    fn datagrams_arrive_without_a_receive_call_and_sends_go_out_in_a_batch() {
        let poll = mio::Poll::new().unwrap();
        let Some(mut u) = ring_here(&poll) else { return };
        let (a, b) = (
            UdpSocket::bind("127.0.0.1:0").unwrap(),
            UdpSocket::bind("127.0.0.1:0").unwrap(),
        );
        u.arm(b.as_raw_fd(), 7, 3).unwrap();
        u.submit_and_wait(Duration::ZERO).unwrap();
        for i in 0..5u8 {
            a.send_to(&[i; 100], b.local_addr().unwrap()).unwrap();
        }
        let mut buf = [0u8; 65536];
        let mut got = Vec::new();
        while got.len() < 5 {
            u.submit_and_wait(Duration::from_millis(500)).unwrap();
            while let Some(d) = u.next(&mut buf) {
                if let Done::Packet { slot, gen, n, from } = d {
                    assert_eq!((slot, gen, n, from), (7, 3, 100, a.local_addr().unwrap()));
                    got.push(buf[0]);
                }
            }
        }
        assert_eq!(got, [0, 1, 2, 3, 4]);
        // Three sends, one submission.
        for i in 0..3u8 {
            assert!(u.send(b.as_raw_fd(), &[i; 10], a.local_addr().unwrap(), (9, u32::from(i))));
        }
        let mut sent = Vec::new();
        while sent.len() < 3 {
            u.submit_and_wait(Duration::from_millis(500)).unwrap();
            while let Some(d) = u.next(&mut buf) {
                if let Done::Sent { slot, gen, result } = d {
                    assert_eq!((slot, result.unwrap()), (9, 10));
                    sent.push(gen);
                }
            }
        }
        sent.sort();
        assert_eq!(sent, [0, 1, 2], "each completion names its socket");
        let mut r = [0u8; 64];
        a.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        assert_eq!(a.recv_from(&mut r).unwrap().0, 10);
        // Cancelled and closed: the port is free once the cancels are flushed.
        u.cancel(7, 3);
        let addr = b.local_addr().unwrap();
        drop(b);
        u.flush();
        UdpSocket::bind(addr).expect("the port is free after disarm");
        assert!(sockaddr_of(&[0; 3]).is_none());
    }

    #[test]
    fn more_datagrams_waiting_than_buffers_all_arrive_in_order() {
        let poll = mio::Poll::new().unwrap();
        let Some(mut u) = ring_here(&poll) else { return };
        let (a, b) = (
            UdpSocket::bind("127.0.0.1:0").unwrap(),
            UdpSocket::bind("127.0.0.1:0").unwrap(),
        );
        socket2::SockRef::from(&b).set_recv_buffer_size(16 << 20).unwrap();
        // More datagrams wait than the ring has buffers before it first reads.
        let n = usize::from(BUFS) + 952;
        for i in 0..n {
            a.send_to(&(i as u32).to_be_bytes(), b.local_addr().unwrap()).unwrap();
        }
        u.arm(b.as_raw_fd(), 1, 0).unwrap();
        // Completions pile up unread (their buffers are not handed back)
        // until the kernel has none left to fill.
        let ts = types::Timespec::from(Duration::from_millis(5));
        for _ in 0..50 {
            let _ = u
                .ring
                .submitter()
                .submit_with_args(1, &types::SubmitArgs::new().timespec(&ts));
        }
        let (mut got, mut ended) = (Vec::new(), 0);
        let mut buf = [0u8; 64];
        for _ in 0..100 {
            u.submit_and_wait(Duration::from_millis(100)).unwrap();
            while let Some(d) = u.next(&mut buf) {
                match d {
                    Done::Packet { n: 4, .. } => got.push(u32::from_be_bytes(buf[..4].try_into().unwrap())),
                    Done::Ended { error, .. } => {
                        assert_eq!(error, Some(libc::ENOBUFS), "it ended for want of buffers, nothing else");
                        ended += 1;
                        u.arm(b.as_raw_fd(), 1, 0).unwrap();
                    }
                    _ => {}
                }
            }
            if got.len() == n {
                break;
            }
        }
        // Kernels before 6.x end the multishot receive with ENOBUFS (and it
        // is armed again above); newer ones wait for buffers by themselves.
        eprintln!("multishot receive ended for want of buffers {ended} times");
        assert_eq!(got, (0..n as u32).collect::<Vec<_>>(), "every datagram, in order");
    }

    proptest::proptest! {
        /// Any bytes as a source address: an address or none, never a panic.
        #[test]
        fn any_name_is_an_address_or_none(name in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40)) {
            let _ = sockaddr_of(&name);
        }
    }

    #[test]
    fn generations_wrap_within_what_a_completion_carries() {
        let mut gen = GEN_MASK - 2;
        for _ in 0..5 {
            gen = next_gen(gen);
            assert_eq!(slot_and_gen(user_data(RECV, 77, gen)), (77, gen), "generation {gen}");
        }
        assert_eq!(gen, 2, "wrapped to 0 after {GEN_MASK}");
    }

    #[test]
    fn addresses_go_out_and_come_back_the_same() {
        for to in ["127.0.0.1:4000", "[::1]:5000", "[fd00::7]:9", "[fe80::1%2]:7"] {
            let to: SocketAddr = to.parse().unwrap();
            // SAFETY: plain data, all zeroes is valid.
            let mut raw: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            let len = write_sockaddr(to, &mut raw) as usize;
            // SAFETY: reading the bytes of a plain struct just written.
            let bytes = unsafe { std::slice::from_raw_parts(&raw as *const _ as *const u8, len) };
            assert_eq!(sockaddr_of(bytes), Some(to));
        }
    }
}
