//! One playback's task: a WAV file's samples, a tone or silence, handed to
//! a conference's worker 20 ms at a time through the tap's return ring (as
//! an application's voice is), once or in a loop, until it ends or is
//! stopped.

use super::backlog::Backlog;
use super::{Owner, Registry};
use crate::media::tap::Tap;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// What is played: samples at `rate`.
#[derive(Clone, PartialEq)]
pub struct Source {
    pub rate: u32,
    pub pcm: Arc<Vec<i16>>,
    /// Times to play it; 0: until stopped.
    pub times: u32,
    /// The file's name, or `tone`.
    pub name: String,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} samples at {} Hz)", self.name, self.pcm.len(), self.rate)
    }
}

impl Source {
    /// `ms` of a sine at `freq` Hz (0: silence), at 8 kHz, amplitude 0.3.
    pub fn tone(freq: u32, ms: u32, times: u32) -> Source {
        let n = 8 * ms as usize;
        let w = 2.0 * std::f32::consts::PI * freq as f32 / 8000.0;
        let pcm = (0..n).map(|i| (0.3 * 32767.0 * (w * i as f32).sin()) as i16).collect();
        Source {
            rate: 8000,
            pcm: Arc::new(pcm),
            times,
            name: if freq == 0 {
                "silence".into()
            } else {
                format!("tone {freq} Hz")
            },
        }
    }
}

pub(super) async fn run(reg: &Registry, id: &str, owner: &Owner, tap: Arc<Tap>, src: Source) {
    let mut back = Backlog::new(src.rate);
    let second = src.rate as usize;
    let mut at = 0usize;
    // Plays left after this one (0 with `times` 0: for ever).
    let mut left = src.times.saturating_sub(1);
    let forever = src.times == 0;
    let mut pace = tokio::time::interval(Duration::from_millis(20));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let finished = loop {
        if tap.is_closed() {
            break false;
        }
        // About a second queued ahead of the worker.
        while back.queued() < second && !src.pcm.is_empty() && (at < src.pcm.len() || forever || left > 0) {
            if at >= src.pcm.len() {
                at = 0;
                left = left.saturating_sub(1);
            }
            let end = (at + second).min(src.pcm.len());
            back.audio(&src.pcm[at..end]);
            at = end;
        }
        let done = at >= src.pcm.len() && !forever && left == 0;
        if done {
            back.pad_to_frame();
        }
        back.top_up(&tap);
        if done && !back.waiting() && tap.back_len() == 0 {
            break true;
        }
        pace.tick().await;
    };
    tap.close();
    let event = if finished {
        "playback_finished"
    } else {
        "playback_stopped"
    };
    let mut body = json!({ "event": event, "playback_id": id, "source": src.name });
    if let Owner::Conference(c) = owner {
        body["conference"] = json!(c);
    }
    reg.report(owner, body);
}
