//! What starting a stream takes, checked before anything starts: every
//! field comes from the API's caller.

use super::format::Format;
use crate::error::Error;
use crate::media::tap::Track;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Longest URL accepted.
const MAX_URL: usize = 2048;
/// Extra headers at most, and their bytes in all.
const MAX_HEADERS: usize = 16;
const MAX_HEADER_BYTES: usize = 8192;
/// A header's name and value at most.
const MAX_HEADER_NAME: usize = 64;
const MAX_HEADER_VALUE: usize = 512;
/// `custom_parameters`: entries, and a value's bytes, at most.
const MAX_CUSTOM: usize = 16;
const MAX_CUSTOM_VALUE: usize = 128;

/// `POST /v1/calls/{id}/streams` and `/v1/conferences/{id}/streams`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StartOptions {
    /// `ws://` or `wss://`: the application's WebSocket.
    pub url: String,
    pub format: Option<Format>,
    /// Raw only: 8000, 16000 (default), 24000 or 48000.
    pub sample_rate: Option<u32>,
    /// Raw only: 2 puts the inbound track left and the outbound right.
    pub channels: Option<u8>,
    /// `inbound` (default), `outbound` or `both`.
    pub tracks: Option<String>,
    /// Sent with the WebSocket handshake (an authorization token...).
    pub headers: Option<BTreeMap<String, String>>,
    /// Handed to the application in the start message.
    pub custom_parameters: Option<BTreeMap<String, String>>,
    /// The application's audio is played into the conference, or to the
    /// tapped leg of a call.
    pub bidirectional: Option<bool>,
    /// A call: the leg to tap, by its tag.
    pub from_tag: Option<String>,
    /// A conference: the participant to tap (none: the mix).
    pub participant: Option<u32>,
    /// With `participant`: the application's audio goes to that participant
    /// alone (a coach whispering to an agent); implies `bidirectional`.
    pub whisper: Option<bool>,
}

/// `POST /v1/calls/{id}/recordings` and `/v1/conferences/{id}/recordings`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RecordOptions {
    /// `wav` (16-bit PCM, the default) or `ogg` (Ogg Opus).
    pub format: Option<String>,
    /// 8000, 16000 (default), 24000 or 48000.
    pub sample_rate: Option<u32>,
    /// 2 (default with both tracks): inbound left, outbound right; 1 with
    /// both tracks mixes them.
    pub channels: Option<u8>,
    /// A call's or a participant's default is `both`; the mix's `inbound`.
    pub tracks: Option<String>,
    /// Written into the metadata JSON as `details`.
    pub details: Option<BTreeMap<String, String>>,
    /// A call: the leg whose tracks are recorded (default: the first offerer).
    pub from_tag: Option<String>,
    /// A conference: the participant (none: the mix).
    pub participant: Option<u32>,
}

impl RecordOptions {
    /// Checked, for a call or participant (`both` by default) or the mix.
    pub fn check(&self, mix: bool) -> Result<Checked, Error> {
        if let Some(f) = self.format.as_deref().filter(|f| !matches!(*f, "wav" | "ogg")) {
            return Err(bad(format!("format must be wav or ogg (Opus), not `{f}`")));
        }
        let default_tracks = if mix { "inbound" } else { "both" };
        let tracks = parse_tracks(self.tracks.as_deref().unwrap_or(default_tracks))?;
        let rate = self.sample_rate.unwrap_or(16000);
        if !matches!(rate, 8000 | 16000 | 24000 | 48000) {
            return Err(bad(format!(
                "sample_rate must be 8000, 16000, 24000 or 48000, not {rate}"
            )));
        }
        let both = tracks == [true, true];
        let stereo = match self.channels {
            None => both,
            Some(1) => false,
            Some(2) => true,
            Some(c) => return Err(bad(format!("channels must be 1 or 2, not {c}"))),
        };
        let details = self.details.clone().unwrap_or_default();
        if details.len() > MAX_CUSTOM || details.values().any(|v| v.len() > MAX_CUSTOM_VALUE) {
            return Err(bad(format!(
                "details: at most {MAX_CUSTOM}, of at most {MAX_CUSTOM_VALUE} bytes each"
            )));
        }
        Ok(Checked {
            url: String::new(),
            format: Format::Raw,
            rate,
            stereo,
            tracks,
            headers: Vec::new(),
            custom: details.into_iter().map(|(k, v)| (k, Value::String(v))).collect(),
            back: false,
            whisper: false,
        })
    }
}

