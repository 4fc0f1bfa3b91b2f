//! chorus: an RTP media relay driven by SIP proxies over HTTP.
//!
//! Layout (see ../shared/DESIGN.md):
//! - pure core, time passed in: [`sdp`] (parse, rewrite), [`wire`] (RTP/RTCP
//!   views), [`media`] (latching, relay decisions, RFC 3550 statistics),
//!   [`session`] (offer/answer state of a call);
//! - shells: [`worker`] (media threads: sockets, event loop, ports),
//!   [`control`] (HTTP API, call registry), [`metrics`], [`config`].

// One module needs `unsafe fn` to implement a trait of the srtp crate
// (`media::srtp::InPlace`), three make system calls without a safe
// wrapper (`offload::{map, route, interfaces}`: bpf(2), rtnetlink,
// getifaddrs), and `worker::uring` shares memory with the kernel (its
// buffer ring and send slots); they allow it there and nowhere else.
#![deny(unsafe_code)]

pub mod config;
pub mod control;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod media;
pub mod metrics;
pub mod offload;
pub mod sdp;
pub mod session;
pub mod store;
pub mod streams;
pub mod wire;
pub mod worker;
