//! Audio codecs for conferences: which codec a participant's offer gets,
//! and decoders/encoders between RTP payloads and mono f32 PCM (full scale
//! 1.0) at the codec's own rate. Resampling to the mix rate is separate.

pub mod g711;
pub mod g722;

use crate::sdp::Media;

/// Codecs chorus mixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum CodecKind {
    Opus,
    G722,
    Pcmu,
    Pcma,
}

/// A negotiated codec: what to send and expect on one participant's stream.
/// Stored as a [`CodecRecord`], checked again when read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(into = "CodecRecord", try_from = "CodecRecord")]
pub struct CodecSpec {
    pub kind: CodecKind,
    pub pt: u8,
    /// The PCM rate the codec runs at (Opus: 48000; G.722: 16000; G.711: 8000).
    pub rate: u32,
    /// RTP clock rate (Opus: 48000; G.722 and G.711: 8000, RFC 3551).
    pub clock_rate: u32,
    /// Channels in the SDP (Opus always says 2; chorus sends mono).
    pub channels: u8,
    /// Frame duration in ms (the mixer's tick is 20 ms).
    pub ptime_ms: u32,
    /// RFC 4733 telephone-event payload type, if offered.
    pub dtmf_pt: Option<u8>,
    /// RFC 6464 audio-level header extension id, if offered.
    pub audio_level_id: Option<u8>,
}

impl CodecKind {
    /// The PCM rate the codec runs at.
    pub fn pcm_rate(self) -> u32 {
        match self {
            CodecKind::Opus => 48000,
            CodecKind::G722 => 16000,
            CodecKind::Pcmu | CodecKind::Pcma => 8000,
        }
    }

    /// The RTP clock rate: G.722 samples at 16 kHz but its clock says 8000
    /// (RFC 3551).
    pub fn clock_rate(self) -> u32 {
        match self {
            CodecKind::Opus => 48000,
            CodecKind::G722 | CodecKind::Pcmu | CodecKind::Pcma => 8000,
        }
    }
}

impl CodecSpec {
    /// A spec with the rates of `kind`, checking what a participant (or a
    /// stored record) may choose: payload types 0..=127, a frame length the
    /// mixer handles, an RFC 8285 one-byte extension id.
    pub fn new(
        kind: CodecKind,
        pt: u8,
        channels: u8,
        ptime_ms: u32,
        dtmf_pt: Option<u8>,
        audio_level_id: Option<u8>,
    ) -> Result<CodecSpec, String> {
        // Opus frames are 2.5..60 ms in fixed steps; G.711 takes any
        // multiple of 10 ms. The mixer's tick is 20 ms; packets are split or
        // gathered around it.
        let ptime_ok = match kind {
            CodecKind::Opus => matches!(ptime_ms, 10 | 20 | 40 | 60),
            _ => ptime_ms % 10 == 0 && (10..=60).contains(&ptime_ms),
        };
        if !ptime_ok {
            return Err(format!(
                "a=ptime:{ptime_ms} is not supported: use 10, 20, 40 or 60 ms (G.711 and G.722 also 30 and 50)"
            ));
        }
        if pt > 127 || dtmf_pt.is_some_and(|p| p > 127) {
            return Err("payload types are 0..=127".into());
        }
        if audio_level_id.is_some_and(|id| !(1..=14).contains(&id)) || !(1..=2).contains(&channels) {
            return Err("extension ids are 1..=14 and channels 1 or 2".into());
        }
        Ok(CodecSpec {
            kind,
            pt,
            rate: kind.pcm_rate(),
            clock_rate: kind.clock_rate(),
            channels,
            ptime_ms,
            dtmf_pt,
            audio_level_id,
        })
    }

    /// Samples per frame at the codec's rate.
    pub fn frame_samples(&self) -> usize {
        (self.rate * self.ptime_ms / 1000) as usize
    }

    /// RTP timestamp units per frame.
    pub fn frame_ts(&self) -> u32 {
        self.clock_rate * self.ptime_ms / 1000
    }

