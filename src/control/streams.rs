//! Starting, listing and stopping WebSocket audio streams (see `streams`),
//! for both front doors; and what the streams report, to callbacks and
//! conference events.

use super::{calls, conference_commands, lock, State};
use crate::error::Error;
use crate::media::codec::{self, CodecSpec};
use crate::media::conference::{Back, TapPoint};
use crate::media::tap::Tap;
use crate::store::record::{TapKind, TapRecord};
use crate::streams::format::Meta;
use crate::streams::{Checked, Entry, Kind, Owner, Registry, Sink, StartOptions, StreamEvent, Target};
use crate::worker::{Command, ConfCommand, TapSpec, WorkerError};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::{mpsc, oneshot};

/// A tap's sink, made once its id is known (a recording's file is named
/// by it); ids start with `prefix`.
pub struct MakeSink {
    pub prefix: &'static str,
    pub make: Box<dyn FnOnce(&str) -> Sink + Send>,
    /// How a taker starts it again; a given id is kept (a taker's).
    pub resume: Option<TapRecord>,
}

/// A stream's sink; `again`: the record of a stream a taker starts again.
fn websocket(c: &Checked, opts: &StartOptions, again: Option<TapRecord>) -> MakeSink {
    let (url, format) = (c.url.clone(), c.format);
    let resume = again.unwrap_or_else(|| TapRecord {
        id: String::new(),
        kind: TapKind::Stream,
        options: serde_json::to_value(opts).unwrap_or_default(),
        part: 0,
    });
    MakeSink {
        prefix: "MZ",
        make: Box::new(move |_| Sink::WebSocket { url, format }),
        resume: Some(resume),
    }
}

/// Taps a relayed call's leg (`from_tag`) and streams it.
pub async fn start_call(state: &State, call_id: &str, opts: StartOptions) -> Result<Value, Error> {
    start_call_again(state, call_id, opts, None).await
}

async fn start_call_again(
    state: &State,
    call_id: &str,
    opts: StartOptions,
    again: Option<TapRecord>,
) -> Result<Value, Error> {
    // An unknown call is the first thing to say.
    calls::entry(state, call_id, false)?;
    let checked = opts.check_for_call()?;
    let tag = opts.from_tag.clone().unwrap_or_default();
    let sink = websocket(&checked, &opts, again);
    tap_call(state, call_id, Some(tag), checked, sink).await
}

/// Taps leg `tag` of a call (none: the leg that offered first) into `sink`.
pub async fn tap_call(
    state: &State,
    call_id: &str,
    tag: Option<String>,
    checked: Checked,
    sink: MakeSink,
) -> Result<Value, Error> {
    let handle = calls::entry(state, call_id, false)?;
    let e = handle.lock().await;
    let tag = match tag {
        Some(t) => t,
        None => e.session.legs[0].tag.clone().unwrap_or_default(),
    };
    let leg = e
        .session
        .leg_by_tag(&tag)
        .ok_or_else(|| Error::NotFound(format!("call `{call_id}` has no leg tagged `{tag}`")))?;
    let stream = e
        .session
        .streams
        .iter()
        .position(|s| s.media == "audio" && s.enabled)
        .ok_or_else(|| Error::Conflict(format!("call `{call_id}` has no audio stream to tap")))?;
    // The tapped leg's codecs first: audio sent to it is in its first.
    let [a, b] = &e.session.legs;
    let order = if leg == 0 { [a, b] } else { [b, a] };
    let codecs: Vec<CodecSpec> = order
        .into_iter()
        .filter_map(|l| l.sdp.as_ref()?.media.get(stream))
        .flat_map(codec::all_in)
        .collect();
    let owner = Owner::Call(call_id.to_string());
    let target = Target::Call { from_tag: tag.clone() };
    let (sid, tap, spec) = reserve(state, &owner, &target, &checked, sink)?;
    let (worker, key) = e.placement();
    let result = tap_on(state, worker, |reply| Command::Tap {
        key,
        stream,
        leg,
        codecs,
        spec,
        reply,
    });
    drop(e);
    let result = result.await;
    let meta = checked.meta(&sid, call_id, Some(tag));
    let body = launch(state, sid, (worker, key), result, checked, meta, tap)?;
    rerecord(state, &owner).await;
    Ok(body)
}

/// Taps a conference's mix, or one participant, and streams it.
pub async fn start_conference(state: &State, conf_id: &str, opts: StartOptions) -> Result<Value, Error> {
    start_conference_again(state, conf_id, opts, None).await
}

