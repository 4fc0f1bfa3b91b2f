//! One conference's media: per participant a jitter buffer, a decoder and a
//! resampler to the mix rate; per tick, active-speaker selection, the shared
//! mix and the mix-minus of each speaker; each distinct (mix, codec) is
//! encoded once and packetized per participant (own SSRC, sequence,
//! timestamp). Pure: the worker passes packets and `now`, and sends what
//! `tick` hands back. `input.rs` takes what participants send (RTP, DTMF,
//! RTCP); `tick.rs` mixes, encodes and sends, and schedules RTCP reports.

mod input;
mod taps;
#[cfg(test)]
mod tests;
mod tick;

pub use taps::{Back, TapPoint, APP_BASE};

use crate::media::codec::{CodecKind, CodecSpec, Decoder, Encoder, MAX_PAYLOAD};
use crate::media::jitter::{JitterBuffer, Pop};
use crate::media::mixer::estimate;
use crate::media::mixer::level::{dbov, SILENCE_DBOV};
use crate::media::mixer::speakers::{SpeakerConfig, SpeakerEvent, Speakers};
use crate::media::mixer::{MixId, MixMinus, ParticipantId};
use crate::media::resample::Resampler;
use crate::media::stats::{RtpStats, StatsReport};
use crate::wire::rtcp::{self, ReportBlock, SenderInfo};
use crate::wire::rtp::{write_header, RtpView, RTP_HEADER_LEN};
use serde::Serialize;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The mixer's tick and frame length.
pub const TICK_MS: u32 = 20;

/// The SSRC of the mix a participant receives: fixed by the conference's
/// key and the participant id, so the answer can state it (`a=ssrc`) and a
/// restored conference keeps it.
pub fn participant_ssrc(key: u64, pid: u32) -> u32 {
    (key as u32).wrapping_mul(2654435761) ^ pid.wrapping_mul(40503)
}
/// RFC 6464 levels (in -dBov) at or below which a packet counts as silence:
/// quieter than the speaker detector's off threshold (-52 dBov).
const SILENT_LEVEL: u8 = 55;
/// RFC 3550's minimum RTCP interval; each report is sent at 0.5..1.5 times it.
const RTCP_INTERVAL: Duration = Duration::from_secs(5);
/// Digits reported per participant at most every this often (ITU-T Q.24
/// allows 10 digits per second; people press far slower).
/// RTT and loss samples per participant at most every this often (RFC 3550
/// asks for reports every 5 s; a participant sending more adds nothing).
const RTCP_SAMPLE_GAP: Duration = Duration::from_secs(1);
/// CNAME in chorus's SDES items.
const CNAME: &str = "chorus";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ConfEvent {
    StartedSpeaking { participant: ParticipantId },
    StoppedSpeaking { participant: ParticipantId },
    Dtmf { participant: ParticipantId, digit: char },
}

struct Participant {
    id: ParticipantId,
    spec: CodecSpec,
    jitter: JitterBuffer,
    decoder: Decoder,
    up: Resampler,
    decoded: Vec<f32>,
    /// Decoded audio at the mix rate not yet mixed (ptime other than 20 ms).
    fifo: Vec<f32>,
    /// The FIFO holds decoded audio (not only known silence).
    fifo_audio: bool,
    /// This tick's frame at the mix rate, unless `frame_silent`.
    frame: Vec<f32>,
    frame_silent: bool,
    /// Samples of silence due after the FIFO's audio (packets not decoded).
    silent: usize,
    muted: bool,
    deaf: bool,
    gain: f32,
    ssrc: u32,
    seq: u16,
    ts: u32,
    rx: RtpStats,
    sent: u64,
    concealed: u64,
    /// Packets not decoded because their audio level said silence.
    skipped: u64,
    /// Packets not decoded for the mix because the participant was not
    /// mixed (a header level or the estimate stood in for it).
    undecoded: u64,
    /// Packets whose level was estimated (see `mixer::estimate`).
    estimated: u64,
    /// The level (-dBov) of its last decoded frame, and whether its last
    /// Opus packet said voice: between refreshes a continuing voice is
    /// taken at that level (see `mixer::estimate::VOICE_REFRESH`).
    voice_level: Option<u8>,
    voiced: bool,
    sent_octets: u64,
    /// Middle 32 bits of the NTP time of the participant's last SR, and when it came.
    last_sr: Option<(u32, Instant)>,
    next_rtcp: Option<Instant>,
    rtcp_sent: u32,
    /// From the participant's reports about what chorus sends it.
    rtt_ms: Option<f64>,
    remote: Option<ReportBlock>,
    /// Its RFC 4733 key presses.
    dtmf: crate::media::dtmf::Detector,
    /// A tap takes its voice: decoded every tick, mixed or not.
    tapped: bool,
    /// The SSRC the participant sends with: a new one restarts its jitter buffer.
    remote_ssrc: Option<u32>,
    /// When this participant's reports last gave RTT and loss samples.
    sampled_at: Option<Instant>,
}

