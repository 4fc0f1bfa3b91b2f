//! What goes over a stream's WebSocket, both ways, in its two formats.
//! Pure: frames and events in, messages out; messages in, audio and marks
//! out.
//!
//! - `twilio`: Twilio Media Streams JSON. `connected`, `start` (stream and
//!   call metadata), `media` (base64 μ-law, 8 kHz, 20 ms, per-track chunk
//!   and timestamp), `dtmf`, `mark`, `stop`; the application may send
//!   `media`, `mark` and `clear`. `sequenceNumber`, `chunk` and `timestamp`
//!   are strings, as Twilio sends them.
//! - `raw`: a JSON `start` text message, then binary messages of 16-bit
//!   little-endian PCM at the stream's rate, mono (both tracks: mixed), or
//!   stereo with the inbound track left and the outbound right; `dtmf`, `mark` and `stop`
//!   as JSON text. The application may send binary PCM in the same format
//!   (mono) and `{"event":"mark","name":..}` or `{"event":"clear"}`.

use crate::media::codec::g711;
use crate::media::resample::Resampler;
use crate::media::tap::{Frame, Track};
use base64::Engine as _;
use serde_json::{json, Map, Value};
use std::collections::VecDeque;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Twilio,
    Raw,
}

/// One WebSocket message.
#[derive(Debug, Clone, PartialEq)]
pub enum Wire {
    Text(String),
    Binary(Vec<u8>),
}

/// What describes a stream in its opening message.
#[derive(Debug, Clone)]
pub struct Meta {
    pub stream_id: String,
    /// The call or conference id, and the leg's tag or participant, if any.
    pub call_id: String,
    pub party: Option<String>,
    pub tracks: Vec<Track>,
    pub custom: Map<String, Value>,
    /// Raw: the PCM rate and channels.
    pub rate: u32,
    pub stereo: bool,
}

/// Frames made into messages for one connection (counters start afresh
/// on each connection, as a new stream's would).
pub struct Outgoing {
    format: Format,
    meta: Meta,
    seq: u64,
    chunk: u64,
    /// Per track: 20 ms frames sent (Twilio's timestamp) and a resampler.
    frames: [u64; 2],
    resamplers: [Option<(u32, Resampler)>; 2],
    /// Raw stereo: each track's resampled frames waiting for the other's.
    pending: [VecDeque<Vec<i16>>; 2],
    scratch: Vec<f32>,
}

/// A raw stereo track may run this many frames ahead of the other (which
/// may be silent: on hold, DTX) before it goes out with silence beside it.
const STEREO_LAG: usize = 3;

impl Outgoing {
    pub fn new(format: Format, meta: Meta) -> Self {
        Outgoing {
            format,
            meta,
            seq: 0,
            chunk: 0,
            frames: [0, 0],
            resamplers: [None, None],
            pending: Default::default(),
            scratch: Vec::with_capacity(960),
        }
    }

    /// The rate audio goes out at.
    pub fn rate(&self) -> u32 {
        match self.format {
            Format::Twilio => 8000,
            Format::Raw => self.meta.rate,
        }
    }

    fn next_seq(&mut self) -> String {
        self.seq += 1;
        self.seq.to_string()
    }

    fn sid(&self) -> &str {
        &self.meta.stream_id
    }