async fn start_conference_again(
    state: &State,
    conf_id: &str,
    opts: StartOptions,
    again: Option<TapRecord>,
) -> Result<Value, Error> {
    conference_commands::handle(state, conf_id)?;
    let checked = opts.check_for_conference()?;
    let sink = websocket(&checked, &opts, again);
    tap_conference(state, conf_id, opts.participant, checked, sink).await
}

/// Starts a stream or recording again, under its id, on the instance that
/// took its call or conference over.
pub async fn resume(state: &State, owner: &Owner, rec: TapRecord) -> Result<Value, Error> {
    let bad = |e: serde_json::Error| Error::BadRequest(format!("a stored stream's options: {e}"));
    match (rec.kind, owner) {
        (TapKind::Stream, Owner::Call(id)) => {
            let opts = serde_json::from_value(rec.options.clone()).map_err(bad)?;
            start_call_again(state, id, opts, Some(rec)).await
        }
        (TapKind::Stream, Owner::Conference(id)) => {
            let opts = serde_json::from_value(rec.options.clone()).map_err(bad)?;
            start_conference_again(state, id, opts, Some(rec)).await
        }
        (TapKind::Recording, _) => {
            let opts = serde_json::from_value(rec.options.clone()).map_err(bad)?;
            super::recordings::start_again(state, owner, opts, rec).await
        }
        (TapKind::Playback, _) => {
            let opts = serde_json::from_value(rec.options.clone()).map_err(bad)?;
            super::playbacks::start_again(state, owner, opts, Some(rec)).await
        }
    }
}

/// Writes the owner's record again (its streams and recordings changed),
/// when chorus keeps state in Redis.
pub async fn rerecord(state: &State, owner: &Owner) {
    if state.store.is_none() {
        return;
    }
    match owner {
        Owner::Call(id) => {
            if let Ok(h) = calls::entry(state, id, false) {
                super::replicate::call_changed(state, &*h.lock().await);
            }
        }
        Owner::Conference(id) => {
            if let Ok(h) = conference_commands::handle(state, id) {
                super::replicate::conference_changed(state, &*h.lock().await);
            }
        }
    }
}

/// Taps a conference's mix (no `participant`) or a participant into `sink`.
pub async fn tap_conference(
    state: &State,
    conf_id: &str,
    participant: Option<u32>,
    checked: Checked,
    sink: MakeSink,
) -> Result<Value, Error> {
    let handle = conference_commands::handle(state, conf_id)?;
    let e = handle.lock().await;
    let (point, target) = match participant {
        Some(pid) if e.participants.contains_key(&pid) => {
            (TapPoint::Participant(pid), Target::Participant { participant: pid })
        }
        Some(pid) => {
            return Err(Error::NotFound(format!(
                "conference `{conf_id}` has no participant {pid}"
            )))
        }
        None => (TapPoint::Mix, Target::Mix),
    };
    let owner = Owner::Conference(conf_id.to_string());
    let (sid, tap, spec) = reserve(state, &owner, &target, &checked, sink)?;
    let (worker, key) = e.placement();
    let result = tap_on(state, worker, |reply| {
        Command::Conference(ConfCommand::Tap {
            key,
            point,
            spec,
            reply,
        })
    });
    drop(e);
    let result = result.await;
    let meta = checked.meta(&sid, conf_id, participant.map(|p| p.to_string()));
    let body = launch(state, sid, (worker, key), result, checked, meta, tap)?;
    rerecord(state, &owner).await;
    Ok(body)
}

/// Sends the worker its tap command at once (while the caller still holds
/// the call or conference); the future waits for its answer.
fn tap_on(
    state: &State,
    worker: usize,
    make: impl FnOnce(oneshot::Sender<Result<(), WorkerError>>) -> Command,
) -> impl std::future::Future<Output = Result<(), WorkerError>> {
    let (reply, rx) = oneshot::channel();
    let sent = state.workers[worker].send(make(reply));
    async move {
        sent?;
        rx.await.map_err(|_| WorkerError::Dropped)?
    }
}