    pub fn name(&self) -> &'static str {
        match self.kind {
            CodecKind::Opus => "opus",
            CodecKind::G722 => "G722",
            CodecKind::Pcmu => "PCMU",
            CodecKind::Pcma => "PCMA",
        }
    }

    /// `a=rtpmap` (and `a=fmtp`) lines for an SDP answer.
    pub fn sdp_lines(&self) -> String {
        let mut s = match self.kind {
            CodecKind::Opus => format!(
                "a=rtpmap:{pt} opus/48000/2\r\na=fmtp:{pt} minptime=10;useinbandfec=1\r\n",
                pt = self.pt
            ),
            CodecKind::G722 => format!("a=rtpmap:{} G722/8000\r\n", self.pt),
            CodecKind::Pcmu => format!("a=rtpmap:{} PCMU/8000\r\n", self.pt),
            CodecKind::Pcma => format!("a=rtpmap:{} PCMA/8000\r\n", self.pt),
        };
        if let Some(te) = self.dtmf_pt {
            s += &format!(
                "a=rtpmap:{te} telephone-event/{}\r\na=fmtp:{te} 0-15\r\n",
                self.clock_rate
            );
        }
        if let Some(id) = self.audio_level_id {
            // chorus reads the senders' levels; it does not send its own.
            s += &format!("a=extmap:{id}/recvonly {AUDIO_LEVEL_URI}\r\n");
        }
        s
    }
}

/// What a participant's offer chose; the rates follow from the kind.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct CodecRecord {
    pub kind: CodecKind,
    pub pt: u8,
    pub channels: u8,
    pub ptime_ms: u32,
    pub dtmf_pt: Option<u8>,
    pub audio_level_id: Option<u8>,
}

impl From<&CodecSpec> for CodecRecord {
    fn from(s: &CodecSpec) -> Self {
        CodecRecord {
            kind: s.kind,
            pt: s.pt,
            channels: s.channels,
            ptime_ms: s.ptime_ms,
            dtmf_pt: s.dtmf_pt,
            audio_level_id: s.audio_level_id,
        }
    }
}

impl CodecRecord {
    pub fn spec(&self) -> Result<CodecSpec, String> {
        CodecSpec::new(
            self.kind,
            self.pt,
            self.channels,
            self.ptime_ms,
            self.dtmf_pt,
            self.audio_level_id,
        )
    }
}

impl From<CodecSpec> for CodecRecord {
    fn from(s: CodecSpec) -> Self {
        CodecRecord::from(&s)
    }
}

impl TryFrom<CodecRecord> for CodecSpec {
    type Error = String;
    fn try_from(r: CodecRecord) -> Result<Self, String> {
        r.spec()
    }
}

pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// The id the offer gives the RFC 6464 audio-level extension, if any.
fn audio_level_id(m: &Media) -> Option<u8> {
    m.attributes().find_map(|(n, v)| {
        let (id, rest) = v?.split_once(' ')?;
        let uri = rest.split_whitespace().next()?;
        let id = id.split('/').next()?.parse().ok()?;
        (n == "extmap" && uri == AUDIO_LEVEL_URI).then_some(id)
    })
}

/// Picks the first codec of the offer that chorus mixes (RFC 3264: the
/// offerer's order is its preference).
pub fn negotiate(m: &Media) -> Result<CodecSpec, String> {
    negotiate_preferring(m, None)
}

