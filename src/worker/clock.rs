//! The only place media code reads the clock; the core gets `now` passed in.

use std::time::Instant;

#[inline]
#[allow(clippy::disallowed_methods)]
pub fn now() -> Instant {
    Instant::now()
}

/// Seconds from 1900 (NTP's epoch) to 1970 (Unix's).
const NTP_UNIX_OFFSET_S: u64 = 2_208_988_800;

/// Wall-clock time as a 64-bit NTP timestamp (RTCP sender reports).
#[allow(clippy::disallowed_methods)]
pub fn ntp_now() -> u64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() + NTP_UNIX_OFFSET_S;
    let frac = ((d.subsec_nanos() as u64) << 32) / 1_000_000_000;
    (secs << 32) | frac
}
