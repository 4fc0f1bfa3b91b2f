//! Playing a WAV or Ogg Opus file from `media_dir`, a tone or silence into a
//! conference (announcements, hold music: everyone hears it, mixed like a
//! voice) or to one leg of a relayed call (mixed under the other
//! party); once, a number of times or in a loop; stopped at any time.

use super::streams::{stop_tap, tap_call, tap_conference, MakeSink};
use super::{calls, conference_commands, State};
use crate::error::Error;
use crate::store::record::{TapKind, TapRecord};
use crate::streams::playback::Source;
use crate::streams::{Checked, Kind, Owner, Sink};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::Arc;

/// Largest file played (about 8 minutes of 48 kHz stereo).
const MAX_FILE: u64 = 100 << 20;
/// Longest tone.
const MAX_TONE_MS: u32 = 600_000;

/// `POST /v1/conferences/{id}/playbacks`: one of `file` and `tone`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PlayOptions {
    /// A file name in `media_dir` (no directories): 16-bit PCM WAV or Ogg Opus.
    pub file: Option<String>,
    pub tone: Option<Tone>,
    #[serde(rename = "loop")]
    pub looping: Option<bool>,
    /// Times to play it (default 1).
    pub times: Option<u32>,
    /// A call: the leg that hears it.
    pub from_tag: Option<String>,
    /// A conference: the participant who alone hears it (none: everyone).
    pub participant: Option<u32>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Tone {
    /// Hz, 0 (silence) to 4000.
    pub frequency: u32,
    pub ms: u32,
}

async fn source(state: &State, o: &PlayOptions) -> Result<Source, Error> {
    let times = match (o.looping, o.times) {
        (Some(true), _) => 0,
        (_, Some(n)) if n == 0 || n > 10_000 => {
            return Err(Error::BadRequest("times is 1 to 10000 (loop: until stopped)".into()))
        }
        (_, Some(n)) => n,
        _ => 1,
    };
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
            // Decoding minutes of Opus takes a while: off the runtime's threads.
            let (rate, pcm) = tokio::task::spawn_blocking(move || read_media(&bytes))
                .await
                .map_err(|e| Error::Internal(format!("reading a media file: {e}")))?
                .map_err(|e| Error::BadRequest(format!("`{name}`: {e}")))?;
            Ok(Source {
                rate,
                pcm: Arc::new(pcm),
                times,
                name: name.clone(),
            })
        }
        (None, Some(t)) => {
            if t.frequency > 4000 || t.ms == 0 || t.ms > MAX_TONE_MS {
                return Err(Error::BadRequest(format!(
                    "tone: frequency 0 (silence) to 4000 Hz, 1 to {MAX_TONE_MS} ms"
                )));
            }
            Ok(Source::tone(t.frequency, t.ms, times))
        }
        _ => Err(Error::BadRequest("give one of file and tone".into())),
    }
}

/// A WAV or Ogg Opus file's rate and mono samples, told apart by their
/// first bytes.
pub fn read_media(bytes: &[u8]) -> Result<(u32, Vec<i16>), String> {
    match bytes.get(..4) {
        Some(b"OggS") => crate::media::ogg::read::decode(bytes),
        Some(b"RIFF") => crate::media::wav::read(bytes),
        _ => Err("not a WAV or Ogg Opus file".into()),
    }
}

/// The tap a playback runs on: no tracks out, its audio back.
fn playback_tap(src: Source, opts: &PlayOptions, again: Option<TapRecord>) -> (Checked, MakeSink) {
    let whisper = opts.participant.is_some();
    let resume = again.unwrap_or_else(|| TapRecord {
        id: String::new(),
        kind: TapKind::Playback,
        options: serde_json::to_value(opts).unwrap_or_default(),
        part: 0,
    });
    let checked = Checked {
        url: String::new(),
        format: crate::streams::format::Format::Raw,
        rate: src.rate,
        stereo: false,
        tracks: [false, false],
        headers: Vec::new(),
        custom: Default::default(),
        back: true,
        whisper,
    };
    let sink = MakeSink {
        prefix: "PB",
        make: Box::new(move |_| Sink::Playback(src)),
        resume: Some(resume),
    };
    (checked, sink)
}

/// Plays into conference `conf_id`, to everyone or to one participant
/// alone; answers the playback's id.
pub async fn start(state: &State, conf_id: &str, opts: PlayOptions) -> Result<Value, Error> {
    start_again(state, &Owner::Conference(conf_id.to_string()), opts, None).await
}

/// Starts a playback, or (`again`) one a taker starts again under its id.
pub async fn start_again(
    state: &State,
    owner: &Owner,
    opts: PlayOptions,
    again: Option<TapRecord>,
) -> Result<Value, Error> {
    let conf_id = match owner {
        Owner::Conference(id) => id.as_str(),
        Owner::Call(id) => return start_call_again(state, id, opts, again).await,
    };
    conference_commands::handle(state, conf_id)?;
    if opts.from_tag.is_some() {
        return Err(Error::BadRequest(
            "from_tag is for calls: a conference's playback is heard by all, or by one participant".into(),
        ));
    }
    let (checked, sink) = playback_tap(source(state, &opts).await?, &opts, again);
    tap_conference(state, conf_id, opts.participant, checked, sink).await
}

/// Plays to leg `from_tag` of a relayed call, mixed under
/// what the other party says.
pub async fn start_call(state: &State, call_id: &str, opts: PlayOptions) -> Result<Value, Error> {
    start_call_again(state, call_id, opts, None).await
}

async fn start_call_again(
    state: &State,
    call_id: &str,
    opts: PlayOptions,
    again: Option<TapRecord>,
) -> Result<Value, Error> {
    calls::entry(state, call_id, false)?;
    let tag = opts
        .from_tag
        .clone()
        .ok_or_else(|| Error::BadRequest("a call's playback needs from_tag: the leg that hears it".into()))?;
    if opts.participant.is_some() {
        return Err(Error::BadRequest(
            "participant is for conferences: a call's playback names the leg (from_tag)".into(),
        ));
    }
    let (checked, sink) = playback_tap(source(state, &opts).await?, &opts, again);
    tap_call(state, call_id, Some(tag), checked, sink).await
}

pub async fn stop(state: &State, owner: &Owner, id: &str) -> Result<Value, Error> {
    stop_tap(state, owner, id, Kind::Playback).await
}

pub fn list(state: &State, owner: &Owner) -> Value {
    json!({ "playbacks": state.streams.list(owner, Kind::Playback) })
}

/// The ids of `owner`'s playbacks (ng `stop media` stops them all).
pub fn ids(state: &State, owner: &Owner) -> Vec<String> {
    state.streams.ids(owner, crate::streams::Kind::Playback)
}
