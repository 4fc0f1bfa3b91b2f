//! Conference commands: create, control, leave, query, delete (joining is
//! `conference_join`). The mixing itself runs on the worker that owns the
//! conference (`worker::runner::conference_host`, `media::conference`).

use super::alloc::free_ports;
use super::home::Home;
use super::{lock, State};
use crate::error::Error;
use crate::media::codec;
use crate::media::conference::{ConfEvent, Conference, Controls};
use crate::media::mixer::speakers::SpeakerConfig;
use crate::media::relay::PeerSpec;
use crate::session::LocalPorts;
use crate::store::conference_record::{ConferenceRecord, ParticipantRecord};
use crate::worker::{CallKey, Command, ConfCommand, ConfReport, MemberTransport, WorkerError};
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tokio::sync::oneshot;

pub use super::conference_join::{join, join_call_leg};

/// Events kept per conference for `GET` (most recent last).
const EVENTS_KEPT: usize = 100;
/// Live event subscribers (`GET .../events`) per conference at most. Each
/// holds a bounded broadcast queue; one that lags loses the oldest events.
pub const MAX_SUBSCRIBERS: usize = 16;

pub type ConfHandle = Arc<tokio::sync::Mutex<ConfEntry>>;

pub struct ConfEntry {
    pub id: Arc<str>,
    pub key: CallKey,
    pub worker: usize,
    pub created: Instant,
    pub created_wall: SystemTime,
    pub settings: Settings,
    /// Where its participants' ports live: this instance's interfaces, or a
    /// dead instance's for a conference taken over.
    pub home: Arc<Home>,
    pub(super) next_pid: u32,
    pub(super) participants: HashMap<u32, Member>,
    events: VecDeque<Value>,
    /// Live events for `GET .../events` (server-sent events); dropped on delete.
    live: Option<tokio::sync::broadcast::Sender<Value>>,
    alive: bool,
}

/// What a conference is created with.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub mix_rate: u32,
    pub max_speakers: usize,
    pub max_participants: usize,
}

/// One participant as the control plane keeps it: enough to free its ports
/// and to recreate it elsewhere.
pub struct Member {
    pub iface: usize,
    pub ports: LocalPorts,
    pub spec: codec::CodecSpec,
    pub peer: PeerSpec,
    /// Mute, deafen and gain as set so far.
    pub controls: Controls,
    /// SRTP or WebRTC, when the participant's offer asked for it.
    pub transport: MemberTransport,
}

impl ConfEntry {
    /// Which worker holds the conference, under which key.
    pub fn placement(&self) -> (usize, CallKey) {
        (self.worker, self.key)
    }

    /// The record Redis keeps, as `owner` holds it now.
    pub fn record(&self, owner: &str) -> ConferenceRecord {
        let mut participants: Vec<ParticipantRecord> = self
            .participants
            .iter()
            .map(|(pid, m)| ParticipantRecord {
                pid: *pid,
                iface: m.iface,
                ports: m.ports,
                codec: (&m.spec).into(),
                peer: m.peer.clone(),
                controls: m.controls,
                transport: m.transport.clone(),
            })
            .collect();
        participants.sort_by_key(|p| p.pid);
        ConferenceRecord {
            version: crate::store::record::VERSION,
            id: self.id.to_string(),
            owner: owner.to_string(),
            created: crate::store::record::unix_seconds(self.created_wall),
            interfaces: self.home.interfaces.clone(),
            sample_rate: self.settings.mix_rate,
            max_speakers: self.settings.max_speakers,
            max_participants: self.settings.max_participants,
            next_pid: self.next_pid,
            participants,
            // The streams registry's part (see `replicate`).
            taps: Vec::new(),
        }
    }

    pub fn alive(&self) -> bool {
        self.alive
    }

    fn free_all(&mut self) {
        for (_, m) in self.participants.drain() {
            free_ports(&self.home, m.iface, m.ports);
        }
    }
}

/// Options of `POST /v1/conferences`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateOptions {
    pub id: Option<String>,
    pub sample_rate: Option<u32>,
    pub max_speakers: Option<usize>,
    pub max_participants: Option<usize>,
}

/// Options of a join.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinOptions {
    pub received_from: Option<IpAddr>,
    pub interface: Option<String>,
}

