//! ng commands for WebSocket audio streams (chorus's own; rtpengine has
//! none): `start stream` taps a call's leg (`call-id`, `from-tag`, `url`,
//! and optionally `format`, `tracks`, `sample-rate`, `channels`,
//! `headers`, `custom-parameters`) and answers its `stream-id`;
//! `stop stream` stops it (`call-id`, `stream-id`). And rtpengine's
//! `start recording` (or resume a paused one), `pause recording` and
//! `stop recording`, on all of a call's recordings.

use super::{recordings, streams, State};
use crate::error::Error;
use crate::streams::{Owner, StartOptions};
use crate::wire::bencode::Value;
use serde_json::{json, Map, Value as Json};

/// The keys these commands read (the others warn).
pub const KEYS: &[&str] = &[
    "url",
    "format",
    "tracks",
    "sample-rate",
    "channels",
    "headers",
    "custom-parameters",
    "stream-id",
    "code",
    "duration",
    "volume",
    "file",
    "repeat-times",
];

pub async fn execute(state: &State, command: &str, d: &Value) -> Result<Vec<(&'static str, Value)>, Error> {
    let call_id = text(d, "call-id")?.ok_or_else(|| Error::BadRequest("no `call-id`".into()))?;
    match command {
        "start stream" => {
            let opts: StartOptions =
                serde_json::from_value(options(d)?).map_err(|e| Error::BadRequest(format!("start stream: {e}")))?;
            let started = streams::start_call(state, &call_id, opts).await?;
            let sid = started["stream_id"].as_str().unwrap_or_default();
            Ok(vec![("stream-id", Value::str(sid))])
        }
        "start recording" | "pause recording" | "stop recording" => recording(state, command, &call_id, d).await,
        "play media" => {
            let opts = super::playbacks::PlayOptions {
                file: Some(
                    text(d, "file")?.ok_or_else(|| Error::BadRequest("no `file` (a name in media_dir)".into()))?,
                ),
                tone: None,
                looping: None,
                times: match d.get("repeat-times") {
                    None => None,
                    Some(Value::Int(n)) => Some(u32::try_from(*n).unwrap_or(0).max(1)),
                    Some(_) => text(d, "repeat-times")?.and_then(|v| v.parse().ok()),
                },
                from_tag: Some(
                    text(d, "from-tag")?
                        .ok_or_else(|| Error::BadRequest("no `from-tag` (the leg that hears it)".into()))?,
                ),
                participant: None,
            };
            let started = super::playbacks::start_call(state, &call_id, opts).await?;
            let id = started["playback_id"].as_str().unwrap_or_default();
            Ok(vec![("playback-id", Value::str(id))])
        }
        "stop media" => {
            let owner = Owner::Call(call_id.clone());
            for id in super::playbacks::ids(state, &owner) {
                super::playbacks::stop(state, &owner, &id).await?;
            }
            Ok(Vec::new())
        }
        "play DTMF" => {
            let number = |k: &str| -> Result<Option<u32>, Error> {
                match d.get(k) {
                    None => Ok(None),
                    Some(Value::Int(n)) => Ok(u32::try_from(*n).ok()),
                    Some(_) => Ok(text(d, k)?.and_then(|v| v.parse().ok())),
                }
            };
            let p = super::play_dtmf::PlayDtmf {
                from_tag: text(d, "from-tag")?.ok_or_else(|| Error::BadRequest("no `from-tag`".into()))?,
                digits: text(d, "code")?.ok_or_else(|| Error::BadRequest("no `code` (the keys)".into()))?,
                duration_ms: number("duration")?,
                volume: number("volume")?.map(|v| v.min(255) as u8),
            };
            super::play_dtmf::play(state, &call_id, p).await?;
            Ok(Vec::new())
        }
        _ => {
            let sid = text(d, "stream-id")?.ok_or_else(|| Error::BadRequest("no `stream-id`".into()))?;
            streams::stop(state, &Owner::Call(call_id), &sid).await?;
            Ok(Vec::new())
        }
    }
}

