//! The conferences' 20 ms ticks. Each conference keeps its own grid, and
//! moves it (by at most `SLEW` a tick) until its loudest speaker's packets
//! are due `AIM` before its tick: the voice everyone follows then waits 2
//! ms for the mix instead of anything up to a whole tick, which on a
//! shared grid depended on where the speaker's phone happened to be in its
//! 20 ms. Listeners see packets 19 or 21 ms apart while it moves, which
//! their jitter buffers absorb. The worker accounts its tick work per
//! 20 ms of wall time for the overload guard and the tick histogram.

use super::conference_host::tick_one;
use super::{clock, Runner};
use crate::media::conference::TICK_MS;
use crate::media::overload::Change;
use crate::metrics::WorkerCounters;
use std::time::{Duration, Instant};

pub(super) const TICK: Duration = Duration::from_millis(TICK_MS as u64);
/// How far a conference's grid moves per tick at most.
const SLEW: Duration = Duration::from_millis(1);
/// How long before its tick the main voice's packet should be due: room
/// for its due time to move (the jitter target follows the jitter) without
/// falling after the tick.
const AIM: Duration = Duration::from_millis(2);

/// The tick after one due at `due` and run at `now`: on the grid, moved
/// towards `AIM` after the main voice's packet by what `slack` says. A
/// tick that falls just before the packet (its due time moved later by
/// more than `AIM`) plays the previous one, and walks earlier to it.
fn next_tick(due: Instant, now: Instant, slack: Option<Duration>) -> Instant {
    let next = match slack {
        Some(s) if s > AIM => due + TICK - (s - AIM).min(SLEW),
        Some(s) => due + TICK + (AIM - s).min(SLEW),
        None => due + TICK,
    };
    // A worker far behind starts a new grid instead of catching up.
    if now > next + TICK * 5 {
        now + TICK
    } else {
        next
    }
}

impl Runner {
    /// Runs the mixer of every conference whose tick is due.
    pub(super) fn tick_conferences(&mut self, now: Instant) {
        let mut participants = 0;
        let ntp = clock::ntp_now();
        let mut failed = Vec::new();
        let mut next: Option<Instant> = None;
        for (ci, conf) in self.conferences.iter_mut() {
            participants += conf.members.len() as u64;
            let due = conf.next_tick;
            if due <= now {
                if now.saturating_duration_since(due) > TICK {
                    WorkerCounters::add(&self.counters.late_ticks, 1);
                    conf.late_ticks += 1;
                }
                #[cfg(feature = "test-hooks")]
                let armed = self.armed_panics.contains(&conf.key);
                let (sockets, counters, events) = (&self.sockets, &*self.counters, &self.events);
                let c = &self.config;
                let big = c.offload_min > 0 && conf.members.len() >= c.offload_min;
                let offload = (big && c.send_pool.can_offload()).then_some((&*c.send_pool, c.index));
                let ticked = super::guarded(|| {
                    #[cfg(feature = "test-hooks")]
                    if armed {
                        panic!("test hook: injected panic");
                    }
                    tick_one(conf, now, ntp, sockets, counters, events, offload)
                });
                if let Err(panic) = ticked {
                    failed.push((ci, panic));
                }
                conf.next_tick = next_tick(due, now, conf.core.slack(due));
            }
            next = Some(next.map_or(conf.next_tick, |n| n.min(conf.next_tick)));
        }
        self.next_tick = next;
        for (ci, panic) in failed {
            WorkerCounters::add(&self.counters.panics, 1);
            self.fail_conference(ci, &panic);
        }
        self.counters
            .participants
            .store(participants, std::sync::atomic::Ordering::Relaxed);
        #[cfg(feature = "test-hooks")]
        std::thread::sleep(self.slow_ticks);
        let took = clock::now().saturating_duration_since(now);
        self.account_ticks(now, took);
    }

    /// Adds one run of ticks to the work of the current 20 ms; once 20 ms
    /// have passed, reports that work (scaled to 20 ms: a grid moving
    /// earlier puts two ticks in some windows) to the histogram and the
    /// overload guard.
    fn account_ticks(&mut self, now: Instant, took: Duration) {
        let (start, spent) = &mut self.tick_window;
        *spent += took;
        let begun = *start.get_or_insert(now.checked_sub(TICK).unwrap_or(now));
        let span = now.saturating_duration_since(begun);
        if span < TICK {
            return;
        }
        let work = spent.mul_f64(TICK.as_secs_f64() / span.as_secs_f64());
        self.tick_window = (Some(now), Duration::ZERO);
        self.config.tick_seconds.observe(work.as_secs_f64());
        let tick_us = self.overload.tick_us();
        self.counters
            .tick_us
            .store(tick_us, std::sync::atomic::Ordering::Relaxed);
        if let Some(change) = self.overload.observe(work) {
            for (_, conf) in self.conferences.iter_mut() {
                conf.core.degrade(change == Change::Degrade);
            }
            let flag = u64::from(change == Change::Degrade);
            self.counters
                .overloaded
                .store(flag, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(
                ?change,
                tick_ms = work.as_secs_f64() * 1e3,
                "mixer overload state changed"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grid_moves_a_millisecond_at_most_towards_the_aim() {
        let due = Instant::now();
        let ms = |m: u64| Duration::from_millis(m);
        let step = |slack| next_tick(due, due, slack).duration_since(due);
        assert_eq!(step(None), TICK, "nobody mixed: the grid stays");
        assert_eq!(step(Some(ms(10))), TICK - SLEW, "too late: earlier, by SLEW");
        assert_eq!(
            step(Some(AIM + Duration::from_micros(300))),
            TICK - Duration::from_micros(300)
        );
        assert_eq!(step(Some(AIM)), TICK);
        assert_eq!(
            step(Some(Duration::ZERO)),
            TICK + SLEW,
            "too close to the packet: later"
        );
        assert_eq!(
            next_tick(due, due + ms(200), None),
            due + ms(220),
            "far behind: a new grid"
        );
    }
}