/// Sends a worker the command `make` builds around a reply channel, and
/// waits for the reply.
pub(super) async fn ask_worker<T>(
    state: &State,
    worker: usize,
    make: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<T, Error> {
    let (tx, rx) = oneshot::channel();
    state.workers[worker].send(make(tx))?;
    rx.await.map_err(|_| WorkerError::Dropped.into())
}

async fn ask<T>(
    state: &State,
    worker: usize,
    make: impl FnOnce(oneshot::Sender<T>) -> ConfCommand,
) -> Result<T, Error> {
    ask_worker(state, worker, |tx| Command::Conference(make(tx))).await
}

pub(crate) fn handle(state: &State, id: &str) -> Result<ConfHandle, Error> {
    lock(&state.conferences)
        .get(id)
        .map(|(_, h)| h.clone())
        .ok_or_else(|| state.not_found("conference", id))
}

pub async fn create(state: &State, opts: CreateOptions) -> Result<Value, Error> {
    if state.draining.load(Relaxed) {
        return Err(Error::Draining);
    }
    let mix_rate = opts.sample_rate.unwrap_or(48000);
    if !Conference::RATES.contains(&mix_rate) {
        return Err(Error::BadRequest(format!(
            "sample_rate {mix_rate} is not one of {:?}",
            Conference::RATES
        )));
    }
    let max_speakers = opts.max_speakers.unwrap_or(3);
    if !(1..=16).contains(&max_speakers) {
        return Err(Error::BadRequest("max_speakers must be 1..=16".into()));
    }
    let limit = state.config.max_participants;
    let max_participants = opts.max_participants.unwrap_or(limit);
    if !(1..=limit).contains(&max_participants) {
        return Err(Error::BadRequest(format!(
            "max_participants must be 1..={limit} (the instance's max_participants)"
        )));
    }
    let key = state.next_key.fetch_add(1, Relaxed);
    let id: Arc<str> = opts.id.unwrap_or_else(|| format!("conf-{key}")).into();
    super::check_id("conference", &id)?;
    if let super::forward::Route::Owner { id: owner, .. } = super::forward::route_conference(state, &id, true).await {
        return Err(Error::Conflict(format!(
            "conference `{id}` exists on instance `{owner}`"
        )));
    }
    let settings = Settings {
        mix_rate,
        max_speakers,
        max_participants,
    };
    let e = open(state, id.clone(), key, settings, state.home.clone(), SystemTime::now()).await?;
    super::replicate::conference_changed(state, &e);
    tracing::info!(conference = %id, "conference created");
    Ok(
        json!({ "id": &*id, "sample_rate": mix_rate, "max_speakers": max_speakers, "max_participants": max_participants }),
    )
}

/// Registers a conference and starts it on a worker, without participants.
/// Returned locked: no command sees it before its creator is done with it.
pub async fn open(
    state: &State,
    id: Arc<str>,
    key: CallKey,
    settings: Settings,
    home: Arc<Home>,
    created_wall: SystemTime,
) -> Result<tokio::sync::OwnedMutexGuard<ConfEntry>, Error> {
    let worker = state.pick_worker()?;
    let entry = Arc::new(tokio::sync::Mutex::new(ConfEntry {
        id: id.clone(),
        key,
        worker,
        created: Instant::now(),
        created_wall,
        settings,
        home,
        next_pid: 1,
        participants: HashMap::new(),
        events: VecDeque::new(),
        live: Some(tokio::sync::broadcast::channel(256).0),
        alive: true,
    }));
    let guard = entry.clone().try_lock_owned().expect("nobody else has it yet");
    {
        let mut confs = lock(&state.conferences);
        if confs.contains_key(&*id) {
            return Err(Error::Conflict(format!("conference `{id}` exists")));
        }
        confs.insert(id.to_string(), (key, entry));
    }
    lock(&state.ended).forget(&id);
    let speakers = SpeakerConfig {
        max_active: settings.max_speakers,
        ..SpeakerConfig::default()
    };
    let created = ask(state, worker, |reply| ConfCommand::Create {
        key,
        conf_id: id.clone(),
        speakers,
        mix_rate: settings.mix_rate,
        reply,
    })
    .await;
    if let Err(e) = created {
        lock(&state.conferences).remove(&*id);
        return Err(e);
    }
    tracing::debug!(conference = %id, worker, "conference opened");
    Ok(guard)
}

/// Puts a participant on the conference's worker with its bound sockets;
/// on success the conference holds its ports.
pub async fn attach(
    state: &State,
    e: &mut ConfEntry,
    pid: u32,
    member: Member,
    sockets: Vec<crate::worker::Bound>,
    latched: Option<SocketAddr>,
) -> Result<(), Error> {
    let bind = e.home.bind[member.iface];
    let key = e.key;
    ask(state, e.worker, |reply| ConfCommand::Join {
        key,
        pid,
        spec: member.spec,
        peer: Box::new(member.peer.clone()),
        rtp: SocketAddr::new(bind, member.ports.rtp),
        rtcp: member.ports.rtcp.map(|p| SocketAddr::new(bind, p)),
        sockets,
        latched,
        transport: Box::new(member.transport.clone()),
        reply,
    })
    .await
    .and_then(|r| r.map_err(Error::from))?;
    e.participants.insert(pid, member);
    e.next_pid = e.next_pid.max(pid.saturating_add(1));
    Ok(())
}

/// Records an event: kept for `GET`, sent to live subscribers, and POSTed
/// to the callback URL when one is configured.
pub(super) fn push_event(state: &State, e: &mut ConfEntry, mut v: Value) {
    let at = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    v["at"] = json!(at);
    v["conference"] = json!(&*e.id);
    if e.events.len() == EVENTS_KEPT {
        e.events.pop_front();
    }
    if let Some(tx) = &e.live {
        let _ = tx.send(v.clone());
    }
    state.callbacks.post(&state.metrics, v.clone());
    e.events.push_back(v);
}

/// An event of one of the conference's audio streams (see `control::streams`).
pub async fn stream_event(state: &State, conf_id: &str, v: Value) {
    let Ok(handle) = handle(state, conf_id) else { return };
    let mut e = handle.lock().await;
    if e.alive {
        push_event(state, &mut e, v);
    }
}

/// A live stream of the conference's events (ends when it is deleted).
pub async fn subscribe(state: &State, conf_id: &str) -> Result<tokio::sync::broadcast::Receiver<Value>, Error> {
    let handle = handle(state, conf_id)?;
    let e = handle.lock().await;
    let tx = e.live.as_ref().ok_or_else(|| state.not_found("conference", conf_id))?;
    if tx.receiver_count() >= MAX_SUBSCRIBERS {
        state.metrics.limited.with_label_values(&["event_subscribers"]).inc();
        return Err(Error::Overloaded(format!(
            "conference `{conf_id}` has {MAX_SUBSCRIBERS} event subscribers already"
        )));
    }
    Ok(tx.subscribe())
}

pub async fn control(state: &State, conf_id: &str, pid: u32, c: Controls) -> Result<Value, Error> {
    let handle = handle(state, conf_id)?;
    let mut e = handle.lock().await;
    set_controls(state, &mut e, pid, c).await?;
    super::replicate::conference_changed(state, &e);
    Ok(json!({ "participant_id": pid, "muted": c.muted, "deaf": c.deaf, "gain": c.gain }))
}

/// Applies `c` to participant `pid` and keeps it for the record.
pub async fn set_controls(state: &State, e: &mut ConfEntry, pid: u32, c: Controls) -> Result<(), Error> {
    let Some(member) = e.participants.get(&pid) else {
        return Err(Error::NotFound(format!(
            "conference `{}` has no participant {pid}",
            e.id
        )));
    };
    let now = member.controls.then(c);
    let key = e.key;
    ask(state, e.worker, |reply| ConfCommand::Control {
        key,
        pid,
        controls: c,
        reply,
    })
    .await?;
    if let Some(m) = e.participants.get_mut(&pid) {
        m.controls = now;
    }
    Ok(())
}

pub async fn leave(state: &State, conf_id: &str, pid: u32) -> Result<Value, Error> {
    let handle = handle(state, conf_id)?;
    let mut e = handle.lock().await;
    let Some((iface, ports)) = e.participants.get(&pid).map(|m| (m.iface, m.ports)) else {
        return Err(Error::NotFound(format!(
            "conference `{conf_id}` has no participant {pid}"
        )));
    };
    let key = e.key;
    let events = ask(state, e.worker, |reply| ConfCommand::Leave { key, pid, reply }).await?;
    e.participants.remove(&pid);
    free_ports(&e.home, iface, ports);
    super::replicate::conference_changed(state, &e);
    for ev in events {
        push_event(state, &mut e, serde_json::to_value(&ev).unwrap_or_default());
    }
    push_event(state, &mut e, json!({ "event": "left", "participant": pid }));
    tracing::info!(conference = conf_id, participant = pid, "participant left");
    Ok(json!({ "participant_id": pid, "left": true }))
}

pub async fn query(state: &State, conf_id: &str) -> Result<Value, Error> {
    let handle = handle(state, conf_id)?;
    let e = handle.lock().await;
    let key = e.key;
    let report: Option<ConfReport> = ask(state, e.worker, |reply| ConfCommand::Query { key, reply }).await?;
    let report = report.ok_or_else(|| Error::NotFound(format!("no conference `{conf_id}`")))?;
    Ok(json!({
        "id": &*e.id,
        "duration_s": (e.created.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        "max_speakers": e.settings.max_speakers,
        "max_participants": e.settings.max_participants,
        "participants": report.participants,
        "encodes_last_tick": report.encodes_last_tick,
        "late_ticks": report.late_ticks,
        "events": e.events,
    }))
}

pub async fn delete(state: &State, conf_id: &str) -> Result<Value, Error> {
    let handle = handle(state, conf_id)?;
    let mut e = handle.lock().await;
    close(state, &mut e).await?;
    super::replicate::conference_changed(state, &e);
    tracing::info!(conference = conf_id, "conference deleted");
    Ok(json!({ "id": conf_id, "deleted": true }))
}

/// Stops a conference on its worker and forgets it here.
async fn close(state: &State, e: &mut ConfEntry) -> Result<(), Error> {
    let key = e.key;
    ask(state, e.worker, |reply| ConfCommand::Delete { key, reply }).await?;
    e.free_all();
    e.alive = false;
    e.live = None;
    let mut confs = lock(&state.conferences);
    if confs.get(&*e.id).is_some_and(|(k, _)| *k == key) {
        confs.remove(&*e.id);
    }
    Ok(())
}

/// Ends a conference here without touching its record: another instance
/// took it over while this one looked dead.
pub async fn let_go(state: &State, conf_id: &str) -> bool {
    let Ok(handle) = handle(state, conf_id) else {
        return false;
    };
    let mut e = handle.lock().await;
    e.alive && close(state, &mut e).await.is_ok()
}

/// Conference ids in order, `limit` from `offset`.
pub fn list(state: &State, offset: usize, limit: usize) -> Value {
    let mut ids: Vec<String> = lock(&state.conferences).keys().cloned().collect();
    ids.sort_unstable();
    let total = ids.len();
    let page: Vec<&String> = ids.iter().skip(offset).take(limit).collect();
    let next = (offset + page.len() < total).then_some(offset + page.len());
    json!({ "conferences": page, "total": total, "offset": offset, "next_offset": next })
}

/// Speaking changes and DTMF from the worker, kept for `GET` and logged.
pub async fn on_events(state: &State, key: CallKey, events: Vec<ConfEvent>) {
    let Some(handle) = by_key(state, key) else { return };
    let mut e = handle.lock().await;
    for ev in events {
        tracing::info!(conference = %e.id, event = ?ev, "conference event");
        push_event(state, &mut e, serde_json::to_value(&ev).unwrap_or_default());
    }
}

/// The worker ended a conference after a panic in its processing: free its
/// ports, tell subscribers and the callback, forget it.
pub async fn on_failed(state: &State, key: CallKey, reason: &str) {
    let Some(handle) = by_key(state, key) else { return };
    let mut e = handle.lock().await;
    tracing::error!(conference = %e.id, panic = reason, "conference ended by an internal error");
    e.free_all();
    push_event(
        state,
        &mut e,
        json!({ "event": "conference_failed", "reason": "internal_error" }),
    );
    e.alive = false;
    e.live = None;
    lock(&state.ended).record(&e.id, "internal_error", Instant::now());
    let mut confs = lock(&state.conferences);
    if confs.get(&*e.id).is_some_and(|(k, _)| *k == key) {
        confs.remove(&*e.id);
    }
    super::replicate::conference_changed(state, &e);
}

/// The conference a worker reports about (workers know keys, not ids).
fn by_key(state: &State, key: CallKey) -> Option<ConfHandle> {
    lock(&state.conferences)
        .values()
        .find(|(k, _)| *k == key)
        .map(|(_, h)| h.clone())
}

/// Whether any conference has participants (one being changed right now counts).
pub fn busy(state: &State) -> bool {
    let handles: Vec<ConfHandle> = lock(&state.conferences).values().map(|(_, h)| h.clone()).collect();
    handles
        .iter()
        .any(|h| h.try_lock().map_or(true, |e| !e.participants.is_empty()))
}
