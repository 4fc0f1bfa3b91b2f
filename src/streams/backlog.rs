//! The application's audio and marks not yet handed to the worker, kept
//! in order and bounded: audio as samples (30 s at most, the oldest let go
//! first), each mark at the sample count where it stands.

use crate::media::tap::{Back, Tap, FRAME_MAX};
use std::collections::{HashMap, VecDeque};

/// The application's audio waiting to be played at most; older goes first.
pub const BACKLOG_SECONDS: usize = 30;
/// Marks waiting for their audio at most; more are not kept.
pub const MAX_MARKS: usize = 1024;

/// The backlog of one connection.
pub struct Backlog {
    rate: usize,
    pcm: VecDeque<i16>,
    /// Samples taken from the front so far (positions are counted from the start).
    taken: u64,
    pub marks: HashMap<u64, String>,
    order: VecDeque<(u64, u64)>,
    next_mark: u64,
}

impl Backlog {
    pub fn new(rate: u32) -> Self {
        Backlog {
            rate: rate as usize,
            pcm: VecDeque::new(),
            taken: 0,
            marks: HashMap::new(),
            order: VecDeque::new(),
            next_mark: 0,
        }
    }

    fn frame(&self) -> usize {
        (self.rate / 50).min(FRAME_MAX)
    }

    /// Samples not yet handed to the worker.
    pub fn queued(&self) -> usize {
        self.pcm.len()
    }

    pub fn waiting(&self) -> bool {
        !self.pcm.is_empty() || !self.order.is_empty()
    }

    /// Pads what is queued with silence to a whole frame: the end of a
    /// file plays (a partial frame otherwise waits for more audio).
    pub fn pad_to_frame(&mut self) {
        let frame = self.frame();
        let part = self.pcm.len() % frame;
        if part != 0 {
            self.pcm.extend(std::iter::repeat_n(0, frame - part));
        }
    }

    /// Adds audio; returns the samples let go from the front to stay bounded.
    pub fn audio(&mut self, pcm: &[i16]) -> usize {
        self.pcm.extend(pcm);
        let over = self.pcm.len().saturating_sub(self.rate * BACKLOG_SECONDS);
        self.pcm.drain(..over);
        self.taken += over as u64;
        over
    }

    pub fn mark(&mut self, name: String) {
        if self.marks.len() >= MAX_MARKS {
            return;
        }
        self.next_mark += 1;
        self.marks.insert(self.next_mark, name);
        self.order
            .push_back((self.taken + self.pcm.len() as u64, self.next_mark));
    }

    /// Hands the worker what fits in its ring, in order.
    pub fn top_up(&mut self, tap: &Tap) {
        let frame = self.frame();
        while tap.back_len() < crate::media::tap::BACK_FRAMES {
            if let Some(&(_, id)) = self.order.front().filter(|(at, _)| *at <= self.taken) {
                if tap.offer_back(Back::Mark(id)).is_err() {
                    return;
                }
                self.order.pop_front();
                continue;
            }
            // A partial frame goes out only when a mark waits behind it.
            let n = self.pcm.len().min(frame);
            if n == 0 || (n < frame && self.order.is_empty()) {
                return;
            }
            let mut pcm = [0i16; FRAME_MAX];
            for (d, s) in pcm.iter_mut().zip(self.pcm.drain(..n)) {
                *d = s;
            }
            self.taken += n as u64;
            let b = Back::Audio {
                rate: self.rate as u32,
                len: frame,
                pcm,
            };
            if tap.offer_back(b).is_err() {
                return; // cannot happen: room was checked
            }
        }
    }

    /// `clear`: nothing more of what was sent is played; the names of the
    /// marks that were waiting, to echo at once.
    pub fn clear(&mut self, tap: &Tap) -> Vec<String> {
        let mut ids = tap.clear_back();
        ids.extend(self.order.drain(..).map(|(_, id)| id));
        self.taken += self.pcm.len() as u64;
        self.pcm.clear();
        ids.into_iter().filter_map(|id| self.marks.remove(&id)).collect()
    }
}

#[cfg(test)]
mod tests;