/// An encoder shared by every participant that hears `mix` in `kind`.
struct SharedEncoder {
    mix: MixId,
    kind: CodecKind,
    ptime_ms: u32,
    encoder: Encoder,
    down: Resampler,
    /// Mixed audio at the codec's rate waiting for a whole packet.
    pcm: Vec<f32>,
    /// This tick's payloads, back to back, and their lengths (a 10 ms
    /// ptime gives two per tick, 40 ms one every other tick).
    payloads: Vec<u8>,
    lens: Vec<usize>,
    encoded_at: u64,
}

/// What the API shows of a participant.
#[derive(Debug, Clone, Serialize)]
pub struct ParticipantReport {
    pub id: ParticipantId,
    pub codec: &'static str,
    pub payload_type: u8,
    pub muted: bool,
    pub deaf: bool,
    pub gain: f32,
    pub speaking: bool,
    pub mixed: bool,
    pub level_dbov: f32,
    pub received: StatsReport,
    pub jitter_buffer_ms: u64,
    pub concealed_frames: u64,
    pub silent_packets_skipped: u64,
    /// Packets not decoded for the mix while the participant was not among
    /// the mixed speakers (a header level or an estimate stood in).
    pub unmixed_packets_not_decoded: u64,
    /// Of those without a header level, packets whose level was estimated
    /// cheaply (G.711/G.722 without resampling, Opus by its VAD flag).
    pub unmixed_packets_estimated: u64,
    /// Round-trip time from the participant's reception reports (RFC 3550 6.4.1).
    pub rtt_ms: Option<f64>,
    /// What the participant reports about chorus's stream to it.
    pub remote_fraction_lost: Option<f64>,
    pub remote_cumulative_lost: Option<i32>,
    pub remote_jitter_ms: Option<f64>,
    pub late_packets: u64,
    pub sent_packets: u64,
}

pub struct Conference {
    mix_rate: u32,
    participants: Vec<Participant>,
    /// Participant id -> index in `participants` (every packet looks one up).
    index: HashMap<ParticipantId, usize>,
    /// Scratch reused from tick to tick: levels, speaker changes, who is mixed.
    levels: Vec<(ParticipantId, f32)>,
    speaker_events: Vec<SpeakerEvent>,
    active: Vec<ParticipantId>,
    /// An RTCP report being written.
    rtcp_buf: Vec<u8>,
    /// One frame of silence at the mix rate: a silent participant's frame.
    zeros: Vec<f32>,
    speakers: Speakers,
    mixer: MixMinus,
    encoders: Vec<SharedEncoder>,
    tick_no: u64,
    pub events: Vec<ConfEvent>,
    /// Encodes done in the last tick (one per distinct mix and codec).
    pub last_encodes: usize,
    /// Frames concealed since the conference started.
    pub concealed_total: u64,
    /// `max_active` as configured, while overload lowers it.
    configured_speakers: Option<usize>,
    /// Overload: participants not mixed are never decoded.
    shedding: bool,
    /// RTTs (s) and loss fractions from participants' reports, for metrics;
    /// the worker drains them.
    pub rtt_seconds: Vec<f64>,
    pub reported_loss: Vec<f64>,
    /// Applications listening (and maybe speaking) through taps.
    taps: Vec<taps::ConfTap>,
    /// A whispered-to participant's own mix, this tick.
    whispered: Vec<f32>,
}

/// Per-participant settings from the API; `None` leaves a setting as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Controls {
    pub muted: Option<bool>,
    pub deaf: Option<bool>,
    pub gain: Option<f32>,
}

impl Controls {
    /// The settings after `later` was applied on top of these.
    pub fn then(self, later: Controls) -> Controls {
        Controls {
            muted: later.muted.or(self.muted),
            deaf: later.deaf.or(self.deaf),
            gain: later.gain.or(self.gain),
        }
    }
}

impl Conference {
    /// A conference mixing at 48 kHz.
    pub fn new(speakers: SpeakerConfig) -> Self {
        Self::with_rate(speakers, 48000)
    }

    /// A conference mixing at `mix_rate` Hz (8000, 16000, 24000 or 48000):
    /// a lower rate costs less when every participant is narrowband.
    pub fn with_rate(speakers: SpeakerConfig, mix_rate: u32) -> Self {
        Conference {
            mix_rate,
            participants: Vec::new(),
            index: HashMap::new(),
            levels: Vec::new(),
            speaker_events: Vec::new(),
            active: Vec::new(),
            rtcp_buf: Vec::with_capacity(128),
            zeros: vec![0.0; (mix_rate * TICK_MS / 1000) as usize],
            speakers: Speakers::new(speakers),
            mixer: MixMinus::default(),
            encoders: Vec::new(),
            tick_no: 0,
            events: Vec::new(),
            last_encodes: 0,
            concealed_total: 0,
            configured_speakers: None,
            shedding: false,
            rtt_seconds: Vec::new(),
            reported_loss: Vec::new(),
            taps: Vec::new(),
            whispered: Vec::new(),
        }
    }

