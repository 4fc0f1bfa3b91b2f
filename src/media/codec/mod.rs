//! Audio codecs for conferences. Each codec converts between its payload and
//! 16-bit linear PCM at its own rate; resampling to the mix rate is separate.

pub mod g711;
