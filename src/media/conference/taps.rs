//! Taps on a conference: the mix, or one participant's voice and what it
//! hears, handed to an application each tick; and the application's own
//! audio mixed in as one more voice (see `media::tap`).

use super::*;
use crate::media::mixer::Mixes;
use crate::media::tap::{Framer, Out, Playout, Tap, TapHandle, Track};

/// Mixer ids from here up are applications' voices, never participants'.
pub const APP_BASE: ParticipantId = 0xFFFF_0000;

/// Where an application's audio goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Back {
    /// Nowhere: it only listens.
    #[default]
    None,
    /// Into the conference (or the tapped call leg).
    Speak,
    /// Into what the tapped participant alone hears.
    Whisper,
}

/// Where on a conference a tap listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "participant")]
pub enum TapPoint {
    /// What the conference sounds like (without the application's own voice).
    Mix,
    /// One participant: what it says (inbound) and what it hears (outbound).
    Participant(ParticipantId),
}

pub(super) struct ConfTap {
    id: u64,
    point: TapPoint,
    /// `tracks[0]`: inbound, `tracks[1]`: outbound.
    tracks: [bool; 2],
    tap: TapHandle,
    framers: [Framer; 2],
    /// The application's audio, mixed in when it sends some.
    playout: Option<Playout>,
    playing: bool,
    /// Its audio goes to the tapped participant alone.
    whisper: bool,
}

impl ConfTap {
    /// The application's id in the mixer.
    fn voice(&self) -> ParticipantId {
        APP_BASE | (self.id as u32 & 0xFFFF)
    }

    /// Its audio this tick, if it is playing any to everyone.
    pub(super) fn speaking(&self) -> Option<(ParticipantId, &[f32], f32)> {
        let p = self.playout.as_ref().filter(|_| self.playing && !self.whisper)?;
        Some((self.voice(), p.frame.as_slice(), 1.0))
    }

    fn whispers_to(&self, pid: ParticipantId) -> bool {
        self.whisper && self.point == TapPoint::Participant(pid)
    }
}

/// What participant `pid` hears this tick with the applications
/// whispering to it: `heard` plus their audio, into `out`. False when none
/// whispers to it. While one does (even between its sentences), the
/// participant has its own encoder, so it does not switch back and forth.
pub(super) fn whisper(taps: &[ConfTap], pid: ParticipantId, heard: &[f32], out: &mut Vec<f32>) -> bool {
    if !taps.iter().any(|t| t.whispers_to(pid)) {
        return false;
    }
    out.clear();
    out.extend_from_slice(heard);
    for t in taps.iter().filter(|t| t.whispers_to(pid) && t.playing) {
        if let Some(p) = &t.playout {
            for (s, x) in out.iter_mut().zip(&p.frame) {
                *s = (*s + x).clamp(-1.0, 1.0);
            }
        }
    }
    true
}

impl Conference {
    /// Starts tap `id` at `point`; `back`: the application's audio is
    /// mixed into the conference, or (`Back::Whisper`) into what the
    /// tapped participant alone hears.
    pub fn add_tap(
        &mut self,
        id: u64,
        point: TapPoint,
        tracks: [bool; 2],
        back: Back,
        tap: std::sync::Arc<Tap>,
    ) -> Result<(), String> {
        if back == Back::Whisper && point == TapPoint::Mix {
            return Err("a whisper goes to one participant".into());
        }
        if let TapPoint::Participant(pid) = point {
            let i = *self.index.get(&pid).ok_or_else(|| format!("no participant {pid}"))?;
            // Its voice is decoded every tick, mixed or not.
            self.participants[i].tapped |= tracks[0];
        }
        self.taps.push(ConfTap {
            id,
            point,
            tracks,
            tap: TapHandle(tap),
            framers: [Framer::new(Track::Inbound), Framer::new(Track::Outbound)],
            playout: (back != Back::None).then(|| Playout::new(self.mix_rate)),
            playing: false,
            whisper: back == Back::Whisper,
        });
        Ok(())
    }

    /// Stops tap `id`; false if there is none.
    pub fn remove_tap(&mut self, id: u64) -> bool {
        let before = self.taps.len();
        self.taps.retain(|t| t.id != id);
        self.retap();
        before != self.taps.len()
    }

    /// Taps on a participant that left end with it.
    pub(super) fn untap_participant(&mut self, pid: ParticipantId) {
        self.taps.retain(|t| t.point != TapPoint::Participant(pid));
        self.retap();
    }

    fn retap(&mut self) {
        for p in &mut self.participants {
            p.tapped = self
                .taps
                .iter()
                .any(|t| t.tracks[0] && t.point == TapPoint::Participant(p.id));
        }
    }

    /// Before the mix: each application's audio for this tick. Taps whose
    /// task ended (a playback finished, a recording failed) go first.
    pub(super) fn play_taps(&mut self) {
        if self.taps.iter().any(|t| t.tap.is_closed()) {
            self.taps.retain(|t| !t.tap.is_closed());
            self.retap();
        }
        for t in &mut self.taps {
            if let Some(p) = &mut t.playout {
                t.playing = p.next(&t.tap);
            }
        }
    }

    pub fn tap_count(&self) -> usize {
        self.taps.len()
    }
}

/// What a tap takes from a tick: the participants and their frames, who
/// is mixed, the key presses since the last tick.
pub(super) struct TickView<'a> {
    pub participants: &'a [Participant],
    pub index: &'a HashMap<ParticipantId, usize>,
    pub active: &'a [ParticipantId],
    pub zeros: &'a [f32],
    pub events: &'a [ConfEvent],
    pub mix_rate: u32,
}

/// After the mix: each tap's frames, and the key presses it hears of.
pub(super) fn feed_taps(taps: &mut [ConfTap], v: TickView<'_>, mixes: &Mixes, now: Instant) {
    for t in taps.iter_mut().filter(|t| t.tap.wants()) {
        let (inbound, outbound): (Option<&[f32]>, Option<&[f32]>) = match t.point {
            // The mix's outbound track: the application's own voice, as played.
            TapPoint::Mix => {
                let own = match &t.playout {
                    Some(p) if t.playing => p.frame.as_slice(),
                    _ => v.zeros,
                };
                (Some(mixes.get(MixId::Minus(t.voice()))), Some(own))
            }
            TapPoint::Participant(pid) => {
                let Some(p) = v.index.get(&pid).and_then(|&i| v.participants.get(i)) else {
                    continue;
                };
                let hears = if v.active.contains(&pid) {
                    MixId::Minus(pid)
                } else {
                    MixId::Shared
                };
                (Some(p.frame(v.zeros)), Some(mixes.get(hears)))
            }
        };
        for (k, audio) in [inbound, outbound].into_iter().enumerate() {
            if let (true, Some(a)) = (t.tracks[k], audio) {
                t.framers[k].push(a, v.mix_rate, now, &t.tap);
            }
        }
        for e in v.events {
            if let ConfEvent::Dtmf { participant, digit } = *e {
                if t.point == TapPoint::Mix || t.point == TapPoint::Participant(participant) {
                    t.tap.push(Out::Dtmf(digit));
                }
            }
        }
    }
}
