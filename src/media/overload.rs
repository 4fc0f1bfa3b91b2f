//! When a worker's mixer ticks run long, degrade before audio stalls: mix
//! one speaker instead of several, and refuse new participants, until ticks
//! are comfortably fast again. Pure: fed each tick's duration.

use std::time::Duration;

/// A tick longer than this eats into the next one's budget (20 ms).
pub const SLOW_TICK: Duration = Duration::from_millis(15);
/// Ticks at or under this are comfortably fast.
pub const FAST_TICK: Duration = Duration::from_millis(10);
/// Consecutive slow ticks before degrading (100 ms).
const SLOW_TO_DEGRADE: u32 = 5;
/// Consecutive fast ticks before recovering (2 s).
const FAST_TO_RECOVER: u32 = 100;

#[derive(Debug, Default)]
pub struct OverloadGuard {
    slow: u32,
    fast: u32,
    degraded: bool,
}

/// A change of state to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Degrade,
    Recover,
}

impl OverloadGuard {
    pub fn degraded(&self) -> bool {
        self.degraded
    }

    pub fn observe(&mut self, tick: Duration) -> Option<Change> {
        if tick > SLOW_TICK {
            self.slow += 1;
            self.fast = 0;
        } else if tick <= FAST_TICK {
            self.fast += 1;
            self.slow = 0;
        }
        if !self.degraded && self.slow >= SLOW_TO_DEGRADE {
            self.degraded = true;
            return Some(Change::Degrade);
        }
        if self.degraded && self.fast >= FAST_TO_RECOVER {
            self.degraded = false;
            return Some(Change::Recover);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degrades_on_sustained_slowness_and_recovers_with_hysteresis() {
        let mut g = OverloadGuard::default();
        let ms = Duration::from_millis;
        for _ in 0..4 {
            assert_eq!(g.observe(ms(18)), None);
        }
        assert_eq!(g.observe(ms(5)), None, "one fast tick resets the count");
        for _ in 0..4 {
            assert_eq!(g.observe(ms(18)), None);
        }
        assert_eq!(g.observe(ms(18)), Some(Change::Degrade));
        assert!(g.degraded());
        for _ in 0..99 {
            assert_eq!(g.observe(ms(3)), None);
        }
        assert_eq!(g.observe(ms(3)), Some(Change::Recover));
    }
}