/// As [`negotiate`], but takes codec `prefer` (e.g. what the answer chose in
/// a relayed call) when the stream offers it.
pub fn negotiate_preferring(m: &Media, prefer: Option<CodecKind>) -> Result<CodecSpec, String> {
    if let Some(want) = prefer {
        for f in &m.formats {
            let mut one = m.clone();
            one.formats = vec![f.clone()];
            if let Ok(mut c) = negotiate_preferring(&one, None) {
                if c.kind == want {
                    c.dtmf_pt = dtmf_pt(m, c.clock_rate);
                    return Ok(c);
                }
            }
        }
    }
    let rtpmap = |pt: &str| -> Option<(String, u32, u8)> {
        m.attributes().find_map(|(n, v)| {
            let (p, enc) = v?.split_once(' ')?;
            if n != "rtpmap" || p != pt {
                return None;
            }
            let mut f = enc.split('/');
            let name = f.next()?.to_ascii_lowercase();
            let rate = f.next()?.parse().ok()?;
            let ch = f.next().and_then(|c| c.parse().ok()).unwrap_or(1);
            Some((name, rate, ch))
        })
    };
    let ptime = m
        .attributes()
        .find_map(|(n, v)| (n == "ptime").then(|| v?.trim().parse::<u32>().ok()).flatten())
        .unwrap_or(20);
    let mut offered = Vec::new();
    for f in &m.formats {
        let Ok(pt) = f.parse::<u8>() else { continue };
        let (name, rate, channels) = match (pt, rtpmap(f)) {
            (_, Some(x)) => x,
            (0, None) => ("pcmu".into(), 8000, 1),
            (8, None) => ("pcma".into(), 8000, 1),
            (9, None) => ("g722".into(), 8000, 1),
            _ => continue,
        };
        offered.push(name.clone());
        let kind = match (name.as_str(), rate) {
            ("opus", 48000) => CodecKind::Opus,
            ("g722", 8000) => CodecKind::G722,
            ("pcmu", 8000) => CodecKind::Pcmu,
            ("pcma", 8000) => CodecKind::Pcma,
            _ => continue,
        };
        let clock = kind.clock_rate();
        let spec = CodecSpec::new(kind, pt, channels, ptime, dtmf_pt(m, clock), audio_level_id(m))
            .map_err(|e| format!("{name}: {e}"))?;
        return Ok(spec);
    }
    Err(format!(
        "no codec chorus can mix in the offer ({}); supported: opus/48000, G722/8000, PCMU/8000, PCMA/8000",
        offered.join(", ")
    ))
}

/// Every codec of the stream that chorus decodes, in the stream's order.
pub fn all_in(m: &Media) -> Vec<CodecSpec> {
    m.formats
        .iter()
        .filter_map(|f| {
            let mut one = m.clone();
            one.formats = vec![f.clone()];
            negotiate(&one).ok()
        })
        .collect()
}

/// The stream's RFC 4733 telephone-event payload type at `clock`, if offered.
fn dtmf_pt(m: &Media, clock: u32) -> Option<u8> {
    m.attributes().find_map(|(n, v)| {
        let (pt, enc) = v?.split_once(' ')?;
        let ok = n == "rtpmap"
            && enc.to_ascii_lowercase().starts_with("telephone-event/")
            && enc.split('/').nth(1).and_then(|r| r.trim().parse::<u32>().ok()) == Some(clock)
            && m.formats.iter().any(|f| f == pt);
        ok.then(|| pt.parse().ok()).flatten()
    })
}

/// Turns payloads into PCM, with concealment of lost packets.
pub enum Decoder {
    /// The law, a sample buffer, the last good frame and how many frames
    /// have been concealed since it.
    G711(g711::Law, Vec<i16>, Vec<f32>, u32),
    /// As G.711: the decoder, a buffer, the last good frame, frames concealed.
    G722(Box<g722::G722Decoder>, Vec<i16>, Vec<f32>, u32),
    Opus(Box<opus::Decoder>, Vec<i16>),
}

/// G.711 and G.722 concealment: each concealed frame repeats the last good one at
/// this fraction of the previous level, so short losses bridge smoothly
/// and long ones fade to silence.
const G711_PLC_FADE: f32 = 0.7;

/// Turns PCM into payloads.
pub enum Encoder {
    G711(g711::Law, Vec<i16>),
    G722(Box<g722::G722Encoder>, Vec<i16>),
    Opus(Box<opus::Encoder>, Vec<i16>),
}

/// Largest encoded frame we produce (Opus at 20 ms stays far below).
pub const MAX_PAYLOAD: usize = 1275;

impl Decoder {
    pub fn new(spec: &CodecSpec) -> Result<Self, String> {
        Ok(match spec.kind {
            CodecKind::Pcmu => Decoder::G711(g711::Law::Ulaw, vec![0; spec.frame_samples()], Vec::new(), 0),
            CodecKind::Pcma => Decoder::G711(g711::Law::Alaw, vec![0; spec.frame_samples()], Vec::new(), 0),
            CodecKind::G722 => Decoder::G722(Box::default(), vec![0; 2 * 480], Vec::new(), 0),
            CodecKind::Opus => Decoder::Opus(
                // libopus decodes to 8, 12, 16, 24 or 48 kHz: a transcoder asks for its peer's rate.
                Box::new(opus::Decoder::new(spec.rate, opus::Channels::Mono).map_err(|e| e.to_string())?),
                vec![0; 5760],
            ),
        })
    }

