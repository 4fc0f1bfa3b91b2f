//! SDP (RFC 8866) as chorus needs it: a line-preserving model, so that a
//! rewrite changes only what relaying requires and keeps every other line,
//! its order and its line ending byte for byte.

mod error;
mod parse;
mod rewrite;

pub use error::SdpError;
pub use parse::{Connection, Direction, Line, Media, Sdp};
pub(crate) use rewrite::stripped_payload_types;
pub use rewrite::{rewrite, MuxOut, Rewrite, StreamOut};
