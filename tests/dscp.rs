//! Outgoing media carries the configured DSCP (default EF, 46): the TOS byte
//! of packets chorus relays, read at the receiver with IP_RECVTOS.

mod common;
use common::*;
use std::os::fd::AsRawFd;

/// Receives one datagram and returns the TOS byte it arrived with.
fn recv_tos(sock: &std::net::UdpSocket) -> Option<u8> {
    let fd = sock.as_raw_fd();
    let on: libc::c_int = 1;
    // SAFETY: fd is a live UDP socket; the option value is a c_int.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_RECVTOS,
            &on as *const _ as *const libc::c_void,
            4,
        )
    };
    assert_eq!(r, 0);
    let mut buf = [0u8; 2048];
    let mut cmsg = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: msghdr points at buffers that outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = std::mem::size_of_val(&cmsg);
    // SAFETY: as above; the socket has a read timeout, so this returns.
    let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    assert!(n > 0, "no packet");
    // SAFETY: walking the control messages the kernel just wrote.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::IPPROTO_IP && (*c).cmsg_type == libc::IP_TOS {
                return Some(*libc::CMSG_DATA(c));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    None
}

#[tokio::test]
async fn relayed_media_is_marked_ef_by_default_and_as_configured() {
    for (slot, args, dscp) in [(50u16, vec![], 46u8), (51, vec!["--dscp", "34"], 34)] {
        let d = Daemon::start(slot, &args).await;
        let (mut a, b) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
        let (to_a, _) = d.call("dscp", &a, &b).await;
        a.send_rtp(to_a);
        assert_eq!(recv_tos(&b.rtp), Some(dscp << 2), "DSCP {dscp}");
    }
}
