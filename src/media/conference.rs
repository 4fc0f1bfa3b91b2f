//! One conference's media: per participant a jitter buffer, a decoder and a
//! resampler to the mix rate; per tick, active-speaker selection, the shared
//! mix and the mix-minus of each speaker; each distinct (mix, codec) is
//! encoded once and packetized per participant (own SSRC, sequence,
//! timestamp). Pure: the worker passes packets and `now`, and sends what
//! `tick` hands back.

use super::codec::{CodecKind, CodecSpec, Decoder, Encoder, MAX_PAYLOAD};
use super::jitter::{JitterBuffer, Pop};
use super::mixer::level::{dbov, SILENCE_DBOV};
use super::mixer::speakers::{SpeakerConfig, SpeakerEvent, Speakers};
use super::mixer::{MixId, MixMinus, ParticipantId};
use super::resample::Resampler;
use super::stats::{RtpStats, StatsReport};
use crate::wire::rtcp::{self, ReportBlock, SenderInfo};
use crate::wire::rtp::{write_header, RtpView, RTP_HEADER_LEN};
use serde::Serialize;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The mixer's tick and frame length.
pub const TICK_MS: u32 = 20;
/// RFC 6464 levels (in -dBov) at or below which a packet counts as silence:
/// quieter than the speaker detector's off threshold (-52 dBov).
const SILENT_LEVEL: u8 = 55;
/// RFC 3550's minimum RTCP interval; each report is sent at 0.5..1.5 times it.
const RTCP_INTERVAL: Duration = Duration::from_secs(5);
/// Digits reported per participant at most every this often (ITU-T Q.24
/// allows 10 digits per second; people press far slower).
const DTMF_MIN_GAP: Duration = Duration::from_millis(80);
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
    /// This tick's frame at the mix rate.
    frame: Vec<f32>,
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
    /// Packets not decoded because the participant was not mixed (its
    /// header's audio level stood in for the decoded level).
    undecoded: u64,
    sent_octets: u64,
    /// Middle 32 bits of the NTP time of the participant's last SR, and when it came.
    last_sr: Option<(u32, Instant)>,
    next_rtcp: Option<Instant>,
    rtcp_sent: u32,
    /// From the participant's reports about what chorus sends it.
    rtt_ms: Option<f64>,
    remote: Option<ReportBlock>,
    /// Timestamp of the last DTMF event reported (RFC 4733 repeats the end).
    last_dtmf: Option<u32>,
    /// The SSRC the participant sends with: a new one restarts its jitter buffer.
    remote_ssrc: Option<u32>,
    /// When the last DTMF digit was reported: digits closer than
    /// `DTMF_MIN_GAP` are not reported (a flood of end events is not typing).
    dtmf_at: Option<Instant>,
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
    /// Packets not decoded while the participant was not among the mixed speakers.
    pub unmixed_packets_not_decoded: u64,
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
    /// RTTs (s) and loss fractions from participants' reports, for metrics;
    /// the worker drains them.
    pub rtt_seconds: Vec<f64>,
    pub reported_loss: Vec<f64>,
}

