//! When a worker's mixer ticks run long, degrade before audio stalls, and
//! admit participants only while the measured cost leaves room. Pure: fed
//! each tick's duration.
//!
//! Degraded, a conference mixes one speaker and sheds what costs: those not
//! mixed are never decoded (an Opus packet with voice counts as a voice at
//! a fixed level instead), and nobody gets the rotation's forced decode.
//! Cost is then bound by the one speaker, so ticks come down, and the
//! worker recovers once they stay fast. If the full load brings it straight
//! back, each relapse doubles the time the next recovery waits (2 s, 4 s,
//! ... 64 s), so a worker at the edge does not flap.

use std::time::Duration;

/// A tick longer than this eats into the next one's budget (20 ms).
pub const SLOW_TICK: Duration = Duration::from_millis(15);
/// Ticks at or under this are comfortably fast.
pub const FAST_TICK: Duration = Duration::from_millis(10);
/// Consecutive slow ticks before degrading (100 ms).
const SLOW_TO_DEGRADE: u32 = 5;
/// Consecutive fast ticks before recovering, the first time (2 s).
const FAST_TO_RECOVER: u32 = 100;
/// The most the recovery wait grows to (64 s).
const MAX_RECOVER: u32 = 3200;
/// A relapse within this many ticks of recovering doubles the next wait.
const RELAPSE_WINDOW: u32 = 500;
/// Joins are refused when one more participant would take the tick past this.
pub const ADMIT_TICK: Duration = Duration::from_millis(12);

#[derive(Debug)]
pub struct OverloadGuard {
    slow: u32,
    fast: u32,
    degraded: bool,
    /// Fast ticks the next recovery waits for.
    recover_after: u32,
    /// Ticks since the last recovery (a relapse soon after doubles the wait).
    since_recovery: Option<u32>,
    /// Smoothed tick duration (µs) while not degraded: what admission uses.
    ewma_us: f64,
}

impl Default for OverloadGuard {
    fn default() -> Self {
        OverloadGuard {
            slow: 0,
            fast: 0,
            degraded: false,
            recover_after: FAST_TO_RECOVER,
            since_recovery: None,
            ewma_us: 0.0,
        }
    }
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

    /// The smoothed duration of full-cost ticks (µs).
    pub fn tick_us(&self) -> u64 {
        self.ewma_us as u64
    }

    pub fn observe(&mut self, tick: Duration) -> Option<Change> {
        if !self.degraded {
            // About a second of ticks.
            self.ewma_us += (tick.as_secs_f64() * 1e6 - self.ewma_us) / 50.0;
        }
        if let Some(t) = &mut self.since_recovery {
            *t = t.saturating_add(1);
        }
        if tick > SLOW_TICK {
            self.slow += 1;
            self.fast = 0;
        } else if tick <= FAST_TICK {
            self.fast += 1;
            self.slow = 0;
        }
        if !self.degraded && self.slow >= SLOW_TO_DEGRADE {
            self.degraded = true;
            self.recover_after = match self.since_recovery {
                Some(t) if t < RELAPSE_WINDOW => (self.recover_after * 2).min(MAX_RECOVER),
                _ => FAST_TO_RECOVER,
            };
            return Some(Change::Degrade);
        }
        if self.degraded && self.fast >= self.recover_after {
            self.degraded = false;
            self.since_recovery = Some(0);
            return Some(Change::Recover);
        }
        None
    }
}

/// Whether a worker whose ticks take `tick_us` with `participants` can take
/// one more: the measured cost per participant, times one more, must stay
/// within [`ADMIT_TICK`]. The reason when not.
pub fn admits(tick_us: u64, participants: u64) -> Result<(), String> {
    if participants == 0 {
        return Ok(());
    }
    let per = tick_us as f64 / participants as f64;
    let after = per * (participants + 1) as f64;
    if after <= ADMIT_TICK.as_secs_f64() * 1e6 {
        return Ok(());
    }
    Err(format!(
        "its media worker's mixer spends {:.1} ms of each 20 ms tick on {participants} participants; one more would take it past {} ms",
        tick_us as f64 / 1000.0,
        ADMIT_TICK.as_millis()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn degrades_on_sustained_slowness_and_recovers_with_hysteresis() {
        let mut g = OverloadGuard::default();
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

    /// Recover, relapse at once, recover later: each wait twice the last,
    /// so the mode changes ever more rarely; a long calm resets it.
    #[test]
    fn a_relapse_soon_after_recovering_doubles_the_wait() {
        let mut g = OverloadGuard::default();
        let mut waits = Vec::new();
        for _ in 0..4 {
            while g.observe(ms(18)) != Some(Change::Degrade) {}
            let mut n = 0;
            while g.observe(ms(3)) != Some(Change::Recover) {
                n += 1;
            }
            waits.push(n + 1);
        }
        assert_eq!(waits, [100, 200, 400, 800]);
        for _ in 0..RELAPSE_WINDOW {
            g.observe(ms(3));
        }
        while g.observe(ms(18)) != Some(Change::Degrade) {}
        let mut n = 1;
        while g.observe(ms(3)) != Some(Change::Recover) {
            n += 1;
        }
        assert_eq!(n, 100);
    }

    #[test]
    fn admission_follows_the_measured_cost_per_participant() {
        assert!(admits(0, 0).is_ok());
        assert!(admits(5_000, 500).is_ok(), "10 µs each: room for 1,200");
        assert!(admits(11_990, 1_000).is_err(), "one more passes 12 ms");
        let why = admits(12_000, 100).unwrap_err();
        assert!(why.contains("12.0 ms of each 20 ms tick on 100 participants"), "{why}");
        // Smoothed over full-cost ticks only.
        let mut g = OverloadGuard::default();
        for _ in 0..500 {
            g.observe(ms(8));
        }
        assert!((7_900..=8_000).contains(&g.tick_us()), "{}", g.tick_us());
    }
}