    /// Decodes one payload (or conceals one frame when `payload` is `None`)
    /// into `out` as f32; returns the samples written.
    pub fn decode(&mut self, payload: Option<&[u8]>, frame_samples: usize, out: &mut Vec<f32>) -> usize {
        out.clear();
        match self {
            Decoder::G711(law, buf, last, lost) => match payload {
                Some(p) => {
                    let n = law.decode(p, buf);
                    good_frame(&buf[..n], last, lost, out);
                }
                None => faded_repeat(last, lost, frame_samples, out),
            },
            Decoder::G722(dec, buf, last, lost) => match payload {
                Some(p) => {
                    let n = dec.decode(p, buf);
                    good_frame(&buf[..n], last, lost, out);
                }
                None => faded_repeat(last, lost, frame_samples, out),
            },
            Decoder::Opus(d, buf) => {
                let r = match payload {
                    Some(p) => d.decode(p, buf, false),
                    None => d.decode(&[], &mut buf[..frame_samples], false),
                };
                match r {
                    Ok(n) => out.extend(buf[..n].iter().map(|&s| s as f32 / 32768.0)),
                    Err(_) => out.resize(frame_samples, 0.0),
                }
            }
        }
        out.len()
    }
}

/// A decoded frame: to f32, and kept for concealment.
fn good_frame(pcm: &[i16], last: &mut Vec<f32>, lost: &mut u32, out: &mut Vec<f32>) {
    out.extend(pcm.iter().map(|&s| s as f32 / 32768.0));
    last.clear();
    last.extend_from_slice(out);
    *lost = 0;
}

/// Concealment for codecs without their own: the last good frame again, a
/// little quieter each time.
fn faded_repeat(last: &[f32], lost: &mut u32, frame_samples: usize, out: &mut Vec<f32>) {
    *lost += 1;
    let g = G711_PLC_FADE.powi(*lost as i32);
    out.extend(last.iter().map(|x| x * g));
    out.resize(frame_samples, 0.0);
}

impl Decoder {
    /// Recovers a lost frame from the in-band FEC of the packet after it
    /// (Opus only). False when there is nothing to recover.
    pub fn decode_fec(&mut self, next_payload: &[u8], frame_samples: usize, out: &mut Vec<f32>) -> bool {
        let Decoder::Opus(d, buf) = self else { return false };
        out.clear();
        match d.decode(next_payload, &mut buf[..frame_samples], true) {
            Ok(n) if n > 0 => {
                out.extend(buf[..n].iter().map(|&s| s as f32 / 32768.0));
                true
            }
            _ => false,
        }
    }
}

impl Encoder {
    pub fn new(spec: &CodecSpec) -> Result<Self, String> {
        Ok(match spec.kind {
            CodecKind::Pcmu => Encoder::G711(g711::Law::Ulaw, Vec::with_capacity(spec.frame_samples())),
            CodecKind::Pcma => Encoder::G711(g711::Law::Alaw, Vec::with_capacity(spec.frame_samples())),
            CodecKind::G722 => Encoder::G722(Box::default(), Vec::with_capacity(spec.frame_samples())),
            CodecKind::Opus => {
                let mut e = opus::Encoder::new(spec.rate, opus::Channels::Mono, opus::Application::Voip)
                    .map_err(|e| e.to_string())?;
                // Complexity 5: ~40% cheaper than 10 (DEPENDENCIES.md), fine for speech.
                let _ = e.set_complexity(5);
                let _ = e.set_bitrate(opus::Bitrate::Bits(32000));
                // In-band FEC lets receivers recover a lost packet from the next.
                let _ = e.set_inband_fec(true);
                // Speech mode (SILK or hybrid) is where in-band FEC exists.
                let _ = e.set_signal(opus::Signal::Voice);
                let _ = e.set_packet_loss_perc(5);
                Encoder::Opus(Box::new(e), Vec::with_capacity(960))
            }
        })
    }

    /// Opus's complexity (0..=10); other codecs have none.
    pub fn set_complexity(&mut self, c: i32) {
        if let Encoder::Opus(e, _) = self {
            let _ = e.set_complexity(c);
        }
    }

