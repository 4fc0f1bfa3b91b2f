//! The only place media code reads the clock; the core gets `now` passed in.

use std::time::Instant;

#[inline]
#[allow(clippy::disallowed_methods)]
pub fn now() -> Instant {
    Instant::now()
}