/// Takes a place for a new stream under the limits.
fn reserve(
    state: &State,
    owner: &Owner,
    target: &Target,
    c: &Checked,
    sink: MakeSink,
) -> Result<(String, Arc<Tap>, TapSpec), Error> {
    let reg = &state.streams;
    let mut map = lock(&reg.map);
    if map.len() >= reg.max {
        return Err(state.refuse("streams", format!("chorus runs {} streams, its max_streams", reg.max)));
    }
    if map.values().filter(|e| &e.owner == owner).count() >= reg.max_per_owner {
        state.metrics.limited.with_label_values(&["streams_per_target"]).inc();
        return Err(Error::Conflict(format!(
            "{} has {} streams already, the most one may have; stop one first",
            owner.describe(),
            reg.max_per_owner
        )));
    }
    let sid = match &sink.resume {
        Some(r) if !r.id.is_empty() => {
            if map.contains_key(&r.id) {
                return Err(Error::Conflict(format!("`{}` runs here already", r.id)));
            }
            r.id.clone()
        }
        _ => Registry::new_id(sink.prefix),
    };
    let resume = sink.resume.map(|r| TapRecord { id: sid.clone(), ..r });
    let tap = Arc::new(Tap::default());
    let tap_id = reg.next_tap_id();
    map.insert(
        sid.clone(),
        Entry {
            tap_id,
            owner: owner.clone(),
            worker: 0,
            key: 0,
            target: target.clone(),
            sink: (sink.make)(&sid),
            started: SystemTime::now(),
            tap: tap.clone(),
            resume,
        },
    );
    let spec = TapSpec {
        id: tap_id,
        tracks: c.tracks,
        back: match (c.back, c.whisper) {
            (_, true) => Back::Whisper,
            (true, false) => Back::Speak,
            (false, false) => Back::None,
        },
        rate: c.rate,
        tap: tap.clone(),
    };
    Ok((sid, tap, spec))
}

/// Starts the stream's task once its worker took the tap; or frees its place.
fn launch(
    state: &State,
    sid: String,
    (worker, key): (usize, u64),
    result: Result<(), WorkerError>,
    checked: Checked,
    meta: Meta,
    tap: Arc<Tap>,
) -> Result<Value, Error> {
    let reg = &state.streams;
    if let Err(e) = result {
        lock(&reg.map).remove(&sid);
        tap.close();
        return Err(e.into());
    }
    let body = {
        let mut map = lock(&reg.map);
        let Some(entry) = map.get_mut(&sid) else {
            return Err(Error::Internal("the stream vanished as it started".into()));
        };
        (entry.worker, entry.key) = (worker, key);
        entry.to_json(&sid)
    };
    tracing::info!(stream = %sid, url = %checked.url, "stream started");
    reg.launch(sid, checked, meta);
    Ok(body)
}

/// Stops stream `sid` of `owner`: its worker lets go of the tap, and the
/// stream's task sends `stop` and closes.
pub async fn stop(state: &State, owner: &Owner, sid: &str) -> Result<Value, Error> {
    stop_tap(state, owner, sid, Kind::Stream).await
}

/// Stops stream, recording or playback `id` of `owner`; answers what it was.
pub async fn stop_tap(state: &State, owner: &Owner, id: &str, kind: Kind) -> Result<Value, Error> {
    let what = format!("{kind:?}").to_lowercase();
    // Out of the registry at once: a second stop finds nothing.
    let (worker, key, tap_id, tap, mut body) = {
        let mut map = lock(&state.streams.map);
        match map.get(id) {
            Some(e) if &e.owner == owner && e.sink.kind() == kind => {}
            _ => return Err(Error::NotFound(format!("{} has no {what} `{id}`", owner.describe()))),
        }
        let e = map.remove(id).expect("just found");
        let body = e.to_json(id);
        (e.worker, e.key, e.tap_id, e.tap, body)
    };
    let (reply, rx) = oneshot::channel();
    state.workers[worker].send(Command::Untap { key, id: tap_id, reply })?;
    let _ = rx.await;
    tap.close();
    rerecord(state, owner).await;
    body["stopped"] = json!(true);
    Ok(body)
}

pub fn list(state: &State, owner: &Owner) -> Value {
    json!({ "streams": state.streams.list(owner, crate::streams::Kind::Stream) })
}

/// What streams report: logged, posted to the callback, and added to a
/// conference's events.
pub async fn pump_events(state: Arc<State>, mut rx: mpsc::Receiver<StreamEvent>) {
    while let Some(ev) = rx.recv().await {
        if ev.ended {
            // A tap that ended on its own (a recording that failed, a
            // playback done) has left the registry: the record follows.
            rerecord(&state, &ev.owner).await;
            continue;
        }
        tracing::info!(event = %ev.body, "stream event");
        match &ev.owner {
            Owner::Conference(id) => conference_commands::stream_event(&state, id, ev.body).await,
            Owner::Call(id) => {
                super::call_events::publish(&state, id, &ev.body);
                state.callbacks.post(&state.metrics, ev.body);
            }
        }
    }
}