    /// What opens a connection.
    pub fn opening(&mut self) -> Vec<Wire> {
        let m = &self.meta;
        let tracks: Vec<Track> = m.tracks.clone();
        match self.format {
            Format::Twilio => {
                let connected = json!({"event": "connected", "protocol": "Call", "version": "1.0.0"});
                let seq = self.next_seq();
                let m = &self.meta;
                let start = json!({
                    "event": "start",
                    "sequenceNumber": seq,
                    "start": {
                        "accountSid": "chorus",
                        "streamSid": m.stream_id,
                        "callSid": m.call_id,
                        "tracks": tracks,
                        "customParameters": m.custom,
                        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                    },
                    "streamSid": m.stream_id,
                });
                vec![Wire::Text(connected.to_string()), Wire::Text(start.to_string())]
            }
            Format::Raw => {
                let start = json!({
                    "event": "start",
                    "stream_id": m.stream_id,
                    "call_id": m.call_id,
                    "party": m.party,
                    "tracks": tracks,
                    "custom_parameters": m.custom,
                    "encoding": "pcm_s16le",
                    "sample_rate": m.rate,
                    "channels": if m.stereo { 2 } else { 1 },
                });
                vec![Wire::Text(start.to_string())]
            }
        }
    }

    /// A frame of the tapped audio: no message, one, or (stereo catching
    /// up) a few.
    pub fn audio(&mut self, f: &Frame) -> Vec<Wire> {
        let k = (f.track == Track::Outbound) as usize;
        let pcm = self.resample(k, f);
        match self.format {
            Format::Twilio => {
                let mut ulaw = vec![0u8; pcm.len()];
                g711::Law::Ulaw.encode(&pcm, &mut ulaw);
                self.frames[k] += 1;
                self.chunk += 1;
                let seq = self.next_seq();
                let msg = json!({
                    "event": "media",
                    "sequenceNumber": seq,
                    "media": {
                        "track": f.track,
                        "chunk": self.chunk.to_string(),
                        "timestamp": ((self.frames[k] - 1) * 20).to_string(),
                        "payload": base64::engine::general_purpose::STANDARD.encode(&ulaw),
                    },
                    "streamSid": self.sid(),
                });
                vec![Wire::Text(msg.to_string())]
            }
            Format::Raw if !self.meta.stereo && self.meta.tracks.len() < 2 => vec![Wire::Binary(le_bytes(&pcm))],
            Format::Raw => {
                self.pending[k].push_back(pcm);
                if self.meta.tracks.len() < 2 {
                    // One track in stereo: the other channel is silence.
                    self.pending[1 - k].push_back(Vec::new());
                }
                self.stereo_ready()
            }
        }
    }

    /// Raw stereo: frames whose other track has come, or is too far
    /// behind; mono with both tracks: the two mixed.
    fn stereo_ready(&mut self) -> Vec<Wire> {
        let mut out = Vec::new();
        loop {
            let [l, r] = &mut self.pending;
            let both = !l.is_empty() && !r.is_empty();
            let lagging = l.len() > STEREO_LAG || r.len() > STEREO_LAG;
            if !both && !lagging {
                return out;
            }
            let (a, b) = (l.pop_front(), r.pop_front());
            let n = a.as_ref().map_or(0, Vec::len).max(b.as_ref().map_or(0, Vec::len));
            let at = |v: &Option<Vec<i16>>, i: usize| v.as_ref().and_then(|v| v.get(i)).copied().unwrap_or(0);
            let mut bytes = Vec::with_capacity(4 * n);
            for i in 0..n {
                if self.meta.stereo {
                    bytes.extend_from_slice(&at(&a, i).to_le_bytes());
                    bytes.extend_from_slice(&at(&b, i).to_le_bytes());
                } else {
                    bytes.extend_from_slice(&at(&a, i).saturating_add(at(&b, i)).to_le_bytes());
                }
            }
            out.push(Wire::Binary(bytes));
        }
    }

    /// `f` at the stream's rate.
    fn resample(&mut self, k: usize, f: &Frame) -> Vec<i16> {
        let to = self.rate();
        if f.rate == to {
            return f.samples().to_vec();
        }
        if self.resamplers[k].as_ref().is_none_or(|(r, _)| *r != f.rate) {
            self.resamplers[k] = Resampler::new(f.rate, to, f.len).ok().map(|r| (f.rate, r));
        }
        let Some((_, r)) = &mut self.resamplers[k] else {
            return vec![0; (to / 50) as usize];
        };
        self.scratch.clear();
        self.scratch.extend(f.samples().iter().map(|&s| s as f32 / 32768.0));
        r.process(&self.scratch)
            .iter()
            .map(|&x| (x * 32768.0).clamp(-32768.0, 32767.0) as i16)
            .collect()
    }

