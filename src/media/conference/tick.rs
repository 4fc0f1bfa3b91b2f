//! The 20 ms tick: each participant's frame, speaker selection, the mixes,
//! one encode per (mix, codec), packetization per participant; and the RTCP
//! reports due.

use super::*;

impl Conference {
    /// Sends due RTCP reports: an SR about what chorus sends each participant,
    /// with a reception block about what it receives, and an SDES CNAME.
    fn send_reports(&mut self, now: Instant, ntp_now: u64, send: &mut dyn FnMut(ParticipantId, bool, &[u8])) {
        let buf = &mut self.rtcp_buf;
        for p in &mut self.participants {
            let due = *p.next_rtcp.get_or_insert(now + RTCP_INTERVAL / 2);
            if now < due {
                continue;
            }
            // 0.5..1.5 of the interval, varied per participant and report (RFC 3550 6.3.1).
            let spread = (p.ssrc ^ p.rtcp_sent.wrapping_mul(2654435761)) % 1000;
            p.next_rtcp = Some(now + RTCP_INTERVAL / 2 + RTCP_INTERVAL * spread / 1000);
            p.rtcp_sent += 1;
            let block: Option<ReportBlock> = p.rx.reception().map(|r| {
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
            });
            let info = SenderInfo {
                ntp: ntp_now,
                rtp_ts: p.ts,
                packets: p.sent as u32,
                octets: p.sent_octets as u32,
            };
            buf.clear();
            rtcp::write_report(buf, p.ssrc, Some(info), block.as_slice(), CNAME);
            send(p.id, true, buf);
        }
    }

    /// One 20 ms tick: decode, select speakers, mix, encode once per mix and
    /// codec, and hand each participant's packet to `send` (`true`: RTCP).
    pub fn tick(&mut self, now: Instant, ntp_now: u64, send: &mut dyn FnMut(ParticipantId, bool, &[u8])) {
        self.tick_no += 1;
        let frame_len = self.frame_len();
        self.measure(now, frame_len);
        self.select_speakers();
        self.play_taps();
        let active = &self.active;
        let speakers = self
            .participants
            .iter()
            .filter(|p| !p.muted && active.contains(&p.id))
            .map(|p| (p.id, p.frame(&self.zeros), p.gain))
            .chain(self.taps.iter().filter_map(|t| t.speaking()));
        let mixes = self.mixer.mix(speakers, frame_len);
        let mut encodes = 0;
        let mut packet = [0u8; RTP_HEADER_LEN + MAX_PAYLOAD];
        for p in &mut self.participants {
            let mut mix = if active.contains(&p.id) {
                MixId::Minus(p.id)
            } else {
                MixId::Shared
            };
            let mut heard = mixes.get(mix);
            if super::taps::whisper(&self.taps, p.id, heard, &mut self.whispered) {
                (mix, heard) = (MixId::Own(p.id), &self.whispered);
            }
            let Some(idx) = encoder_for(&mut self.encoders, mix, &p.spec, self.mix_rate, frame_len) else {
                continue;
            };
            let enc = &mut self.encoders[idx];
            encodes += enc.encode_once(self.tick_no, heard, p.spec.frame_samples());
            p.packetize(enc, &mut packet, send);
        }
        if !self.taps.is_empty() {
            let view = super::taps::TickView {
                participants: &self.participants,
                index: &self.index,
                active: &self.active,
                zeros: &self.zeros,
                events: &self.events,
                mix_rate: self.mix_rate,
            };
            super::taps::feed_taps(&mut self.taps, view, mixes, now);
        }
        // Encoders nobody used this tick (a speaker went quiet) are dropped.
        let tick = self.tick_no;
        self.encoders.retain(|e| e.encoded_at == tick);
        self.last_encodes = encodes;
        self.send_reports(now, ntp_now, send);
    }

