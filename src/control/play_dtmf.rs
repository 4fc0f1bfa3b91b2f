//! Key presses sent into a relayed call (ng `play DTMF`, `POST
//! /v1/calls/{id}/dtmf`): as if leg `from_tag` pressed them, the other leg
//! hears them as RFC 4733 events on its telephone-event payload type.

use super::{calls, State};
use crate::error::Error;
use crate::media::dtmf_out::{code, MAX_QUEUED};
use crate::worker::{Command, WorkerError};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::oneshot;

/// `POST /v1/calls/{id}/dtmf`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlayDtmf {
    /// The leg the keys seem to come from; the other leg hears them.
    pub from_tag: String,
    /// 0-9, *, #, A-D.
    pub digits: String,
    /// Each key's length: 40 to 5000 ms (default 100).
    pub duration_ms: Option<u32>,
    /// -dBm0, 0 to 63 (default 10).
    pub volume: Option<u8>,
}

pub async fn play(state: &State, call_id: &str, p: PlayDtmf) -> Result<Value, Error> {
    let handle = calls::entry(state, call_id, false)?;
    let codes: Vec<u8> = p
        .digits
        .chars()
        .map(|c| code(c).ok_or_else(|| Error::BadRequest(format!("`{c}` is not a key: digits are 0-9, *, #, A-D"))))
        .collect::<Result<_, _>>()?;
    if codes.is_empty() || codes.len() > MAX_QUEUED {
        return Err(Error::BadRequest(format!("digits: 1 to {MAX_QUEUED} keys")));
    }
    let duration_ms = p.duration_ms.unwrap_or(100);
    let volume = p.volume.unwrap_or(10);
    if !(40..=5000).contains(&duration_ms) || volume > 63 {
        return Err(Error::BadRequest(
            "duration_ms is 40 to 5000, volume 0 to 63 (-dBm0)".into(),
        ));
    }
    let e = handle.lock().await;
    let from = e
        .session
        .leg_by_tag(&p.from_tag)
        .ok_or_else(|| Error::NotFound(format!("call `{call_id}` has no leg tagged `{}`", p.from_tag)))?;
    let to = 1 - from;
    let stream = e
        .session
        .streams
        .iter()
        .position(|s| s.media == "audio" && s.enabled)
        .ok_or_else(|| Error::Conflict(format!("call `{call_id}` has no audio stream")))?;
    // Its codec's telephone-event (8000, or 48000 beside Opus).
    let event = e.session.legs[to]
        .sdp
        .as_ref()
        .and_then(|sdp| sdp.media.get(stream))
        .and_then(|m| crate::media::codec::negotiate(m).ok())
        .and_then(|c| Some((c.dtmf_pt?, c.clock_rate)))
        .ok_or_else(|| {
            Error::Conflict("the leg that would hear them did not offer telephone-event at its codec's clock".into())
        })?;
    let (worker, key) = e.placement();
    let (reply, rx) = oneshot::channel();
    state.workers[worker].send(Command::Dtmf {
        key,
        stream,
        leg: to,
        codes,
        duration_ms,
        volume,
        event,
        reply,
    })?;
    drop(e);
    rx.await.map_err(|_| WorkerError::Dropped)??;
    Ok(json!({ "call_id": call_id, "from_tag": p.from_tag, "digits": p.digits, "duration_ms": duration_ms }))
}