    pub fn dtmf(&mut self, digit: char) -> Wire {
        let msg = match self.format {
            Format::Twilio => json!({
                "event": "dtmf",
                "streamSid": self.sid(),
                "sequenceNumber": self.next_seq(),
                "dtmf": {"track": "inbound_track", "digit": digit.to_string()},
            }),
            Format::Raw => json!({"event": "dtmf", "digit": digit.to_string()}),
        };
        Wire::Text(msg.to_string())
    }

    pub fn mark(&mut self, name: &str) -> Wire {
        let msg = match self.format {
            Format::Twilio => json!({
                "event": "mark",
                "sequenceNumber": self.next_seq(),
                "streamSid": self.sid(),
                "mark": {"name": name},
            }),
            Format::Raw => json!({"event": "mark", "name": name}),
        };
        Wire::Text(msg.to_string())
    }

    pub fn stop(&mut self) -> Wire {
        let msg = match self.format {
            Format::Twilio => json!({
                "event": "stop",
                "sequenceNumber": self.next_seq(),
                "stop": {"accountSid": "chorus", "callSid": self.meta.call_id},
                "streamSid": self.sid(),
            }),
            Format::Raw => json!({"event": "stop", "stream_id": self.sid()}),
        };
        Wire::Text(msg.to_string())
    }
}

fn le_bytes(pcm: &[i16]) -> Vec<u8> {
    pcm.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// What an application sent.
#[derive(Debug, PartialEq)]
pub enum Incoming {
    /// Mono PCM at the stream's rate.
    Audio(Vec<i16>),
    Mark(String),
    Clear,
    /// Understood and of no consequence (Twilio's other events).
    Ignored,
}

/// Longest mark name kept (Twilio's are short labels).
pub const MAX_MARK_NAME: usize = 256;

/// Reads one message from the application; an error says what was wrong.
pub fn parse(format: Format, msg: &Wire) -> Result<Incoming, String> {
    let text = match (format, msg) {
        (Format::Raw, Wire::Binary(b)) => {
            if b.len() % 2 != 0 {
                return Err(format!("{} bytes of 16-bit PCM is not whole samples", b.len()));
            }
            let pcm = b.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])).collect();
            return Ok(Incoming::Audio(pcm));
        }
        (Format::Twilio, Wire::Binary(_)) => return Err("binary message on a twilio stream".into()),
        (_, Wire::Text(t)) => t,
    };
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let event = v.get("event").and_then(Value::as_str).ok_or("no \"event\"")?;
    match event {
        "media" if format == Format::Twilio => {
            let payload = v
                .pointer("/media/payload")
                .and_then(Value::as_str)
                .ok_or("media without media.payload")?;
            let ulaw = base64::engine::general_purpose::STANDARD
                .decode(payload)
                .map_err(|e| format!("media.payload is not base64: {e}"))?;
            let mut pcm = vec![0i16; ulaw.len()];
            g711::Law::Ulaw.decode(&ulaw, &mut pcm);
            Ok(Incoming::Audio(pcm))
        }
        "mark" => {
            let name = v
                .pointer("/mark/name")
                .or_else(|| v.get("name"))
                .and_then(Value::as_str)
                .ok_or("mark without a name")?;
            if name.len() > MAX_MARK_NAME {
                return Err(format!("mark name over {MAX_MARK_NAME} bytes"));
            }
            Ok(Incoming::Mark(name.to_string()))
        }
        "clear" => Ok(Incoming::Clear),
        _ => Ok(Incoming::Ignored),
    }
}

#[cfg(test)]
mod tests;
