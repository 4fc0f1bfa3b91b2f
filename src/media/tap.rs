//! Taps: audio leaving the media path for an application (a WebSocket
//! stream) and audio the application sends back. The worker never waits on
//! one: it pushes 20 ms frames of 16-bit PCM into a bounded ring, where the
//! oldest frame gives way when the application falls behind (counted), and
//! takes at most one frame per 20 ms from a second ring the stream's task
//! keeps topped up. Both rings are allocated once, when the tap starts.

use crate::media::resample::Resampler;
use crossbeam_queue::ArrayQueue;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// Samples in the largest frame: 20 ms at 48 kHz.
pub const FRAME_MAX: usize = 960;
/// Frames a tap holds for its application: one second.
pub const OUT_FRAMES: usize = 50;
/// Frames of the application's audio queued for the worker: 200 ms (the
/// stream's task holds the rest, so that `clear` is heard at once).
pub const BACK_FRAMES: usize = 10;

/// Whose audio a frame is, from the tapped party's side: what it says
/// (`Inbound`, as Twilio names it) or what it hears (`Outbound`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Track {
    Inbound,
    Outbound,
}

/// 20 ms of mono PCM at `rate`.
#[derive(Clone)]
pub struct Frame {
    pub track: Track,
    pub rate: u32,
    pub len: usize,
    pub pcm: [i16; FRAME_MAX],
    /// When the packet that completed it arrived (or the mix was made).
    pub at: Instant,
}

impl Frame {
    pub fn samples(&self) -> &[i16] {
        &self.pcm[..self.len.min(FRAME_MAX)]
    }
}

/// What a tap hands its application. Frames stay inline: the ring's slots
/// are allocated once, and a boxed frame would allocate per 20 ms.
#[allow(clippy::large_enum_variant)]
pub enum Out {
    Audio(Frame),
    /// A key press (RFC 4733) on the tapped leg, at its end.
    Dtmf(char),
    /// Everything the application sent before mark `n` has been played.
    Played(u64),
}

/// What the application sends back, in order (inline, as `Out`).
#[allow(clippy::large_enum_variant)]
pub enum Back {
    /// 20 ms of mono PCM at `rate` to play.
    Audio {
        rate: u32,
        len: usize,
        pcm: [i16; FRAME_MAX],
    },
    Mark(u64),
}

/// The rings between one worker and one stream task.
pub struct Tap {
    out: ArrayQueue<Out>,
    back: ArrayQueue<Back>,
    /// Frames pushed out over the oldest one (the application fell behind).
    pub dropped: AtomicU64,
    /// The worker let go of the tap (the call, participant or conference
    /// ended, or the stream was stopped).
    closed: AtomicBool,
    /// Nothing is taken while paused (a recording's pause): the worker
    /// skips the tap's decoding too.
    paused: AtomicBool,
    wake: tokio::sync::Notify,
}

impl Default for Tap {
    fn default() -> Self {
        Tap {
            out: ArrayQueue::new(OUT_FRAMES),
            back: ArrayQueue::new(BACK_FRAMES),
            dropped: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
        }
    }
}

impl Tap {
    /// Worker side: hands `item` on, the oldest one making room if full.
    pub fn push(&self, item: Out) {
        if self.out.force_push(item).is_some() {
            self.dropped.fetch_add(1, Relaxed);
        }
        self.wake.notify_one();
    }

    /// Worker side: the next thing the application sent back.
    pub fn take_back(&self) -> Option<Back> {
        self.back.pop()
    }

    /// Task side: the next item for the application.
    pub fn pop(&self) -> Option<Out> {
        self.out.pop()
    }

    /// Task side: until something was pushed or the tap closed.
    pub async fn wait(&self) {
        self.wake.notified().await
    }

    /// Task side: queues `b` for the worker; gives it back when full.
    #[allow(clippy::result_large_err)]
    pub fn offer_back(&self, b: Back) -> Result<(), Back> {
        self.back.push(b)
    }

    /// Task side: frames queued for the worker.
    pub fn back_len(&self) -> usize {
        self.back.len()
    }

    /// Task side (`clear`): takes back what the worker has not played;
    /// returns the marks among it.
    pub fn clear_back(&self) -> Vec<u64> {
        std::iter::from_fn(|| self.back.pop())
            .filter_map(|b| match b {
                Back::Mark(m) => Some(m),
                Back::Audio { .. } => None,
            })
            .collect()
    }

    /// Worker side: whether to hand this tap anything now.
    pub fn wants(&self) -> bool {
        !self.closed.load(Relaxed) && !self.paused.load(Relaxed)
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(Relaxed)
    }

    /// Pauses or resumes, and wakes the task so that it notes when.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Relaxed);
        self.wake.notify_one();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Relaxed)
    }

    /// Either side: no more audio flows through this tap.
    pub fn close(&self) {
        self.closed.store(true, Relaxed);
        self.wake.notify_one();
    }
}

/// The worker's hold on a tap: dropping it (its call or conference ended)
/// closes the tap, so the stream's task ends too.
pub struct TapHandle(pub std::sync::Arc<Tap>);