    /// How long before `tick` (this tick's scheduled time) the loudest
    /// mixed speaker's packet was due. The worker starts the conference's
    /// ticks earlier by up to this much, so that the voice listeners follow
    /// waits least (see `worker::runner::conference_host`). None when
    /// nobody is mixed, or the speaker's last packet is older than a tick.
    pub fn slack(&self, tick: Instant) -> Option<std::time::Duration> {
        let level = |id: &ParticipantId| self.speakers.level(*id).unwrap_or(f32::MIN);
        let lead = self.active.iter().max_by(|a, b| level(a).total_cmp(&level(b)))?;
        let p = self.participants.iter().find(|p| p.id == *lead)?;
        let slack = tick.checked_duration_since(p.jitter.last_played_due()?)?;
        (slack.as_millis() < u128::from(super::TICK_MS)).then_some(slack)
    }

    /// Every participant's frame for this tick and its level: decoded for
    /// those mixed (and on their turn in the rotation), a header level or
    /// the estimate for the others (see `estimate`).
    fn measure(&mut self, now: Instant, frame_len: usize) {
        // Who was mixed last tick decides who is decoded this tick.
        self.active.clear();
        self.active.extend(self.speakers.active());
        self.levels.clear();
        for (i, p) in self.participants.iter_mut().enumerate() {
            // Not mixed: a cheap estimate of the level will do, except on
            // the participant's turn in the rotation (see `estimate`).
            let mixed = self.active.contains(&p.id) || p.tapped;
            let plan = if mixed || (!self.shedding && estimate::rotation_due(self.tick_no, i)) {
                Plan::Decode
            } else if self.shedding {
                Plan::Shed
            } else {
                Plan::Estimate {
                    refresh: estimate::voice_refresh_due(self.tick_no, i),
                }
            };
            let level = match p.fill_frame(now, frame_len, &mut self.concealed_total, plan) {
                _ if p.muted => SILENCE_DBOV,
                Heard::Decoded => {
                    let level = dbov(p.frame(&self.zeros));
                    p.voice_level = Some((-level).clamp(0.0, 127.0) as u8);
                    level
                }
                Heard::Level(l) => -(l as f32),
                Heard::Nothing => SILENCE_DBOV,
            };
            self.levels.push((p.id, level));
        }
    }

    /// Who speaks and who is mixed, from this tick's levels; the changes
    /// become events.
    fn select_speakers(&mut self) {
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
    }
}

