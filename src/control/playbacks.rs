//! Playing a WAV file from `media_dir`, a tone or silence into a
//! conference (announcements, hold music): everyone hears it, mixed like
//! a voice; once or in a loop; stopped at any time.

use super::streams::{stop_tap, tap_conference, MakeSink};
use super::{conference_commands, State};
use crate::error::Error;
use crate::streams::playback::Source;
use crate::streams::{Checked, Kind, Owner, Sink};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// Largest file played (about 8 minutes of 48 kHz stereo).
const MAX_FILE: u64 = 100 << 20;
/// Longest tone.
const MAX_TONE_MS: u32 = 600_000;

/// `POST /v1/conferences/{id}/playbacks`: one of `file` and `tone`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlayOptions {
    /// A file name in `media_dir` (no directories): 16-bit PCM WAV.
    pub file: Option<String>,
    pub tone: Option<Tone>,
    #[serde(rename = "loop")]
    pub looping: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tone {
    /// Hz, 0 (silence) to 4000.
    pub frequency: u32,
    pub ms: u32,
}

async fn source(state: &State, o: &PlayOptions) -> Result<Source, Error> {
    let looping = o.looping.unwrap_or(false);
    match (&o.file, &o.tone) {
        (Some(name), None) => {
            let plain = !name.is_empty()
                && !name.starts_with('.')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            if !plain {
                return Err(Error::BadRequest(format!(
                    "file `{name}` must be a plain file name in media_dir (letters, digits, '.', '_', '-')"
                )));
            }
            let path = std::path::Path::new(&state.config.media_dir).join(name);
            let not_there = |e: std::io::Error| Error::NotFound(format!("media file `{name}`: {e}"));
            let len = tokio::fs::metadata(&path).await.map_err(not_there)?.len();
            if len > MAX_FILE {
                return Err(Error::BadRequest(format!(
                    "media file `{name}` is over {MAX_FILE} bytes"
                )));
            }
            let bytes = tokio::fs::read(&path).await.map_err(not_there)?;
            let (rate, pcm) =
                crate::media::wav::read(&bytes).map_err(|e| Error::BadRequest(format!("`{name}`: {e}")))?;
            Ok(Source {
                rate,
                pcm: Arc::new(pcm),
                looping,
                name: name.clone(),
            })
        }
        (None, Some(t)) => {
            if t.frequency > 4000 || t.ms == 0 || t.ms > MAX_TONE_MS {
                return Err(Error::BadRequest(format!(
                    "tone: frequency 0 (silence) to 4000 Hz, 1 to {MAX_TONE_MS} ms"
                )));
            }
            Ok(Source::tone(t.frequency, t.ms, looping))
        }
        _ => Err(Error::BadRequest("give one of file and tone".into())),
    }
}

/// Plays into conference `conf_id`; answers the playback's id.
pub async fn start(state: &State, conf_id: &str, opts: PlayOptions) -> Result<Value, Error> {
    conference_commands::handle(state, conf_id)?;
    let src = source(state, &opts).await?;
    let checked = Checked {
        url: String::new(),
        format: crate::streams::format::Format::Raw,
        rate: src.rate,
        stereo: false,
        tracks: [false, false],
        headers: Vec::new(),
        custom: Default::default(),
        back: true,
    };
    let sink = MakeSink {
        prefix: "PB",
        make: Box::new(move |_| Sink::Playback(src)),
    };
    tap_conference(state, conf_id, None, checked, sink).await
}

pub async fn stop(state: &State, conf_id: &str, id: &str) -> Result<Value, Error> {
    stop_tap(state, &Owner::Conference(conf_id.to_string()), id, Kind::Playback).await
}

pub fn list(state: &State, conf_id: &str) -> Value {
    json!({ "playbacks": state.streams.list(&Owner::Conference(conf_id.to_string()), Kind::Playback) })
}