impl Drop for TapHandle {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl std::ops::Deref for TapHandle {
    type Target = Tap;
    fn deref(&self) -> &Tap {
        &self.0
    }
}

/// Cuts audio of any length into 20 ms frames for one track.
pub struct Framer {
    pub track: Track,
    rate: u32,
    len: usize,
    pcm: [i16; FRAME_MAX],
}

impl Framer {
    pub fn new(track: Track) -> Self {
        Framer {
            track,
            rate: 8000,
            len: 0,
            pcm: [0; FRAME_MAX],
        }
    }

    /// Adds `audio` (full scale 1.0) at `rate`; each whole frame goes to `tap`.
    pub fn push(&mut self, audio: &[f32], rate: u32, at: Instant, tap: &Tap) {
        let frame = ((rate / 50) as usize).clamp(1, FRAME_MAX);
        if rate != self.rate {
            // A new codec: what was cut at the old rate is let go.
            self.rate = rate;
            self.len = 0;
        }
        for &x in audio {
            self.pcm[self.len] = (x * 32768.0).clamp(-32768.0, 32767.0) as i16;
            self.len += 1;
            if self.len == frame {
                tap.push(Out::Audio(Frame {
                    track: self.track,
                    rate,
                    len: frame,
                    pcm: self.pcm,
                    at,
                }));
                self.len = 0;
            }
        }
    }
}

/// The application's audio, as the worker plays it: one frame per 20 ms at
/// the rate it is mixed at, marks echoed once the audio before them played.
pub struct Playout {
    rate: u32,
    up: Option<(u32, Resampler)>,
    scratch: Vec<f32>,
    pub frame: Vec<f32>,
}

impl Playout {
    pub fn new(rate: u32) -> Self {
        Playout {
            rate,
            up: None,
            scratch: Vec::with_capacity(FRAME_MAX),
            frame: Vec::with_capacity(FRAME_MAX),
        }
    }

    /// The rate frames come at.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// This tick's audio from `tap` into `frame`; false when there is none.
    /// Marks met before it are echoed: what preceded them has been played.
    pub fn next(&mut self, tap: &Tap) -> bool {
        loop {
            match tap.take_back() {
                None => return false,
                Some(Back::Mark(m)) => tap.push(Out::Played(m)),
                Some(Back::Audio { rate, len, pcm }) => {
                    self.scratch.clear();
                    let n = len.min(FRAME_MAX);
                    self.scratch.extend(pcm[..n].iter().map(|&s| s as f32 / 32768.0));
                    return self.convert(rate);
                }
            }
        }
    }

    fn convert(&mut self, from: u32) -> bool {
        let want = (self.rate / 50) as usize;
        self.frame.clear();
        if from == self.rate {
            self.frame.extend_from_slice(&self.scratch);
        } else {
            if self.up.as_ref().is_none_or(|(r, _)| *r != from) {
                let Ok(r) = Resampler::new(from, self.rate, (from / 50) as usize) else {
                    return false;
                };
                self.up = Some((from, r));
            }
            if let Some((_, r)) = &mut self.up {
                self.frame.extend_from_slice(r.process(&self.scratch));
            }
        }
        self.frame.resize(want, 0.0);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_ring_drops_the_oldest_and_counts_it() {
        let tap = Tap::default();
        let mut f = Framer::new(Track::Inbound);
        let now = Instant::now();
        for i in 0..OUT_FRAMES + 5 {
            f.push(&[i as f32 / 1000.0; 160], 8000, now, &tap);
        }
        assert_eq!(tap.dropped.load(Relaxed), 5);
        match tap.pop() {
            Some(Out::Audio(fr)) => assert_eq!(fr.samples()[0], (5.0f32 / 1000.0 * 32768.0) as i16),
            _ => panic!("expected audio"),
        }
    }

    #[test]
    fn ten_ms_packets_make_whole_frames() {
        let tap = Tap::default();
        let mut f = Framer::new(Track::Outbound);
        for _ in 0..3 {
            f.push(&[0.5; 80], 8000, Instant::now(), &tap);
        }
        assert!(matches!(tap.pop(), Some(Out::Audio(fr)) if fr.len == 160 && fr.track == Track::Outbound));
        assert!(tap.pop().is_none(), "half a frame waits for the rest");
    }

    #[test]
    fn marks_are_echoed_after_the_audio_before_them() {
        let tap = Tap::default();
        let audio = || Back::Audio {
            rate: 8000,
            len: 160,
            pcm: [1000; FRAME_MAX],
        };
        assert!(tap.offer_back(audio()).is_ok());
        assert!(tap.offer_back(Back::Mark(7)).is_ok());
        let mut p = Playout::new(48000);
        assert!(p.next(&tap));
        assert_eq!(p.frame.len(), 960);
        assert!(tap.pop().is_none(), "the mark waits until its audio has played");
        assert!(!p.next(&tap));
        assert!(matches!(tap.pop(), Some(Out::Played(7))));
    }

    #[test]
    fn clear_returns_the_marks_it_drops() {
        let tap = Tap::default();
        let _ = tap.offer_back(Back::Mark(1));
        let _ = tap.offer_back(Back::Audio {
            rate: 8000,
            len: 160,
            pcm: [0; FRAME_MAX],
        });
        let _ = tap.offer_back(Back::Mark(2));
        assert_eq!(tap.clear_back(), vec![1, 2]);
        assert!(tap.take_back().is_none());
    }

    #[test]
    fn a_dropped_handle_closes_the_tap() {
        let tap = std::sync::Arc::new(Tap::default());
        drop(TapHandle(tap.clone()));
        assert!(tap.is_closed());
    }
}
