//! The media core: per-stream state and decisions, pure, with time passed in.
//!
//! Workers own these values and feed them packets; nothing here touches a
//! socket or reads a clock.

pub mod codec;
pub mod conference;
pub mod dtls;
pub mod dtmf;
pub mod dtmf_out;
pub mod fill;
pub mod ice;
pub mod jitter;
pub mod mixer;
pub mod ogg;
pub mod overlay;
pub mod overload;
pub mod relay;
pub mod resample;
pub mod srtp;
pub mod stats;
pub mod tap;
pub mod transcode;
pub mod wav;