    pub const RATES: [u32; 4] = [8000, 16000, 24000, 48000];

    fn frame_len(&self) -> usize {
        (self.mix_rate * TICK_MS / 1000) as usize
    }

    pub fn len(&self) -> usize {
        self.participants.len()
    }

    pub fn is_empty(&self) -> bool {
        self.participants.is_empty()
    }

    pub fn join(&mut self, id: ParticipantId, spec: CodecSpec, ssrc: u32) -> Result<(), String> {
        // libopus decodes and encodes at any of the mix rates: Opus then
        // needs no resampler (its RTP clock stays 48 kHz).
        let spec = match spec.kind {
            CodecKind::Opus => CodecSpec {
                rate: self.mix_rate,
                ..spec
            },
            _ => spec,
        };
        let up = Resampler::new(spec.rate, self.mix_rate, spec.frame_samples())?;
        self.index.insert(id, self.participants.len());
        self.participants.push(Participant {
            id,
            spec,
            jitter: JitterBuffer::new(spec.clock_rate),
            decoder: Decoder::new(&spec)?,
            up,
            decoded: Vec::with_capacity(self.frame_len()),
            fifo: Vec::with_capacity(4 * self.frame_len()),
            fifo_audio: false,
            frame: Vec::with_capacity(4 * self.frame_len()),
            frame_silent: true,
            silent: 0,
            muted: false,
            deaf: false,
            gain: 1.0,
            ssrc,
            seq: (ssrc >> 16) as u16,
            ts: ssrc.rotate_left(7),
            rx: RtpStats::default(),
            sent: 0,
            concealed: 0,
            skipped: 0,
            undecoded: 0,
            estimated: 0,
            voice_level: None,
            voiced: false,
            sent_octets: 0,
            last_sr: None,
            next_rtcp: None,
            rtcp_sent: 0,
            rtt_ms: None,
            remote: None,
            dtmf: Default::default(),
            tapped: false,
            remote_ssrc: None,
            sampled_at: None,
        });
        Ok(())
    }

    pub fn leave(&mut self, id: ParticipantId) -> bool {
        // Whoever was speaking stops: every started has its stopped.
        if self.speakers.is_speaking(id) {
            self.events.push(ConfEvent::StoppedSpeaking { participant: id });
        }
        let before = self.participants.len();
        self.participants.retain(|p| p.id != id);
        self.index = self.participants.iter().enumerate().map(|(i, p)| (p.id, i)).collect();
        self.speakers.remove(id);
        self.encoders
            .retain(|e| e.mix != MixId::Minus(id) && e.mix != MixId::Own(id));
        self.untap_participant(id);
        before != self.participants.len()
    }

    /// Under overload, mix at most `n` speakers (`None`: the configured number).
    pub fn limit_speakers(&mut self, n: Option<usize>) {
        let configured = *self.configured_speakers.get_or_insert(self.speakers.config.max_active);
        self.speakers.config.max_active = n.unwrap_or(configured).min(configured);
    }

    /// Degraded for overload (see `media::overload`): one speaker mixed,
    /// nobody else decoded.
    pub fn degrade(&mut self, on: bool) {
        self.limit_speakers(on.then_some(1));
        self.shedding = on;
    }

    pub fn control(&mut self, id: ParticipantId, c: Controls) -> bool {
        let Some(p) = self.index.get(&id).map(|&i| &mut self.participants[i]) else {
            return false;
        };
        if let Some(m) = c.muted {
            p.muted = m;
        }
        if let Some(d) = c.deaf {
            p.deaf = d;
        }
        if let Some(g) = c.gain {
            p.gain = g.clamp(0.0, 4.0);
        }
        true
    }

    pub fn report(&self, now: Instant) -> Vec<ParticipantReport> {
        self.participants
            .iter()
            .map(|p| ParticipantReport {
                id: p.id,
                codec: p.spec.name(),
                payload_type: p.spec.pt,
                muted: p.muted,
                deaf: p.deaf,
                gain: p.gain,
                speaking: self.speakers.is_speaking(p.id),
                mixed: self.speakers.is_active(p.id),
                level_dbov: (self.speakers.level(p.id).unwrap_or(SILENCE_DBOV) * 10.0).round() / 10.0,
                received: p.rx.report(now),
                jitter_buffer_ms: p.jitter.target().as_millis() as u64,
                concealed_frames: p.concealed,
                silent_packets_skipped: p.skipped,
                unmixed_packets_not_decoded: p.undecoded,
                unmixed_packets_estimated: p.estimated,
                rtt_ms: p.rtt_ms.map(|r| (r * 10.0).round() / 10.0),
                remote_fraction_lost: p.remote.map(|b| b.fraction_lost as f64 / 256.0),
                remote_cumulative_lost: p.remote.map(|b| b.cumulative_lost),
                remote_jitter_ms: p.remote.map(|b| b.jitter as f64 * 1000.0 / p.spec.clock_rate as f64),
                late_packets: p.jitter.stats.late,
                sent_packets: p.sent,
            })
            .collect()
    }
}
