//! The floor under any ng server on this machine, for the control-plane
//! benchmark's direct run: a responder on one thread that sleeps in `recv`
//! until a command comes and answers it at once with a fixed SDP, parsing
//! nothing and keeping no state. What it costs per offer+answer+delete is
//! what three datagrams in and three out cost here; the set-ups per second
//! the generator reaches against it are the generator's own ceiling.

use std::net::UdpSocket;

pub fn run(listen: &str) {
    let socket = UdpSocket::bind(listen).expect("--ng-echo address binds");
    eprintln!("ng echo on {listen}");
    let sdp = super::sdp("127.0.0.1:20000".parse().expect("address"), 1);
    let body = format!("d3:sdp{}:{sdp}6:result2:oke", sdp.len());
    let mut buf = vec![0u8; 65536];
    let mut reply = Vec::with_capacity(1024);
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let Some(space) = buf[..n].iter().position(|&b| b == b' ') else {
            continue;
        };
        reply.clear();
        reply.extend_from_slice(&buf[..=space]);
        reply.extend_from_slice(body.as_bytes());
        let _ = socket.send_to(&reply, peer);
    }
}
