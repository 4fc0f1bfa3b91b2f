//! SDP (RFC 8866) as chorus needs it: a line-preserving model, so that a
//! rewrite changes only what relaying requires and keeps every other line,
//! its order and its line ending byte for byte.

pub mod crypto;
mod error;
mod parse;
mod rewrite;

pub use error::SdpError;
pub use parse::{Connection, Line, Media, Sdp};
pub(crate) use rewrite::stripped_payload_types;
pub use rewrite::{rewrite, MuxOut, Rewrite, StreamOut};

/// Serde for an SDP kept in a record: its text, parsed again on the way in.
pub mod as_text {
    use super::Sdp;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(sdp: &Option<Sdp>, s: S) -> Result<S::Ok, S::Error> {
        match sdp {
            Some(sdp) => s.serialize_some(&sdp.text()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Sdp>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| Sdp::parse(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}