fn parse_tracks(t: &str) -> Result<[bool; 2], Error> {
    match t {
        "inbound" => Ok([true, false]),
        "outbound" => Ok([false, true]),
        "both" => Ok([true, true]),
        t => Err(bad(format!("tracks must be inbound, outbound or both, not `{t}`"))),
    }
}

/// What a stream taps.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Target {
    Call { from_tag: String },
    Participant { participant: u32 },
    Mix,
}

impl Target {
    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Target::Call { .. } => "call",
            Target::Participant { .. } => "participant",
            Target::Mix => "mix",
        }
    }
}

/// Options once checked.
#[derive(Debug, Clone)]
pub struct Checked {
    pub url: String,
    pub format: Format,
    pub rate: u32,
    pub stereo: bool,
    /// Inbound, outbound.
    pub tracks: [bool; 2],
    pub headers: Vec<(String, String)>,
    pub custom: Map<String, Value>,
    /// The application's audio is played.
    pub back: bool,
    /// To the tapped participant alone.
    pub whisper: bool,
}

impl Checked {
    /// What the opening message says of stream `sid` on call or
    /// conference `id`, tapping `party`.
    pub fn meta(&self, sid: &str, id: &str, party: Option<String>) -> super::format::Meta {
        super::format::Meta {
            stream_id: sid.to_string(),
            call_id: id.to_string(),
            party,
            tracks: self.track_list(),
            custom: self.custom.clone(),
            rate: self.rate,
            stereo: self.stereo,
        }
    }

    pub fn track_list(&self) -> Vec<Track> {
        [(0, Track::Inbound), (1, Track::Outbound)]
            .into_iter()
            .filter(|(i, _)| self.tracks[*i])
            .map(|(_, t)| t)
            .collect()
    }
}

fn bad(m: String) -> Error {
    Error::BadRequest(m)
}

impl StartOptions {
    pub fn check(&self) -> Result<Checked, Error> {
        let url = self.url.trim();
        if url.len() > MAX_URL || !(url.starts_with("ws://") || url.starts_with("wss://")) {
            return Err(bad(format!(
                "url must be a ws:// or wss:// URL of at most {MAX_URL} bytes, not `{}`",
                url.chars().take(64).collect::<String>()
            )));
        }
        let uri: tokio_tungstenite::tungstenite::http::Uri =
            url.parse().map_err(|e| bad(format!("url `{url}`: {e}")))?;
        if uri.host().is_none_or(str::is_empty) {
            return Err(bad(format!("url `{url}` has no host")));
        }
        let format = self.format.unwrap_or(Format::Twilio);
        let tracks = parse_tracks(self.tracks.as_deref().unwrap_or("inbound"))?;
        let (rate, stereo) = match format {
            Format::Twilio => {
                if self.sample_rate.is_some() || self.channels.is_some() {
                    return Err(bad("format twilio is μ-law at 8000 Hz, one channel per track; use format raw for other rates or stereo".into()));
                }
                (8000, false)
            }
            Format::Raw => {
                let rate = self.sample_rate.unwrap_or(16000);
                if !matches!(rate, 8000 | 16000 | 24000 | 48000) {
                    return Err(bad(format!(
                        "sample_rate must be 8000, 16000, 24000 or 48000, not {rate}"
                    )));
                }
                let stereo = match self.channels.unwrap_or(1) {
                    1 => false,
                    2 => true,
                    c => return Err(bad(format!("channels must be 1 or 2, not {c}"))),
                };
                (rate, stereo)
            }
        };
        Ok(Checked {
            url: url.to_string(),
            format,
            rate,
            stereo,
            tracks,
            headers: self.check_headers()?,
            custom: self.check_custom()?,
            back: self.bidirectional.unwrap_or(false) || self.whisper == Some(true),
            whisper: self.whisper == Some(true),
        })
    }

