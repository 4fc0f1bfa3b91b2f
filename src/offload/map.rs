//! `chorus_fwd`, the map the media workers share with `bpf/forward.c`: one
//! entry per receiving port whose RTP the kernel forwards. Element
//! operations are plain bpf(2) calls on the map's descriptor, which any
//! worker thread may make at once: no lock, no library state.

// bpf(2) and clock_gettime(2) have no safe wrapper in the dependencies;
// each call below says why it is sound.
#![allow(unsafe_code)]

use std::io;
use std::mem::size_of;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// An address as the program compares it: an IPv4 address in the first
/// four bytes, the rest zero; the family apart.
fn octets(ip: IpAddr) -> ([u8; 16], u16) {
    match ip {
        IpAddr::V4(a) => {
            let mut o = [0u8; 16];
            o[..4].copy_from_slice(&a.octets());
            (o, 4)
        }
        IpAddr::V6(a) => (a.octets(), 6),
    }
}

/// A receiving socket, as the packet names it (network byte order).
/// Same layout as `struct fwd_key` in `bpf/forward.c`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    addr: [u8; 16],
    port: [u8; 2],
    family: u16,
}

impl Key {
    pub fn new(at: SocketAddr) -> Key {
        let (addr, family) = octets(at.ip());
        Key {
            addr,
            port: at.port().to_be_bytes(),
            family,
        }
    }
}

/// What the kernel does with a packet to a [`Key`], and what it counted.
/// Same layout as `struct fwd_val` in `bpf/forward.c`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Entry {
    src_addr: [u8; 16],
    out_addr: [u8; 16],
    dst_addr: [u8; 16],
    src_port: [u8; 2],
    out_port: [u8; 2],
    dst_port: [u8; 2],
    tos: u8,
    pad0: u8,
    punt: [u64; 2],
    /// Packets the kernel forwarded, and their UDP payload bytes.
    pub packets: u64,
    pub bytes: u64,
    /// CLOCK_MONOTONIC (ns, coarse) of the last one; 0 before any.
    pub last_ns: u64,
    /// The highest RTP sequence number forwarded, extended with its cycles.
    pub seq_max: u32,
    ifindex: u32,
    jitter_pts: [u64; 2],
    /// Interarrival jitter in timestamp units, scaled by 16 (RFC 3550 A.8).
    pub jitter_q4: u64,
    /// The RTP clock (Hz) the jitter is in; 0: not measured.
    pub clock: u32,
    last_transit: u32,
    has_transit: u32,
    /// `clock` * 2^34 / 10^9: what the program multiplies arrival times by.
    clock_mul: u32,
}

const _: () = assert!(size_of::<Key>() == 20 && size_of::<Entry>() == 144);

/// What a worker asks the kernel to forward. All three addresses are of
/// one family: the program rewrites a header, it cannot change its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The latched peer: packets from anywhere else stay in userspace.
    pub from: SocketAddr,
    /// chorus's socket facing the other leg, the packets' new source.
    pub via: SocketAddr,
    /// The other leg.
    pub to: SocketAddr,
    /// TOS byte of chorus's sockets (DSCP; the packet's ECN bits are kept).
    pub tos: u8,
    /// Payload types userspace must see (bit n: type n): telephone events.
    pub punt: u128,
    /// The extended highest sequence number userspace has seen.
    pub seq_max: u32,
    /// The interface the route to `to` leaves by; 0 when `to` is this host.
    pub ifindex: u32,
    /// The jitter so far (scaled by 16), its clock (Hz; 0: not measured),
    /// and the payload types of that clock, whose packets go on with it.
    pub jitter: (u64, u32, u128),
}

impl Entry {
    pub fn new(r: &Route) -> Entry {
        Entry {
            src_addr: octets(r.from.ip()).0,
            out_addr: octets(r.via.ip()).0,
            dst_addr: octets(r.to.ip()).0,
            src_port: r.from.port().to_be_bytes(),
            out_port: r.via.port().to_be_bytes(),
            dst_port: r.to.port().to_be_bytes(),
            tos: r.tos,
            punt: [r.punt as u64, (r.punt >> 64) as u64],
            seq_max: r.seq_max,
            ifindex: r.ifindex,
            jitter_q4: r.jitter.0,
            clock: r.jitter.1,
            clock_mul: ((u64::from(r.jitter.1) << 34) / 1_000_000_000) as u32,
            jitter_pts: [r.jitter.2 as u64, (r.jitter.2 >> 64) as u64],
            ..Entry::default()
        }
    }
}

// bpf(2) commands and flags (linux/bpf.h).
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;
const BPF_NOEXIST: u64 = 1;

/// The element-command prefix of `union bpf_attr`.
#[repr(C)]
struct ElemAttr {
    map_fd: u32,
    pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// The map, by its descriptor.
#[derive(Debug)]
pub struct ForwardMap {
    fd: OwnedFd,
    /// The map's size, and the entries chorus put in it (only chorus adds
    /// and removes them).
    capacity: usize,
    entries: AtomicUsize,
}

impl ForwardMap {
    pub fn new(fd: OwnedFd, capacity: usize) -> ForwardMap {
        ForwardMap {
            fd,
            capacity,
            entries: AtomicUsize::new(0),
        }
    }

    /// Whether every entry is taken: a direction offered now would be
    /// refused, so the caller need not look its route up first.
    pub fn full(&self) -> bool {
        self.entries.load(Relaxed) >= self.capacity
    }

    fn call(&self, cmd: libc::c_long, key: &Key, value: *mut Entry, flags: u64) -> io::Result<()> {
        let mut attr = ElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            pad: 0,
            key: key as *const Key as u64,
            value: value as u64,
            flags,
        };
        // SAFETY: `attr` is a valid bpf_attr for the element commands, its
        // size is passed; `key` and `value` point to buffers of the map's
        // key and value sizes (asserted above), alive for the call. The
        // kernel writes `value` only for a lookup, which passes a `&mut`.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                &mut attr as *mut ElemAttr,
                size_of::<ElemAttr>() as libc::c_uint,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Adds an entry for a port that has none.
    pub fn insert(&self, key: &Key, route: &Route) -> io::Result<()> {
        let mut e = Entry::new(route);
        self.call(BPF_MAP_UPDATE_ELEM, key, &mut e, BPF_NOEXIST)?;
        self.entries.fetch_add(1, Relaxed);
        Ok(())
    }

    /// The entry's counters as they are now; `None` when there is no entry.
    pub fn read(&self, key: &Key) -> io::Result<Option<Entry>> {
        let mut e = Entry::default();
        match self.call(BPF_MAP_LOOKUP_ELEM, key, &mut e, 0) {
            Ok(()) => Ok(Some(e)),
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Removes the entry, with its final counters (one call: no packet is
    /// forwarded uncounted): from the next packet on, userspace relays.
    pub fn take(&self, key: &Key) -> io::Result<Option<Entry>> {
        let mut e = Entry::default();
        match self.call(BPF_MAP_LOOKUP_AND_DELETE_ELEM, key, &mut e, 0) {
            Ok(()) => {
                self.entries.fetch_sub(1, Relaxed);
                Ok(Some(e))
            }
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(err) => Err(err),
        }
    }
}

/// CLOCK_MONOTONIC in ns, the clock of `bpf_ktime_get_ns` (and of `Instant`).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to write; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000) + ts.tv_nsec as u64
}
