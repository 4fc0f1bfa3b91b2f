//! Where a forwarded packet leaves: the kernel's own route lookup
//! (`ip route get TO from FROM`, RTM_GETROUTE over rtnetlink), once per
//! direction handed to the kernel.

// socket(2), send(2) and recv(2) on a netlink socket; see each block.
#![allow(unsafe_code)]

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Where the route to a peer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Egress {
    /// The peer is this host: the stack delivers the rewritten packet.
    Local,
    /// Out of this interface (index).
    Out(u32),
}

const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const RTA_DST: u16 = 1;
const RTA_SRC: u16 = 2;
const RTA_OIF: u16 = 4;
const RTN_UNICAST: u8 = 1;
const RTN_LOCAL: u8 = 2;
/// nlmsghdr (16) + rtmsg (12) + two address attributes (4 + 16 at most).
const REQUEST_MAX: usize = 68;

/// `ip route get TO from FROM`; both of one family. The request and its length.
fn request(to: IpAddr, from: IpAddr) -> ([u8; REQUEST_MAX], usize) {
    let octets = |ip: IpAddr| match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    let (family, bits) = match to {
        IpAddr::V4(_) => (libc::AF_INET, 32),
        IpAddr::V6(_) => (libc::AF_INET6, 128),
    };
    let (to, from) = (octets(to), octets(from));
    let attr = 4 + to.len();
    let len = 28 + 2 * attr;
    let mut m = [0u8; REQUEST_MAX];
    m[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
    m[4..6].copy_from_slice(&RTM_GETROUTE.to_ne_bytes());
    m[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    m[8..12].copy_from_slice(&1u32.to_ne_bytes()); // sequence
                                                   // rtmsg: family, dst_len, src_len; the rest zero.
    m[16] = family as u8;
    m[17] = bits;
    m[18] = bits;
    for (at, kind, ip) in [(28, RTA_DST, &to), (28 + attr, RTA_SRC, &from)] {
        m[at..at + 2].copy_from_slice(&(attr as u16).to_ne_bytes());
        m[at + 2..at + 4].copy_from_slice(&kind.to_ne_bytes());
        m[at + 4..at + attr].copy_from_slice(ip);
    }
    (m, len)
}

/// Reads the kernel's answer: the route's type and its output interface.
fn parse(reply: &[u8]) -> io::Result<Egress> {
    let u16_at = |i: usize| reply.get(i..i + 2).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    let u32_at = |i: usize| {
        reply
            .get(i..i + 4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    };
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "short rtnetlink reply");
    let len = (u32_at(0).ok_or_else(bad)? as usize).min(reply.len());
    match u16_at(4).ok_or_else(bad)? {
        NLMSG_ERROR => {
            let errno = u32_at(16).ok_or_else(bad)? as i32;
            return Err(io::Error::from_raw_os_error(errno.unsigned_abs() as i32));
        }
        RTM_NEWROUTE => {}
        other => return Err(io::Error::other(format!("rtnetlink answered type {other}"))),
    }
    let kind = *reply.get(23).ok_or_else(bad)?;
    let mut at = 28;
    let mut oif = None;
    while at + 4 <= len {
        let (alen, atype) = (u16_at(at).ok_or_else(bad)? as usize, u16_at(at + 2).ok_or_else(bad)?);
        if alen < 4 {
            break;
        }
        if atype == RTA_OIF && alen >= 8 {
            oif = u32_at(at + 4);
        }
        at += (alen + 3) & !3;
    }
    match (kind, oif) {
        (RTN_LOCAL, _) => Ok(Egress::Local),
        (RTN_UNICAST, Some(i)) if i != 0 => Ok(Egress::Out(i)),
        _ => Err(io::Error::other(format!("no unicast route (type {kind})"))),
    }
}

/// The route from `from` (chorus's socket) to `to` (the peer), of one family.
pub fn egress(to: IpAddr, from: IpAddr) -> io::Result<Egress> {
    // SAFETY: plain socket(2); the descriptor is owned right away.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor no one else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let (req, len) = request(to, from);
    // SAFETY: `req` is a valid buffer of at least the length passed; the
    // kernel is the default destination of a netlink socket.
    let sent = unsafe { libc::send(fd.as_raw_fd(), req.as_ptr().cast(), len, 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut reply = [0u8; 1024];
    // SAFETY: `reply` is a writable buffer of the length passed.
    let n = unsafe { libc::recv(fd.as_raw_fd(), reply.as_mut_ptr().cast(), reply.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    parse(&reply[..n as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_local_and_a_garbled_reply_is_an_error() {
        let lo = IpAddr::from([127, 0, 0, 1]);
        assert_eq!(egress(lo, lo).unwrap(), Egress::Local);
        if std::net::UdpSocket::bind("[::1]:0").is_ok() {
            let lo6: IpAddr = "::1".parse().unwrap();
            assert_eq!(egress(lo6, lo6).unwrap(), Egress::Local);
        }
        assert!(parse(&[]).is_err());
        assert!(parse(&[0xff; 3]).is_err());
    }

    proptest::proptest! {
        /// Any reply, however garbled (lengths that lie, attributes past the
        /// end): an answer or an error, never a panic.
        #[test]
        fn any_reply_is_an_answer_or_an_error(reply in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = parse(&reply);
        }

        /// A well-formed reply with any attributes after the header.
        #[test]
        fn any_attributes_after_a_route_header(kind in 0u8..4, attrs in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120)) {
            let mut reply = vec![0u8; 28];
            reply[4..6].copy_from_slice(&RTM_NEWROUTE.to_ne_bytes());
            reply[23] = kind;
            reply.extend_from_slice(&attrs);
            let len = reply.len() as u32;
            reply[0..4].copy_from_slice(&len.to_ne_bytes());
            if let Ok(Egress::Out(i)) = parse(&reply) {
                proptest::prop_assert!(i != 0 && kind == RTN_UNICAST);
            }
        }
    }
}