    fn check_headers(&self) -> Result<Vec<(String, String)>, Error> {
        use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
        let headers = self.headers.clone().unwrap_or_default();
        let bytes: usize = headers.iter().map(|(k, v)| k.len() + v.len()).sum();
        if headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
            return Err(bad(format!(
                "headers: at most {MAX_HEADERS} and {MAX_HEADER_BYTES} bytes in all"
            )));
        }
        for (k, v) in &headers {
            let name_ok = !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if !name_ok || !v.bytes().all(|b| (b' '..=b'~').contains(&b)) {
                return Err(bad(format!(
                    "header `{k}`: names are letters, digits and '-'; values printable ASCII"
                )));
            }
            if k.len() > MAX_HEADER_NAME || v.len() > MAX_HEADER_VALUE {
                return Err(bad(format!(
                    "header `{k}`: names of at most {MAX_HEADER_NAME} bytes, values of at most {MAX_HEADER_VALUE}"
                )));
            }
            HeaderName::from_bytes(k.as_bytes()).map_err(|_| bad(format!("header name `{k}` is not valid")))?;
            HeaderValue::from_str(v).map_err(|_| bad(format!("the value of header `{k}` is not valid")))?;
        }
        Ok(headers.into_iter().collect())
    }

    fn check_custom(&self) -> Result<Map<String, Value>, Error> {
        let custom = self.custom_parameters.clone().unwrap_or_default();
        if custom.len() > MAX_CUSTOM || custom.values().any(|v| v.len() > MAX_CUSTOM_VALUE) {
            return Err(bad(format!(
                "custom_parameters: at most {MAX_CUSTOM}, of at most {MAX_CUSTOM_VALUE} bytes each"
            )));
        }
        Ok(custom.into_iter().map(|(k, v)| (k, Value::String(v))).collect())
    }

    /// A call's stream names its leg, and nothing of conferences'.
    pub fn check_for_call(&self) -> Result<Checked, Error> {
        if self.participant.is_some() {
            return Err(bad(
                "participant is for conferences' streams; a call's stream names from_tag".into(),
            ));
        }
        if self.from_tag.is_none() {
            return Err(bad("a call's stream needs from_tag: the leg to tap".into()));
        }
        if self.whisper.is_some() {
            return Err(bad(
                "whisper is for a conference participant; a call's bidirectional stream speaks to its leg alone".into(),
            ));
        }
        self.check()
    }

    pub fn check_for_conference(&self) -> Result<Checked, Error> {
        if self.from_tag.is_some() {
            return Err(bad(
                "from_tag is for calls' streams; a conference's names participant (or none: the mix)".into(),
            ));
        }
        if self.whisper == Some(true) && self.participant.is_none() {
            return Err(bad("whisper names the participant who hears it (participant)".into()));
        }
        self.check()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(json: &str) -> StartOptions {
        serde_json::from_str(json).expect("options")
    }

    #[test]
    fn defaults_are_twilio_inbound() {
        let c = opts(r#"{"url":"ws://127.0.0.1:9/x"}"#).check().expect("ok");
        assert_eq!(
            (c.format, c.rate, c.tracks, c.back),
            (Format::Twilio, 8000, [true, false], false)
        );
    }

    #[test]
    fn bad_options_say_what_is_wrong() {
        for (json, says) in [
            (r#"{"url":"http://x/"}"#, "ws://"),
            (r#"{"url":"ws://"}"#, "url"),
            (r#"{"url":"ws://h/","tracks":"all"}"#, "tracks"),
            (r#"{"url":"ws://h/","sample_rate":8000}"#, "format raw"),
            (r#"{"url":"ws://h/","format":"raw","sample_rate":11025}"#, "sample_rate"),
            (r#"{"url":"ws://h/","format":"raw","channels":3}"#, "channels"),
            (
                r#"{"url":"ws://h/","custom_parameters":{"a":"0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"}}"#,
                "custom_parameters",
            ),
            (r#"{"url":"ws://h/","headers":{"bad name":"x"}}"#, "names are"),
            (r#"{"url":"ws://h/","headers":{"x":"a\nb"}}"#, "values"),
        ] {
            let e = opts(json).check().unwrap_err().to_string();
            assert!(e.contains(says), "{json}: {e}");
        }
    }

    #[test]
    fn a_whisper_names_its_participant_and_speaks() {
        let e = opts(r#"{"url":"ws://h/","whisper":true}"#)
            .check_for_conference()
            .unwrap_err();
        assert!(e.to_string().contains("participant"), "{e}");
        let e = opts(r#"{"url":"ws://h/","from_tag":"a","whisper":true}"#)
            .check_for_call()
            .unwrap_err();
        assert!(e.to_string().contains("conference participant"), "{e}");
        let c = opts(r#"{"url":"ws://h/","participant":3,"whisper":true}"#)
            .check_for_conference()
            .unwrap();
        assert!(c.back && c.whisper);
    }
}
