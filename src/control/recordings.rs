//! Recording calls and conferences to WAV or Ogg Opus files (see
//! `streams::recording`):
//! start, pause, resume, stop, list; for the HTTP API and ng.

use super::streams::{stop_tap, tap_call, tap_conference, MakeSink};
use super::{calls, conference_commands, lock, State};
use crate::error::Error;
use crate::store::record::{TapKind, TapRecord};
use crate::streams::{Owner, RecordOptions, Sink};
use serde_json::{json, Value};
use std::path::PathBuf;

/// Files named by the recording's id (and, started again by a taker, its
/// part: `<id>-1.wav`); the extension says the format.
fn file_sink(state: &State, opts: &RecordOptions, again: Option<TapRecord>) -> MakeSink {
    let dir = PathBuf::from(&state.config.recording_dir);
    let ext = if opts.format.as_deref() == Some("ogg") {
        "ogg"
    } else {
        "wav"
    };
    let resume = again.unwrap_or_else(|| TapRecord {
        id: String::new(),
        kind: TapKind::Recording,
        options: serde_json::to_value(opts).unwrap_or_default(),
        part: 0,
    });
    let part = match resume.part {
        0 => String::new(),
        n => format!("-{n}"),
    };
    MakeSink {
        prefix: "RE",
        make: Box::new(move |id| Sink::Recording {
            file: dir.join(format!("{id}{part}.{ext}")),
            metadata: dir.join(format!("{id}{part}.json")),
        }),
        resume: Some(resume),
    }
}

/// Records a call: leg `from_tag`'s (default: the first offerer's) voice and
/// what it hears, one party per channel.
pub async fn start_call(state: &State, call_id: &str, opts: RecordOptions) -> Result<Value, Error> {
    start_call_again(state, call_id, opts, None).await
}

async fn start_call_again(
    state: &State,
    call_id: &str,
    opts: RecordOptions,
    again: Option<TapRecord>,
) -> Result<Value, Error> {
    calls::entry(state, call_id, false)?;
    if opts.participant.is_some() {
        return Err(Error::BadRequest("participant is for conferences' recordings".into()));
    }
    let checked = opts.check(false)?;
    let sink = file_sink(state, &opts, again);
    tap_call(state, call_id, opts.from_tag.clone(), checked, sink).await
}

/// Records a conference's mix, or one participant.
pub async fn start_conference(state: &State, conf_id: &str, opts: RecordOptions) -> Result<Value, Error> {
    start_conference_again(state, conf_id, opts, None).await
}

async fn start_conference_again(
    state: &State,
    conf_id: &str,
    opts: RecordOptions,
    again: Option<TapRecord>,
) -> Result<Value, Error> {
    conference_commands::handle(state, conf_id)?;
    if opts.from_tag.is_some() {
        return Err(Error::BadRequest("from_tag is for calls' recordings".into()));
    }
    let checked = opts.check(opts.participant.is_none())?;
    let sink = file_sink(state, &opts, again);
    tap_conference(state, conf_id, opts.participant, checked, sink).await
}

/// A recording a taker starts again: its next part, under its id.
pub async fn start_again(state: &State, owner: &Owner, opts: RecordOptions, rec: TapRecord) -> Result<Value, Error> {
    let rec = TapRecord {
        part: rec.part + 1,
        ..rec
    };
    match owner {
        Owner::Call(id) => start_call_again(state, id, opts, Some(rec)).await,
        Owner::Conference(id) => start_conference_again(state, id, opts, Some(rec)).await,
    }
}

/// Pauses or resumes recording `id` of `owner`: nothing is written (nor
/// decoded) meanwhile, and the metadata lists the pause.
pub fn pause(state: &State, owner: &Owner, id: &str, paused: bool) -> Result<Value, Error> {
    let map = lock(&state.streams.map);
    match map.get(id) {
        Some(e) if &e.owner == owner && e.sink.is_recording() => {
            e.tap.set_paused(paused);
            Ok(e.to_json(id))
        }
        _ => Err(Error::NotFound(format!("{} has no recording `{id}`", owner.describe()))),
    }
}

pub async fn stop(state: &State, owner: &Owner, id: &str) -> Result<Value, Error> {
    stop_tap(state, owner, id, crate::streams::Kind::Recording).await
}

pub fn list(state: &State, owner: &Owner) -> Value {
    json!({ "recordings": state.streams.list(owner, crate::streams::Kind::Recording) })
}

/// The ids of `owner`'s recordings (ng acts on all of a call's).
pub fn ids(state: &State, owner: &Owner) -> Vec<String> {
    state.streams.ids(owner, crate::streams::Kind::Recording)
}