/// The shared encoder for `mix` in `spec`'s codec and ptime, made when
/// none exists yet; `None` if it cannot be made.
fn encoder_for(
    encoders: &mut Vec<SharedEncoder>,
    mix: MixId,
    spec: &CodecSpec,
    mix_rate: u32,
    frame_len: usize,
) -> Option<usize> {
    let (kind, ptime) = (spec.kind, spec.ptime_ms);
    if let Some(i) = encoders
        .iter()
        .position(|e| e.mix == mix && e.kind == kind && e.ptime_ms == ptime)
    {
        return Some(i);
    }
    let (Ok(encoder), Ok(down)) = (Encoder::new(spec), Resampler::new(mix_rate, spec.rate, frame_len)) else {
        return None;
    };
    encoders.push(SharedEncoder {
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
    Some(encoders.len() - 1)
}

impl SharedEncoder {
    /// Encodes this tick's `mix` once, whoever asks first (frames of `n`
    /// samples: two for a 10 ms ptime, one every other tick for 40 ms).
    /// The number of encodes done.
    fn encode_once(&mut self, tick_no: u64, mix: &[f32], n: usize) -> usize {
        if self.encoded_at == tick_no {
            return 0;
        }
        self.encoded_at = tick_no;
        self.payloads.clear();
        self.lens.clear();
        let chunk = self.down.process(mix);
        self.pcm.extend_from_slice(chunk);
        let mut encodes = 0;
        while self.pcm.len() >= n {
            let mut buf = [0u8; MAX_PAYLOAD];
            let len = self.encoder.encode(&self.pcm[..n], &mut buf);
            self.payloads.extend_from_slice(&buf[..len]);
            self.lens.push(len);
            self.pcm.drain(..n);
            encodes += 1;
        }
        encodes
    }
}

impl Participant {
    /// This tick's payloads of `enc` as this participant's own RTP packets.
    fn packetize(
        &mut self,
        enc: &SharedEncoder,
        packet: &mut [u8; RTP_HEADER_LEN + MAX_PAYLOAD],
        send: &mut dyn FnMut(ParticipantId, bool, &[u8]),
    ) {
        let mut at = 0;
        for &len in &enc.lens {
            // Sequence and timestamp run on through silence and deafness.
            let (seq, ts) = (self.seq, self.ts);
            self.seq = self.seq.wrapping_add(1);
            self.ts = self.ts.wrapping_add(self.spec.frame_ts());
            let Some(payload) = enc.payloads.get(at..at + len) else {
                return;
            };
            at += len;
            if self.deaf || len == 0 {
                continue;
            }
            write_header(packet, self.spec.pt, seq, ts, self.ssrc);
            packet[RTP_HEADER_LEN..RTP_HEADER_LEN + len].copy_from_slice(payload);
            send(self.id, false, &packet[..RTP_HEADER_LEN + len]);
            self.sent += 1;
            self.sent_octets += len as u64;
        }
    }
}

impl Participant {
    /// A packet of a participant who is not mixed: its header level or the
    /// estimate stands for it (`level` takes the loudest), or, when neither
    /// can clear it, it is decoded. Returns true if it was decoded.
    fn stand_in(
        &mut self,
        pk: crate::media::jitter::Packet,
        (n, frame_len, plan): (usize, usize, Plan),
        level: &mut Option<u8>,
    ) -> bool {
        let stand_in = match pk.level {
            Some(l) => Some(l),
            None => self.estimate(&pk.payload, n, plan).inspect(|_| self.estimated += 1),
        };
        let decoded = match stand_in {
            Some(l) => {
                *level = Some(level.map_or(l, |h| h.min(l)));
                self.undecoded += 1;
                self.skip_packet(frame_len);
                false
            }
            None => {
                self.decode(Some(&pk.payload), n);
                true
            }
        };
        self.jitter.recycle(pk.payload);
        decoded
    }

    /// Keeps a packet's time without its audio: silence, counted after the
    /// FIFO's audio, written out only if audio follows it.
    fn skip_packet(&mut self, frame_len: usize) {
        self.silent += frame_len * self.spec.ptime_ms as usize / TICK_MS as usize;
    }

    /// This tick's frame from the FIFO and the silence after it. Most
    /// ticks of most participants are one whole packet or only silence:
    /// a swap of buffers, or a flag, instead of copying 20 ms of samples.
    fn take_frame(&mut self, frame_len: usize) {
        if self.fifo.is_empty() {
            self.silent = self.silent.saturating_sub(frame_len);
            self.frame_silent = true;
            return;
        }
        self.frame_silent = false;
        let add = self.silent.min(frame_len.saturating_sub(self.fifo.len()));
        self.fifo.resize(self.fifo.len() + add, 0.0);
        self.silent -= add;
        if self.fifo.len() == frame_len {
            std::mem::swap(&mut self.frame, &mut self.fifo);
            self.fifo.clear();
            return;
        }
        let take = self.fifo.len().min(frame_len);
        self.frame.clear();
        self.frame.extend(self.fifo.drain(..take));
        self.frame.resize(frame_len, 0.0);
    }

    /// This tick's audio at the mix rate (`zeros`: a silent frame's).
    pub(super) fn frame<'a>(&'a self, zeros: &'a [f32]) -> &'a [f32] {
        if self.frame_silent {
            zeros
        } else {
            &self.frame
        }
    }

    /// Decodes one packet (or conceals one) into the FIFO at the mix rate.
    fn decode(&mut self, payload: Option<&[u8]>, n: usize) {
        self.decoder.decode(payload, n, &mut self.decoded);
        self.push_decoded();
    }

    /// `decoded`, at the mix rate, onto the FIFO, after any silence due
    /// before it.
    fn push_decoded(&mut self) {
        if self.silent > 0 {
            self.fifo.resize(self.fifo.len() + self.silent, 0.0);
            self.silent = 0;
        }
        let hi = self.up.process(&self.decoded);
        self.fifo.extend_from_slice(hi);
    }

    /// The level (-dBov) of a packet from a participant who is not mixed,
    /// without the full decode where that is cheaper; `None` when only a
    /// decode can tell. G.711 and G.722 are decoded but not resampled;
    /// Opus without voice (its VAD flag) is not decoded at all. Shedding
    /// for overload (`shed`), no Opus packet is: voice counts at a fixed level.
    fn estimate(&mut self, payload: &[u8], n: usize, plan: Plan) -> Option<u8> {
        match self.spec.kind {
            CodecKind::Opus => {
                let voice = estimate::opus_voice(payload);
                let was_voiced = std::mem::replace(&mut self.voiced, voice == estimate::Voice::Yes);
                match (voice, plan) {
                    (estimate::Voice::No, _) | (estimate::Voice::Unknown, Plan::Shed) => Some(127),
                    (estimate::Voice::Yes, Plan::Shed) => Some(estimate::SHED_VOICE_LEVEL),
                    // Still talking since the last measure: that level stands in.
                    (estimate::Voice::Yes, Plan::Estimate { refresh: false }) if was_voiced => self.voice_level,
                    _ => None,
                }
            }
            CodecKind::Pcmu | CodecKind::Pcma | CodecKind::G722 => {
                self.decoder.decode(Some(payload), n, &mut self.decoded);
                Some((-dbov(&self.decoded)).clamp(0.0, 127.0) as u8)
            }
        }
    }
}

/// How much of a participant's audio this tick needs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// Mixed (or its turn in the rotation): decode everything.
    Decode,
    /// Not mixed: a header level or the estimate stands in where it can;
    /// on `refresh` ticks an Opus voice is measured again.
    Estimate { refresh: bool },
    /// Not mixed, and the conference sheds for overload: never decode.
    Shed,
}

/// What a participant's frame holds this tick.
enum Heard {
    /// Decoded audio: measure its level.
    Decoded,
    /// Not decoded for the mix; the packets' RFC 6464 level (-dBov), or
    /// the estimate's, stands for it.
    Level(u8),
    /// Nothing (silence, DTX, start-up).
    Nothing,
}

impl Participant {
    /// Fills `frame` with this tick's audio at the mix rate, decoding as many
    /// packets as its ptime needs (two of 10 ms, half of one of 40 ms...).
    /// Unless `plan` is to decode, a level in the header or a cheap
    /// estimate stands in for the decode.
    fn fill_frame(&mut self, now: Instant, frame_len: usize, concealed_total: &mut u64, plan: Plan) -> Heard {
        // Audio decoded on an earlier tick may still wait in the FIFO (ptime > 20).
        let mut heard = self.fifo_audio;
        let mut header_level: Option<u8> = None;
        while self.fifo.len() + self.silent < frame_len {
            let n = self.spec.frame_samples();
            let payload = match self.jitter.pop(now) {
                // Known silence (RFC 6464): keep the time, decode nothing.
                Pop::Packet(pk) if pk.payload.is_empty() => {
                    self.jitter.recycle(pk.payload);
                    self.skip_packet(frame_len);
                    continue;
                }
                // Not mixed, and the header says how loud: that is all the
                // speaker selection needs. Decode only those who are mixed.
                Pop::Packet(pk) if plan != Plan::Decode => {
                    heard |= self.stand_in(pk, (n, frame_len, plan), &mut header_level);
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
                        self.push_decoded();
                        heard = true;
                        continue;
                    }
                    None
                }
                Pop::Empty => break,
            };
            self.decode(payload.as_deref(), n);
            if let Some(p) = payload {
                self.jitter.recycle(p);
            }
            heard = true;
        }
        self.take_frame(frame_len);
        self.fifo_audio = heard && !self.fifo.is_empty();
        match (heard, header_level) {
            (true, _) => Heard::Decoded,
            (false, Some(l)) => Heard::Level(l),
            (false, None) => Heard::Nothing,
        }
    }
}