/// Per-participant settings from the API.
#[derive(Debug, Clone, Copy, Default)]
pub struct Controls {
    pub muted: Option<bool>,
    pub deaf: Option<bool>,
    pub gain: Option<f32>,
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
            speakers: Speakers::new(speakers),
            mixer: MixMinus::default(),
            encoders: Vec::new(),
            tick_no: 0,
            events: Vec::new(),
            last_encodes: 0,
            concealed_total: 0,
            configured_speakers: None,
            rtt_seconds: Vec::new(),
            reported_loss: Vec::new(),
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
            frame: vec![0.0; self.frame_len()],
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
            sent_octets: 0,
            last_sr: None,
            next_rtcp: None,
            rtcp_sent: 0,
            rtt_ms: None,
            remote: None,
            last_dtmf: None,
            remote_ssrc: None,
            dtmf_at: None,
        });
        Ok(())
    }

    pub fn leave(&mut self, id: ParticipantId) -> bool {
        let before = self.participants.len();
        self.participants.retain(|p| p.id != id);
        self.index = self.participants.iter().enumerate().map(|(i, p)| (p.id, i)).collect();
        self.speakers.remove(id);
        self.encoders.retain(|e| e.mix != MixId::Minus(id));
        before != self.participants.len()
    }

    /// Under overload, mix at most `n` speakers (`None`: the configured number).
    pub fn limit_speakers(&mut self, n: Option<usize>) {
        let configured = *self.configured_speakers.get_or_insert(self.speakers.config.max_active);
        self.speakers.config.max_active = n.unwrap_or(configured).min(configured);
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

    /// An RTP packet from participant `id` (source already checked).
    pub fn handle_rtp(&mut self, now: Instant, id: ParticipantId, bytes: &[u8]) {
        let Ok(v) = RtpView::parse(bytes) else { return };
        let Some(p) = self.index.get(&id).map(|&i| &mut self.participants[i]) else {
            return;
        };
        p.rx.on_rtp(
            now,
            bytes.len(),
            v.ssrc(),
            v.sequence(),
            v.timestamp(),
            p.spec.clock_rate,
        );
        if p.remote_ssrc.is_some_and(|s| s != v.ssrc()) {
            p.jitter.restart();
        }
        p.remote_ssrc = Some(v.ssrc());
        if Some(v.payload_type()) == p.spec.dtmf_pt {
            // RFC 4733: event, E|R|volume, duration. Report once, at the end.
            let pl = v.payload();
            let too_soon = p
                .dtmf_at
                .is_some_and(|at| now.saturating_duration_since(at) < DTMF_MIN_GAP);
            if pl.len() >= 4 && pl[1] & 0x80 != 0 && p.last_dtmf != Some(v.timestamp()) && !too_soon {
                p.last_dtmf = Some(v.timestamp());
                p.dtmf_at = Some(now);
                if let Some(digit) = dtmf_digit(pl[0]) {
                    self.events.push(ConfEvent::Dtmf { participant: id, digit });
                }
            }
            return; // never mixed into audio
        }
        if v.payload_type() == p.spec.pt {
            // RFC 6464: a packet the sender marks as silence is not decoded
            // (unless the participant is speaking: let its voice fade out).
            // An empty payload keeps its place in the jitter buffer.
            let level = p.spec.audio_level_id.and_then(|id| v.audio_level(id));
            let quiet = level.is_some_and(|l| l >= SILENT_LEVEL);
            if quiet && !self.speakers.is_speaking(id) {
                p.skipped += 1;
                p.jitter.push_with_level(now, v.sequence(), v.timestamp(), &[], level);
            } else {
                p.jitter
                    .push_with_level(now, v.sequence(), v.timestamp(), v.payload(), level);
            }
        }
    }

    /// An RTCP compound from participant `id`: remember its SR for our
    /// reports, and take RTT and loss from its blocks about our stream.
    /// `ntp_now` is the wall clock as a 64-bit NTP timestamp.
    pub fn handle_rtcp(&mut self, now: Instant, ntp_now: u64, id: ParticipantId, bytes: &[u8]) {
        let Ok(r) = rtcp::read_reports(bytes) else { return };
        let Some(p) = self.index.get(&id).map(|&i| &mut self.participants[i]) else {
            return;
        };
        if let Some(ntp) = r.sr_ntp {
            p.last_sr = Some(((ntp >> 16) as u32, now));
        }
        for b in r.blocks.iter().filter(|b| b.ssrc == p.ssrc) {
            p.remote = Some(*b);
            self.reported_loss.push(b.fraction_lost as f64 / 256.0);
            if b.lsr != 0 {
                let rtt = ((ntp_now >> 16) as u32).wrapping_sub(b.lsr).wrapping_sub(b.dlsr);
                // More than a minute is a clock mix-up, not a path.
                if rtt < 60 << 16 {
                    p.rtt_ms = Some(rtt as f64 * 1000.0 / 65536.0);
                    self.rtt_seconds.push(rtt as f64 / 65536.0);
                }
            }
        }
    }

    /// Sends due RTCP reports: an SR about what chorus sends each participant,
    /// with a reception block about what it receives, and an SDES CNAME.
    fn send_reports(&mut self, now: Instant, ntp_now: u64, send: &mut dyn FnMut(ParticipantId, bool, &[u8])) {
        let mut buf = Vec::with_capacity(128);
        for p in &mut self.participants {
            let due = *p.next_rtcp.get_or_insert(now + RTCP_INTERVAL / 2);
            if now < due {
                continue;
            }
            // 0.5..1.5 of the interval, varied per participant and report (RFC 3550 6.3.1).
            let spread = (p.ssrc ^ p.rtcp_sent.wrapping_mul(2654435761)) % 1000;
            p.next_rtcp = Some(now + RTCP_INTERVAL / 2 + RTCP_INTERVAL * spread / 1000);
            p.rtcp_sent += 1;
            let blocks: Vec<ReportBlock> = p
                .rx
                .reception()
                .map(|r| {
                    let (lsr, dlsr) = match p.last_sr {
                        Some((lsr, at)) => (lsr, (now.saturating_duration_since(at).as_secs_f64() * 65536.0) as u32),
                        None => (0, 0),
                    };
                    ReportBlock {
                        ssrc: r.ssrc,
                        fraction_lost: r.fraction_lost,
                        cumulative_lost: r.cumulative_lost,
                        highest_seq: r.extended_max_seq,
                        jitter: r.jitter,
                        lsr,
                        dlsr,
                    }
                })
                .into_iter()
                .collect();
            let info = SenderInfo {
                ntp: ntp_now,
                rtp_ts: p.ts,
                packets: p.sent as u32,
                octets: p.sent_octets as u32,
            };
            buf.clear();
            rtcp::write_report(&mut buf, p.ssrc, Some(info), &blocks, CNAME);
            send(p.id, true, &buf);
        }
    }

    /// One 20 ms tick: decode, select speakers, mix, encode once per mix and
    /// codec, and hand each participant's packet to `send` (`true`: RTCP).
    pub fn tick(&mut self, now: Instant, ntp_now: u64, send: &mut dyn FnMut(ParticipantId, bool, &[u8])) {
        self.tick_no += 1;
        let frame_len = self.frame_len();
        // Who was mixed last tick decides who is decoded this tick.
        self.active.clear();
        self.active.extend(self.speakers.active());
        self.levels.clear();
        for p in &mut self.participants {
            let mixed = self.active.contains(&p.id);
            let level = match p.fill_frame(now, frame_len, &mut self.concealed_total, mixed) {
                _ if p.muted => SILENCE_DBOV,
                Heard::Decoded => dbov(&p.frame),
                Heard::Level(l) => -(l as f32),
                Heard::Nothing => SILENCE_DBOV,
            };
            self.levels.push((p.id, level));
        }
        self.speaker_events.clear();
        self.speakers.update(&self.levels, &mut self.speaker_events);
        for e in &self.speaker_events {
            self.events.push(match *e {
                SpeakerEvent::Started(id) => ConfEvent::StartedSpeaking { participant: id },
                SpeakerEvent::Stopped(id) => ConfEvent::StoppedSpeaking { participant: id },
            });
        }
        self.active.clear();
        self.active.extend(self.speakers.active());
        let active = &self.active;
        let speakers: Vec<(ParticipantId, &[f32], f32)> = self
            .participants
            .iter()
            .filter(|p| !p.muted && active.contains(&p.id))
            .map(|p| (p.id, p.frame.as_slice(), p.gain))
            .collect();
        let mixes = self.mixer.mix(&speakers, frame_len);
        let mut encodes = 0;
        let mut packet = [0u8; RTP_HEADER_LEN + MAX_PAYLOAD];
        for p in &mut self.participants {
            let mix = if active.contains(&p.id) {
                MixId::Minus(p.id)
            } else {
                MixId::Shared
            };
            let (kind, ptime) = (p.spec.kind, p.spec.ptime_ms);
            let idx = match self
                .encoders
                .iter()
                .position(|e| e.mix == mix && e.kind == kind && e.ptime_ms == ptime)
            {
                Some(i) => i,
                None => {
                    let (Ok(encoder), Ok(down)) = (
                        Encoder::new(&p.spec),
                        Resampler::new(self.mix_rate, p.spec.rate, frame_len),
                    ) else {
                        continue;
                    };
                    self.encoders.push(SharedEncoder {
                        mix,
                        kind,
                        ptime_ms: ptime,
                        encoder,
                        down,
                        pcm: Vec::new(),
                        payloads: Vec::new(),
                        lens: Vec::new(),
                        encoded_at: 0,
                    });
                    self.encoders.len() - 1
                }
            };
            let enc = &mut self.encoders[idx];
            if enc.encoded_at != self.tick_no {
                enc.encoded_at = self.tick_no;
                enc.payloads.clear();
                enc.lens.clear();
                let chunk = enc.down.process(mixes.get(mix));
                enc.pcm.extend_from_slice(chunk);
                let n = p.spec.frame_samples();
                while enc.pcm.len() >= n {
                    let mut buf = [0u8; MAX_PAYLOAD];
                    let len = enc.encoder.encode(&enc.pcm[..n], &mut buf);
                    enc.payloads.extend_from_slice(&buf[..len]);
                    enc.lens.push(len);
                    enc.pcm.drain(..n);
                    encodes += 1;
                }
            }
            let mut at = 0;
            for &len in &enc.lens {
                // Sequence and timestamp run on through silence and deafness.
                let (seq, ts) = (p.seq, p.ts);
                p.seq = p.seq.wrapping_add(1);
                p.ts = p.ts.wrapping_add(p.spec.frame_ts());
                let payload = &enc.payloads[at..at + len];
                at += len;
                if p.deaf || len == 0 {
                    continue;
                }
                write_header(&mut packet, p.spec.pt, seq, ts, p.ssrc);
                packet[RTP_HEADER_LEN..RTP_HEADER_LEN + len].copy_from_slice(payload);
                send(p.id, false, &packet[..RTP_HEADER_LEN + len]);
                p.sent += 1;
                p.sent_octets += len as u64;
            }
        }
        // Encoders nobody used this tick (a speaker went quiet) are dropped.
        let tick = self.tick_no;
        self.encoders.retain(|e| e.encoded_at == tick);
        self.last_encodes = encodes;
        self.send_reports(now, ntp_now, send);
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

/// What a participant's frame holds this tick.
enum Heard {
    /// Decoded audio: measure its level.
    Decoded,
    /// Not decoded; the packets' RFC 6464 level (-dBov) stands for it.
    Level(u8),
    /// Nothing (silence, DTX, start-up).
    Nothing,
}

impl Participant {
    /// Fills `frame` with this tick's audio at the mix rate, decoding as many
    /// packets as its ptime needs (two of 10 ms, half of one of 40 ms...).
    /// Returns false when there was nothing to hear (silence, DTX, start-up).
    fn fill_frame(&mut self, now: Instant, frame_len: usize, concealed_total: &mut u64, mixed: bool) -> Heard {
        // Audio decoded on an earlier tick may still wait in the FIFO (ptime > 20).
        let mut heard = self.fifo_audio;
        let mut header_level: Option<u8> = None;
        while self.fifo.len() < frame_len {
            let n = self.spec.frame_samples();
            let payload = match self.jitter.pop(now) {
                // Known silence (RFC 6464): keep the time, decode nothing.
                Pop::Packet(pk) if pk.payload.is_empty() => {
                    let hi_len = frame_len * self.spec.ptime_ms as usize / TICK_MS as usize;
                    self.fifo.resize(self.fifo.len() + hi_len, 0.0);
                    continue;
                }
                // Not mixed, and the header says how loud: that is all the
                // speaker selection needs. Decode only those who are mixed.
                Pop::Packet(pk) if !mixed && pk.level.is_some() => {
                    let l = pk.level.unwrap_or(127);
                    header_level = Some(header_level.map_or(l, |h: u8| h.min(l)));
                    self.undecoded += 1;
                    let hi_len = frame_len * self.spec.ptime_ms as usize / TICK_MS as usize;
                    self.fifo.resize(self.fifo.len() + hi_len, 0.0);
                    continue;
                }
                Pop::Packet(pk) => Some(pk.payload),
                Pop::Lost => {
                    self.concealed += 1;
                    *concealed_total += 1;
                    // Opus in-band FEC: the next packet may carry this one.
                    let recovered = match self.jitter.peek_next() {
                        Some(next) => self.decoder.decode_fec(&next.payload, n, &mut self.decoded),
                        None => false,
                    };
                    if recovered {
                        let hi = self.up.process(&self.decoded);
                        self.fifo.extend_from_slice(hi);
                        heard = true;
                        continue;
                    }
                    None
                }
                Pop::Empty => break,
            };
            self.decoder.decode(payload.as_deref(), n, &mut self.decoded);
            let hi = self.up.process(&self.decoded);
            self.fifo.extend_from_slice(hi);
            heard = true;
        }
        let take = self.fifo.len().min(frame_len);
        self.frame.clear();
        self.frame.extend(self.fifo.drain(..take));
        self.frame.resize(frame_len, 0.0);
        self.fifo_audio = heard && !self.fifo.is_empty();
        match (heard, header_level) {
            (true, _) => Heard::Decoded,
            (false, Some(l)) => Heard::Level(l),
            (false, None) => Heard::Nothing,
        }
    }
}

fn dtmf_digit(event: u8) -> Option<char> {
    match event {
        0..=9 => Some((b'0' + event) as char),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some((b'A' + event - 12) as char),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec::negotiate;
    use crate::media::mixer::tests::tone_level;
    use crate::sdp::Sdp;
    use std::collections::HashMap;
    use std::time::Duration;

    fn spec(m: &str) -> CodecSpec {
        let s = format!("v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n{m}");
        negotiate(&Sdp::parse(&s).unwrap().media[0]).unwrap()
    }

    const PCMU: &str = "m=audio 1 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";
    const OPUS: &str = "m=audio 1 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n";
    const G722: &str = "m=audio 1 RTP/AVP 9\r\n";

    /// Runs a conference in virtual time: participant i sends a tone at
    /// `freqs[i]` (0 = silence) with codec `codecs[i]`; returns what each
    /// one heard in the last second, decoded, at the codec's rate.
    fn run(
        codecs: &[&str],
        freqs: &[f32],
        seconds: u32,
        mute: Option<u32>,
    ) -> (Vec<Vec<f32>>, Conference, Vec<CodecSpec>) {
        let t0 = Instant::now();
        let mut conf = Conference::new(SpeakerConfig::default());
        let specs: Vec<CodecSpec> = codecs.iter().map(|c| spec(c)).collect();
        let mut encoders: Vec<Encoder> = specs.iter().map(|s| Encoder::new(s).unwrap()).collect();
        let mut decoders: Vec<Decoder> = specs.iter().map(|s| Decoder::new(s).unwrap()).collect();
        for (i, s) in specs.iter().enumerate() {
            conf.join(i as u32, *s, 1000 + i as u32).unwrap();
        }
        if let Some(m) = mute {
            conf.control(
                m,
                Controls {
                    muted: Some(true),
                    ..Default::default()
                },
            );
        }
        let mut heard: Vec<Vec<f32>> = vec![Vec::new(); specs.len()];
        let ticks = seconds * 50;
        let mut last_seq: HashMap<u32, (u16, u32)> = HashMap::new();
        for k in 0..ticks {
            let now = t0 + Duration::from_millis(k as u64 * 20);
            for (i, s) in specs.iter().enumerate() {
                let n = s.frame_samples();
                let f = freqs[i];
                let pcm: Vec<f32> = (0..n)
                    .map(|j| 0.3 * (2.0 * std::f32::consts::PI * f * (k as usize * n + j) as f32 / s.rate as f32).sin())
                    .collect();
                let mut pkt = [0u8; 12 + MAX_PAYLOAD];
                let len = encoders[i].encode(&pcm, &mut pkt[12..]);
                write_header(&mut pkt, s.pt, k as u16, k * s.frame_ts(), 77 + i as u32);
                conf.handle_rtp(now, i as u32, &pkt[..12 + len]);
            }
            let mut out: Vec<(u32, Vec<u8>)> = Vec::new();
            conf.tick(now + Duration::from_millis(1), 0, &mut |id, rtcp, bytes| {
                if !rtcp {
                    out.push((id, bytes.to_vec()))
                }
            });
            for (id, bytes) in out {
                let v = RtpView::parse(&bytes).unwrap();
                let s = &specs[id as usize];
                if let Some((seq, ts)) = last_seq.insert(id, (v.sequence(), v.timestamp())) {
                    assert_eq!(v.sequence(), seq.wrapping_add(1), "sequence runs on");
                    assert_eq!(v.timestamp(), ts.wrapping_add(s.frame_ts()), "timestamp runs on");
                }
                let mut pcm = Vec::new();
                decoders[id as usize].decode(Some(v.payload()), s.frame_samples(), &mut pcm);
                if k >= ticks - 50 {
                    heard[id as usize].extend(pcm);
                }
            }
        }
        (heard, conf, specs)
    }

    fn lvl(heard: &[f32], spec: &CodecSpec, f: f32) -> f32 {
        tone_level(heard, spec.rate as f32, f)
    }

    #[test]
    fn everyone_hears_the_others_and_nobody_hears_themselves() {
        let (heard, conf, specs) = run(&[PCMU, PCMU, PCMU, PCMU], &[440.0, 1000.0, 0.0, 0.0], 3, None);
        for i in [2, 3] {
            assert!(lvl(&heard[i], &specs[i], 440.0) > 0.1, "listener {i} hears A");
            assert!(lvl(&heard[i], &specs[i], 1000.0) > 0.1, "listener {i} hears B");
        }
        assert!(
            lvl(&heard[0], &specs[0], 440.0) < 0.01 && lvl(&heard[0], &specs[0], 1000.0) > 0.1,
            "A hears only B"
        );
        assert!(
            lvl(&heard[1], &specs[1], 1000.0) < 0.01 && lvl(&heard[1], &specs[1], 440.0) > 0.1,
            "B hears only A"
        );
        // Two mix-minus plus one shared mix, all PCMU: three encodes for four listeners.
        assert_eq!(conf.last_encodes, 3);
    }

    #[test]
    fn mixed_codecs_share_nothing_but_the_mix() {
        let (heard, conf, specs) = run(&[OPUS, G722, PCMU, OPUS], &[440.0, 1000.0, 0.0, 0.0], 3, None);
        for i in [2, 3] {
            assert!(
                lvl(&heard[i], &specs[i], 440.0) > 0.1 && lvl(&heard[i], &specs[i], 1000.0) > 0.1,
                "listener {i}"
            );
        }
        assert!(lvl(&heard[0], &specs[0], 440.0) < 0.02 && lvl(&heard[0], &specs[0], 1000.0) > 0.1);
        assert!(lvl(&heard[1], &specs[1], 1000.0) < 0.02 && lvl(&heard[1], &specs[1], 440.0) > 0.1);
        // minus(A) in Opus, minus(B) in G.722, shared in PCMU and Opus.
        assert_eq!(conf.last_encodes, 4);
    }

    #[test]
    fn a_muted_participant_is_not_heard() {
        let (heard, _, specs) = run(&[PCMU, PCMU, PCMU], &[440.0, 1000.0, 0.0], 2, Some(0));
        assert!(lvl(&heard[2], &specs[2], 440.0) < 0.01, "muted A is not heard");
        assert!(lvl(&heard[2], &specs[2], 1000.0) > 0.1);
    }

    /// A sends a tone through 10% loss with swapped neighbours; B listens.
    /// Every 20 ms frame B hears carries the tone: no gaps.
    /// `floor`: the lowest tone level a frame may have (the tone is 0.3; a
    /// silent gap measures below 0.001).
    fn lossy(codec: &str, floor: f32) {
        let t0 = Instant::now();
        let mut conf = Conference::new(SpeakerConfig::default());
        let s = spec(codec);
        conf.join(0, s, 1).unwrap();
        conf.join(1, s, 2).unwrap();
        let mut enc = Encoder::new(&s).unwrap();
        let mut dec = Decoder::new(&s).unwrap();
        let n = s.frame_samples();
        let mut packets = Vec::new();
        for k in 0..150u32 {
            let pcm: Vec<f32> = (0..n)
                .map(|j| 0.3 * (2.0 * std::f32::consts::PI * 440.0 * (k as usize * n + j) as f32 / s.rate as f32).sin())
                .collect();
            let mut pkt = vec![0u8; 12 + MAX_PAYLOAD];
            let len = enc.encode(&pcm, &mut pkt[12..]);
            write_header(&mut pkt, s.pt, k as u16, k * s.frame_ts(), 5);
            pkt.truncate(12 + len);
            packets.push((k, pkt));
        }
        // Every 10th packet lost; pairs swapped every 7.
        packets.retain(|(k, _)| k % 10 != 9);
        for i in (3..packets.len() - 1).step_by(7) {
            packets.swap(i, i + 1);
        }
        let mut frames: Vec<f32> = Vec::new();
        for (i, (_, pkt)) in packets.iter().enumerate() {
            let now = t0 + Duration::from_millis(20 * i as u64);
            conf.handle_rtp(now, 0, pkt);
            conf.tick(now + Duration::from_millis(1), 0, &mut |id, rtcp, bytes| {
                if id == 1 && !rtcp {
                    let v = RtpView::parse(bytes).unwrap();
                    let mut pcm = Vec::new();
                    dec.decode(Some(v.payload()), n, &mut pcm);
                    frames.push(tone_level(&pcm, s.rate as f32, 440.0));
                }
            });
        }
        let gaps: Vec<usize> = frames
            .iter()
            .enumerate()
            .skip(10)
            .filter(|(_, l)| **l < floor)
            .map(|(i, _)| i)
            .collect();
        assert!(gaps.is_empty(), "{codec}: silent frames at {gaps:?}: {frames:?}");
    }

    #[test]
    fn loss_and_reordering_leave_no_gaps_pcmu() {
        // Faded repeats of the last frame: never below a third of the level.
        lossy(PCMU, 0.1);
    }

    #[test]
    fn loss_and_reordering_leave_no_gaps_opus() {
        // Opus concealment dips (to about -20 dB on this pure tone) but never
        // drops out.
        lossy(OPUS, 0.02);
    }

    /// An RTP packet carrying an RFC 6464 audio level (extension id 1).
    fn with_level(pt: u8, seq: u16, ts: u32, ssrc: u32, level: u8, payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 12];
        write_header(&mut b, pt, seq, ts, ssrc);
        b[0] |= 0x10;
        b.extend_from_slice(&[0xBE, 0xDE, 0, 1, 0x10, level, 0, 0]);
        b.extend_from_slice(payload);
        b
    }

    #[test]
    fn packets_marked_silent_are_not_decoded() {
        let t0 = Instant::now();
        let mut conf = Conference::new(SpeakerConfig::default());
        let s = spec("m=audio 1 RTP/AVP 0\r\na=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n");
        assert_eq!(s.audio_level_id, Some(1));
        assert!(s
            .sdp_lines()
            .contains("a=extmap:1/recvonly urn:ietf:params:rtp-hdrext:ssrc-audio-level"));
        conf.join(1, s, 1).unwrap();
        conf.join(2, s, 2).unwrap();
        let mut enc = Encoder::new(&s).unwrap();
        let mut heard = Vec::new();
        let mut dec = Decoder::new(&s).unwrap();
        for k in 0..100u32 {
            let now = t0 + Duration::from_millis(20 * k as u64);
            let tone: Vec<f32> = (0..160)
                .map(|j| 0.3 * (2.0 * std::f32::consts::PI * 440.0 * (k * 160 + j) as f32 / 8000.0).sin())
                .collect();
            let mut payload = [0u8; 160];
            enc.encode(&tone, &mut payload);
            conf.handle_rtp(now, 1, &with_level(0, k as u16, k * 160, 11, 20, &payload));
            conf.handle_rtp(now, 2, &with_level(0, k as u16, k * 160, 22, 127, &[0xFF; 160]));
            conf.tick(now + Duration::from_millis(1), 0, &mut |id, rtcp, bytes| {
                if id == 2 && k >= 50 && !rtcp {
                    let mut pcm = Vec::new();
                    dec.decode(Some(RtpView::parse(bytes).unwrap().payload()), 160, &mut pcm);
                    heard.extend(pcm);
                }
            });
        }
        let r = conf.report(t0);
        assert_eq!(
            r[1].silent_packets_skipped, 100,
            "the silent listener's packets are skipped"
        );
        assert_eq!(r[0].silent_packets_skipped, 0);
        assert!(tone_level(&heard, 8000.0, 440.0) > 0.1, "the speaker is still heard");
    }

    #[test]
    fn sender_reports_go_out_and_reception_reports_give_rtt_and_loss() {
        let t0 = Instant::now();
        let ntp0: u64 = 3_900_000_000 << 32;
        let ntp_at = |ms: u64| ntp0 + (ms << 32) / 1000;
        let mut conf = Conference::new(SpeakerConfig::default());
        conf.join(1, spec(PCMU), 42).unwrap();
        let mut reports = Vec::new();
        for k in 0..400u64 {
            let now = t0 + Duration::from_millis(20 * k);
            let mut pkt = [0u8; 172];
            write_header(&mut pkt, 0, k as u16 * 2, k as u32 * 320, 777); // every other packet lost
            conf.handle_rtp(now, 1, &pkt);
            conf.tick(now, ntp_at(20 * k), &mut |_, rtcp, bytes| {
                if rtcp {
                    reports.push((20 * k, rtcp::read_reports(bytes).unwrap()));
                }
            });
        }
        assert!(
            (1..=3).contains(&reports.len()),
            "one report every 2.5-7.5 s over 8 s: {}",
            reports.len()
        );
        let (at_ms, sr) = &reports[0];
        assert_eq!(sr.sender_ssrc, 42);
        let ntp = sr.sr_ntp.unwrap();
        assert_eq!(ntp, ntp_at(*at_ms));
        let block = sr.blocks[0];
        assert_eq!(block.ssrc, 777);
        assert!(
            (120..=136).contains(&block.fraction_lost),
            "about half lost: {}",
            block.fraction_lost
        );
        // The participant answers 60 ms later, having held our SR for 10 ms.
        let mut rr = Vec::new();
        let ours = ReportBlock {
            ssrc: 42,
            fraction_lost: 13,
            cumulative_lost: 5,
            highest_seq: 100,
            jitter: 80,
            lsr: (ntp >> 16) as u32,
            dlsr: 655,
        };
        rtcp::write_report(&mut rr, 777, None, &[ours], "phone");
        conf.handle_rtcp(t0, ntp_at(at_ms + 60), 1, &rr);
        let r = &conf.report(t0)[0];
        let rtt = r.rtt_ms.unwrap();
        assert!((49.0..=51.0).contains(&rtt), "rtt {rtt}");
        assert_eq!(r.remote_cumulative_lost, Some(5));
        assert_eq!(r.remote_jitter_ms, Some(10.0));
    }

    #[test]
    fn overload_mixes_one_speaker_then_recovers() {
        let (_, mut conf, _) = run(&[PCMU, PCMU, PCMU, PCMU], &[440.0, 700.0, 1000.0, 0.0], 1, None);
        let mixed = |c: &Conference| c.report(Instant::now()).iter().filter(|p| p.mixed).count();
        assert_eq!(mixed(&conf), 3);
        conf.limit_speakers(Some(1));
        let t = Instant::now();
        conf.tick(t, 0, &mut |_, _, _| {});
        assert_eq!(mixed(&conf), 1, "one speaker under overload");
        assert_eq!(conf.last_encodes, 2, "one minus mix and the shared mix");
        conf.limit_speakers(None);
        conf.tick(t, 0, &mut |_, _, _| {});
        assert_eq!(mixed(&conf), 3);
    }

    #[test]
    fn participants_with_different_ptimes_mix_and_packetize_correctly() {
        let codecs = [
            ("m=audio 1 RTP/AVP 0\r\na=ptime:10\r\n", 440.0),
            (
                "m=audio 1 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\na=ptime:40\r\n",
                1000.0,
            ),
            ("m=audio 1 RTP/AVP 0\r\na=ptime:60\r\n", 0.0),
            ("m=audio 1 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n", 0.0),
        ];
        let specs: Vec<CodecSpec> = codecs.iter().map(|(m, _)| spec(m)).collect();
        assert_eq!(specs.iter().map(|s| s.ptime_ms).collect::<Vec<_>>(), [10, 40, 60, 20]);
        let t0 = Instant::now();
        let mut conf = Conference::new(SpeakerConfig::default());
        let mut enc: Vec<Encoder> = specs.iter().map(|s| Encoder::new(s).unwrap()).collect();
        let mut dec: Vec<Decoder> = specs.iter().map(|s| Decoder::new(s).unwrap()).collect();
        for (i, s) in specs.iter().enumerate() {
            conf.join(i as u32, *s, 10 + i as u32).unwrap();
        }
        let mut heard: Vec<Vec<f32>> = vec![Vec::new(); 4];
        let mut last: Vec<Option<(u16, u32)>> = vec![None; 4];
        let mut sent = [0u32; 4];
        for ms in (0..3000u32).step_by(10) {
            let now = t0 + Duration::from_millis(ms as u64);
            for (i, s) in specs.iter().enumerate() {
                if ms % s.ptime_ms != 0 {
                    continue;
                }
                let n = s.frame_samples();
                let k = sent[i] as usize;
                let f = codecs[i].1;
                let pcm: Vec<f32> = (0..n)
                    .map(|j| 0.3 * (2.0 * std::f32::consts::PI * f * (k * n + j) as f32 / s.rate as f32).sin())
                    .collect();
                let mut pkt = vec![0u8; 12 + MAX_PAYLOAD];
                let len = enc[i].encode(&pcm, &mut pkt[12..]);
                write_header(&mut pkt, s.pt, k as u16, k as u32 * s.frame_ts(), 50 + i as u32);
                conf.handle_rtp(now, i as u32, &pkt[..12 + len]);
                sent[i] += 1;
            }
            if ms % 20 == 10 {
                conf.tick(now, 0, &mut |id, rtcp, bytes| {
                    if rtcp {
                        return;
                    }
                    let i = id as usize;
                    let v = RtpView::parse(bytes).unwrap();
                    if let Some((seq, ts)) = last[i] {
                        assert_eq!(v.sequence(), seq.wrapping_add(1));
                        assert_eq!(v.timestamp(), ts.wrapping_add(specs[i].frame_ts()), "participant {i}");
                    }
                    last[i] = Some((v.sequence(), v.timestamp()));
                    let mut pcm = Vec::new();
                    dec[i].decode(Some(v.payload()), specs[i].frame_samples(), &mut pcm);
                    assert_eq!(
                        pcm.len(),
                        specs[i].frame_samples(),
                        "a whole {} ms frame",
                        specs[i].ptime_ms
                    );
                    if ms >= 2000 {
                        heard[i].extend(pcm);
                    }
                });
            }
        }
        let lvl = |i: usize, f: f32| tone_level(&heard[i], specs[i].rate as f32, f);
        assert!(
            lvl(0, 440.0) < 0.02 && lvl(0, 1000.0) > 0.1,
            "A: {} {}",
            lvl(0, 440.0),
            lvl(0, 1000.0)
        );
        assert!(
            lvl(1, 1000.0) < 0.02 && lvl(1, 440.0) > 0.1,
            "B: {} {}",
            lvl(1, 1000.0),
            lvl(1, 440.0)
        );
        for i in [2, 3] {
            assert!(
                lvl(i, 440.0) > 0.1 && lvl(i, 1000.0) > 0.1,
                "listener {i}: {} {}",
                lvl(i, 440.0),
                lvl(i, 1000.0)
            );
        }
    }

    #[test]
    fn a_wideband_mix_rate_works_for_g711_and_g722() {
        let t0 = Instant::now();
        let mut conf = Conference::with_rate(SpeakerConfig::default(), 16000);
        let specs = [spec(PCMU), spec(G722), spec(PCMU)];
        for (i, s) in specs.iter().enumerate() {
            conf.join(i as u32, *s, 5 + i as u32).unwrap();
        }
        let mut enc: Vec<Encoder> = specs.iter().map(|s| Encoder::new(s).unwrap()).collect();
        let mut dec = Decoder::new(&specs[2]).unwrap();
        let mut heard = Vec::new();
        for k in 0..100u32 {
            let now = t0 + Duration::from_millis(20 * k as u64);
            for (i, (s, f)) in specs.iter().zip([440.0f32, 1000.0]).enumerate() {
                let n = s.frame_samples();
                let pcm: Vec<f32> = (0..n)
                    .map(|j| 0.3 * (2.0 * std::f32::consts::PI * f * (k as usize * n + j) as f32 / s.rate as f32).sin())
                    .collect();
                let mut pkt = vec![0u8; 12 + MAX_PAYLOAD];
                let len = enc[i].encode(&pcm, &mut pkt[12..]);
                write_header(&mut pkt, s.pt, k as u16, k * s.frame_ts(), 60 + i as u32);
                conf.handle_rtp(now, i as u32, &pkt[..12 + len]);
            }
            conf.tick(now + Duration::from_millis(1), 0, &mut |id, rtcp, bytes| {
                if id == 2 && !rtcp && k >= 50 {
                    let mut pcm = Vec::new();
                    dec.decode(Some(RtpView::parse(bytes).unwrap().payload()), 160, &mut pcm);
                    heard.extend(pcm);
                }
            });
        }
        assert!(tone_level(&heard, 8000.0, 440.0) > 0.1 && tone_level(&heard, 8000.0, 1000.0) > 0.1);
    }

    #[test]
    fn only_mixed_speakers_are_decoded_when_levels_are_in_the_header() {
        let t0 = Instant::now();
        let mut conf = Conference::new(SpeakerConfig::default());
        let s = spec("m=audio 1 RTP/AVP 0\r\na=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n");
        let freqs = [300.0f32, 500.0, 700.0, 900.0, 1100.0, 0.0];
        for i in 0..freqs.len() {
            conf.join(i as u32, s, 1 + i as u32).unwrap();
        }
        let mut enc: Vec<Encoder> = freqs.iter().map(|_| Encoder::new(&s).unwrap()).collect();
        let mut dec = Decoder::new(&s).unwrap();
        let mut heard = Vec::new();
        for k in 0..100u32 {
            let now = t0 + Duration::from_millis(20 * k as u64);
            for (i, f) in freqs.iter().enumerate() {
                let pcm: Vec<f32> = (0..160)
                    .map(|j| 0.3 * (2.0 * std::f32::consts::PI * f * (k * 160 + j) as f32 / 8000.0).sin())
                    .collect();
                let mut payload = [0u8; 160];
                enc[i].encode(&pcm, &mut payload);
                // Five talkers at -20 dBov (the first three a little louder), one listener silent.
                let level = if *f == 0.0 {
                    127
                } else if i < 3 {
                    18
                } else {
                    22
                };
                conf.handle_rtp(
                    now,
                    i as u32,
                    &with_level(0, k as u16, k * 160, 40 + i as u32, level, &payload),
                );
            }
            conf.tick(now + Duration::from_millis(1), 0, &mut |id, rtcp, bytes| {
                if id == 5 && !rtcp && k >= 50 {
                    let mut pcm = Vec::new();
                    dec.decode(Some(RtpView::parse(bytes).unwrap().payload()), 160, &mut pcm);
                    heard.extend(pcm);
                }
            });
        }
        let r = conf.report(t0);
        let mixed: Vec<u32> = r.iter().filter(|p| p.mixed).map(|p| p.id).collect();
        assert_eq!(mixed, [0, 1, 2]);
        for p in &r[3..5] {
            assert!(
                p.unmixed_packets_not_decoded >= 95,
                "talker {} not mixed, not decoded: {}",
                p.id,
                p.unmixed_packets_not_decoded
            );
        }
        for p in &r[..3] {
            assert!(p.unmixed_packets_not_decoded <= 5, "mixed talker {} decoded", p.id);
        }
        for f in [300.0, 500.0, 700.0] {
            assert!(tone_level(&heard, 8000.0, f) > 0.1, "the listener hears {f} Hz");
        }
        assert!(tone_level(&heard, 8000.0, 900.0) < 0.02);
    }

    #[test]
    fn dtmf_is_an_event_not_audio() {
        let t0 = Instant::now();
        let mut conf = Conference::new(SpeakerConfig::default());
        conf.join(1, spec(PCMU), 5).unwrap();
        let mut pkt = [0u8; 16];
        write_header(&mut pkt, 101, 1, 8000, 9);
        pkt[12..16].copy_from_slice(&[5, 0x80 | 10, 0, 160]);
        conf.handle_rtp(t0, 1, &pkt);
        conf.handle_rtp(t0, 1, &pkt); // end packets are repeated
        assert_eq!(
            conf.events,
            [ConfEvent::Dtmf {
                participant: 1,
                digit: '5'
            }]
        );
    }
    #[test]
    fn a_flood_of_dtmf_end_events_is_rate_limited() {
        let t0 = Instant::now();
        let mut conf = Conference::new(SpeakerConfig::default());
        conf.join(1, spec(PCMU), 5).unwrap();
        let mut pkt = [0u8; 16];
        // 1,000 distinct digits in one second, each with its own timestamp.
        for i in 0..1000u32 {
            write_header(&mut pkt, 101, i as u16, i * 160, 9);
            pkt[12..16].copy_from_slice(&[(i % 10) as u8, 0x80 | 10, 0, 160]);
            conf.handle_rtp(t0 + Duration::from_millis(u64::from(i)), 1, &pkt);
        }
        let n = conf.events.len();
        assert!((10..=13).contains(&n), "{n} events from a one-second flood");
    }
}