    /// Encodes one frame of f32 PCM; returns the payload length in `out`.
    pub fn encode(&mut self, pcm: &[f32], out: &mut [u8]) -> usize {
        let to_i16 = |buf: &mut Vec<i16>| {
            buf.clear();
            buf.extend(pcm.iter().map(|&x| (x * 32767.0).clamp(-32768.0, 32767.0) as i16));
        };
        match self {
            Encoder::G711(law, buf) => {
                to_i16(buf);
                law.encode(buf, out)
            }
            Encoder::G722(e, buf) => {
                to_i16(buf);
                e.encode(buf, out)
            }
            Encoder::Opus(e, buf) => {
                to_i16(buf);
                e.encode(buf, out).unwrap_or(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::mixer::tests::tone_level;
    use crate::sdp::Sdp;

    fn media(m: &str) -> Media {
        let s = format!("v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n{m}");
        Sdp::parse(&s).unwrap().media.remove(0)
    }

    #[test]
    fn negotiation_takes_the_first_supported_codec_and_telephone_event() {
        let m = media(
            "m=audio 4000 RTP/AVP 111 9 0 101\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:101 telephone-event/48000\r\n",
        );
        let c = negotiate(&m).unwrap();
        assert_eq!(
            (c.kind, c.pt, c.dtmf_pt, c.channels),
            (CodecKind::Opus, 111, Some(101), 2)
        );
        let m = media("m=audio 4000 RTP/AVP 18 8 0\r\n");
        assert_eq!(negotiate(&m).unwrap().kind, CodecKind::Pcma);
        let g = negotiate(&media("m=audio 4000 RTP/AVP 9 0\r\n")).unwrap();
        assert_eq!(
            (g.kind, g.rate, g.clock_rate, g.frame_samples(), g.frame_ts()),
            (CodecKind::G722, 16000, 8000, 320, 160)
        );
        let e = negotiate(&media("m=audio 4000 RTP/AVP 4 18\r\na=rtpmap:18 G729/8000\r\n")).unwrap_err();
        assert!(e.contains("g729") && e.contains("supported"), "{e}");
        assert_eq!(
            negotiate(&media("m=audio 4000 RTP/AVP 0\r\na=ptime:30\r\n"))
                .unwrap()
                .ptime_ms,
            30
        );
        let e = negotiate(&media("m=audio 4000 RTP/AVP 0\r\na=ptime:25\r\n")).unwrap_err();
        assert!(e.contains("ptime:25"), "{e}");
    }

    #[test]
    fn every_codec_carries_a_tone() {
        for kind in [CodecKind::Opus, CodecKind::G722, CodecKind::Pcmu, CodecKind::Pcma] {
            let m = match kind {
                CodecKind::Opus => "m=audio 1 RTP/AVP 96\r\na=rtpmap:96 opus/48000/2\r\n",
                CodecKind::G722 => "m=audio 1 RTP/AVP 9\r\n",
                CodecKind::Pcmu => "m=audio 1 RTP/AVP 0\r\n",
                CodecKind::Pcma => "m=audio 1 RTP/AVP 8\r\n",
            };
            let spec = negotiate(&media(m)).unwrap();
            let (mut enc, mut dec) = (Encoder::new(&spec).unwrap(), Decoder::new(&spec).unwrap());
            let n = spec.frame_samples();
            let rate = spec.rate as f32;
            let mut pcm = Vec::new();
            let mut payload = [0u8; MAX_PAYLOAD];
            for k in 0..10 {
                let frame: Vec<f32> = (0..n)
                    .map(|i| 0.4 * (2.0 * std::f32::consts::PI * 440.0 * (k * n + i) as f32 / rate).sin())
                    .collect();
                let len = enc.encode(&frame, &mut payload);
                assert!(len > 0);
                dec.decode(Some(&payload[..len]), n, &mut pcm);
            }
            assert!(
                tone_level(&pcm, rate, 440.0) > 0.25,
                "{kind:?}: {}",
                tone_level(&pcm, rate, 440.0)
            );
            // Concealment yields a full frame.
            assert_eq!(dec.decode(None, n, &mut pcm), n);
        }
    }
}