/// rtpengine's recording commands: one stereo WAV of the call (the
/// offerer's voice left, the answerer's right); `start recording` resumes
/// recordings paused before.
/// `record-call` on an offer or answer (Kamailio's `record-call=on`):
/// `yes`/`on` records the call from then on, once (a recording running is
/// kept); `no`/`off` stops its recordings. The offer or answer stands
/// whatever happens: a recording that cannot start is a warning.
pub async fn record_call(state: &State, call_id: &str, d: &Value, warnings: &mut Vec<String>) -> Result<(), Error> {
    let Some(flag) = text(d, "record-call")? else {
        return Ok(());
    };
    let owner = Owner::Call(call_id.to_string());
    let ids = recordings::ids(state, &owner);
    match flag.to_ascii_lowercase().as_str() {
        "yes" | "on" if ids.is_empty() => {
            let opts = crate::streams::RecordOptions::default();
            if let Err(e) = recordings::start_call(state, call_id, opts).await {
                warnings.push(format!("record-call: the recording did not start: {e}"));
            }
        }
        "yes" | "on" => {}
        "no" | "off" => {
            for id in ids {
                let _ = recordings::stop(state, &owner, &id).await;
            }
        }
        other => warnings.push(format!("record-call `{other}`: yes, on, no or off")),
    }
    Ok(())
}

async fn recording(
    state: &State,
    command: &str,
    call_id: &str,
    d: &Value,
) -> Result<Vec<(&'static str, Value)>, Error> {
    let owner = Owner::Call(call_id.to_string());
    let ids = recordings::ids(state, &owner);
    match command {
        "start recording" if ids.is_empty() => {
            let opts = crate::streams::RecordOptions {
                from_tag: text(d, "from-tag")?,
                ..Default::default()
            };
            let started = recordings::start_call(state, call_id, opts).await?;
            let id = started["recording_id"].as_str().unwrap_or_default();
            Ok(vec![("recording-id", Value::str(id))])
        }
        "stop recording" => {
            for id in ids {
                recordings::stop(state, &owner, &id).await?;
            }
            Ok(Vec::new())
        }
        _ => {
            let paused = command == "pause recording";
            for id in ids {
                recordings::pause(state, &owner, &id, paused)?;
            }
            Ok(Vec::new())
        }
    }
}

/// The ng dictionary as the HTTP API's start options.
fn options(d: &Value) -> Result<Json, Error> {
    let mut o = Map::new();
    for (ng, api) in [
        ("url", "url"),
        ("format", "format"),
        ("tracks", "tracks"),
        ("from-tag", "from_tag"),
    ] {
        if let Some(v) = text(d, ng)? {
            o.insert(api.into(), json!(v));
        }
    }
    for (ng, api) in [("sample-rate", "sample_rate"), ("channels", "channels")] {
        match d.get(ng) {
            None => {}
            Some(Value::Int(n)) => {
                o.insert(api.into(), json!(n));
            }
            Some(_) => {
                let v = text(d, ng)?.unwrap_or_default();
                let n: u32 = v
                    .parse()
                    .map_err(|_| Error::BadRequest(format!("`{ng}` must be a number, not `{v}`")))?;
                o.insert(api.into(), json!(n));
            }
        }
    }
    for (ng, api) in [("headers", "headers"), ("custom-parameters", "custom_parameters")] {
        match d.get(ng) {
            None => {}
            Some(Value::Dict(items)) => {
                let mut m = Map::new();
                for (k, v) in items {
                    let (Ok(k), Some(v)) = (std::str::from_utf8(k), v.as_str()) else {
                        return Err(Error::BadRequest(format!("`{ng}` must map strings to strings")));
                    };
                    m.insert(k.into(), json!(v));
                }
                o.insert(api.into(), Json::Object(m));
            }
            Some(_) => return Err(Error::BadRequest(format!("`{ng}` must be a dictionary"))),
        }
    }
    Ok(Json::Object(o))
}

fn text(d: &Value, key: &str) -> Result<Option<String>, Error> {
    match d.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_str()
            .map(|s| Some(s.to_string()))
            .ok_or_else(|| Error::BadRequest(format!("`{key}` must be a UTF-8 string"))),
    }
}
