//! The call commands: offer, answer, delete, query, list. The HTTP API (and
//! the ng protocol) translate into these, so both behave the same.

use super::alloc::{free_ports, Alloc};
use super::home::Home;
use super::{lock, CallEntry, State};
use crate::error::Error;
use crate::media::relay::PeerSpec;
use crate::session::{Change, Options, Session};
use crate::worker::{Bound, Bundled, CallReport, Command, SideSpec, StreamSpec, WebRtcSpec, WorkerError};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tokio::sync::oneshot;

/// Finds a call's entry; for offers, creates it.
pub(super) fn entry(state: &State, call_id: &str, create: bool) -> Result<Arc<tokio::sync::Mutex<CallEntry>>, Error> {
    let mut calls = lock(&state.calls);
    if let Some((_, e)) = calls.get(call_id) {
        return Ok(e.clone());
    }
    if !create {
        return Err(state.not_found("call", call_id));
    }
    if state.draining.load(Relaxed) {
        return Err(Error::Draining);
    }
    if calls.len() >= state.config.max_calls {
        let max = state.config.max_calls;
        return Err(state.refuse("calls", format!("chorus holds {max} calls, its max_calls")));
    }
    let worker = state.pick_worker()?;
    lock(&state.ended).forget(call_id);
    let key = state.next_key.fetch_add(1, Relaxed);
    let e = Arc::new(tokio::sync::Mutex::new(CallEntry {
        call_id: call_id.into(),
        key,
        worker,
        session: Session::default(),
        created: Instant::now(),
        created_wall: SystemTime::now(),
        home: state.home.clone(),
        alive: true,
    }));
    calls.insert(call_id.to_string(), (key, e.clone()));
    Ok(e)
}

/// Removes a call from the registry if the entry there is still the one with `key`
/// (a new call may have reused the id after this one ended).
pub(super) fn unregister(state: &State, call_id: &str, key: u64) {
    let mut calls = lock(&state.calls);
    if calls.get(call_id).is_some_and(|(k, _)| *k == key) {
        calls.remove(call_id);
        // Its live events end with it, however it ended.
        super::call_events::close(state, call_id);
    }
}

pub enum Sdpop<'a> {
    Offer,
    Answer { to_tag: &'a str },
}

/// Applies an offer or an answer and returns the rewritten SDP.
pub async fn negotiate(
    state: &State,
    call_id: &str,
    from_tag: &str,
    op: Sdpop<'_>,
    sdp: &str,
    opts: &Options,
) -> Result<String, Error> {
    super::check_id("call", call_id)?;
    let parsed = state.parse_sdp(sdp)?;
    validate_options(state, opts)?;
    let is_offer = matches!(op, Sdpop::Offer);
    let handle = match entry(state, call_id, is_offer) {
        Err(Error::NotFound(_)) => {
            return Err(Error::Conflict(format!(
                "answer for call `{call_id}`, which has no offer"
            )))
        }
        other => other?,
    };
    let mut e = handle.lock().await;
    if !e.alive {
        return Err(Error::Conflict(format!(
            "call `{call_id}` was deleted while this request waited"
        )));
    }
    let backup = e.session.clone();
    let home = e.home.clone();
    let mut alloc = Alloc::new(state, &home);
    let result = match op {
        Sdpop::Offer => e.session.offer(from_tag, &parsed, opts, &home.advertise, &mut alloc),
        Sdpop::Answer { to_tag } => e
            .session
            .answer(from_tag, to_tag, &parsed, opts, &home.advertise, &mut alloc),
    };
    let outcome = match result {
        Ok((text, change)) => push_to_worker(state, &e, &mut alloc, change).await.map(|_| text),
        Err(err) => Err(err),
    };
    match outcome {
        Ok(text) => {
            for (iface, p) in alloc.released.drain(..) {
                free_ports(&home, iface, p);
            }
            super::replicate::call_changed(state, &e);
            Ok(text)
        }
        Err(err) => {
            alloc.rollback();
            e.session = backup;
            if e.session.streams.is_empty() && !e.session.offered {
                // A first offer that failed leaves no call behind.
                e.alive = false;
                unregister(state, call_id, e.key);
            }
            Err(err)
        }
    }
}

fn validate_options(state: &State, opts: &Options) -> Result<(), Error> {
    for i in [opts.from_interface, opts.to_interface].into_iter().flatten() {
        if i >= state.home.interfaces.len() {
            return Err(Error::BadRequest(format!("no interface number {i}")));
        }
    }
    Ok(())
}

/// Sends the session's current shape to its worker.
pub(super) async fn push_to_worker(
    state: &State,
    e: &CallEntry,
    alloc: &mut Alloc<'_>,
    change: Change,
) -> Result<(), Error> {
    let s = &e.session;
    let streams = s
        .streams
        .iter()
        .enumerate()
        .map(|(si, st)| StreamSpec {
            kind: st.kind,
            sides: [0, 1].map(|i| {
                let ip = e.home.bind[s.legs[i].iface];
                let bundle = st.sides[i].bundle.map(|owner| Bundled {
                    owner,
                    pts: s.payload_types(si),
                });
                s.side_ports(si, i).map(|l| {
                    let webrtc = st.sides[i]
                        .webrtc
                        .as_ref()
                        .filter(|_| bundle.is_none())
                        .and_then(WebRtcSpec::of);
                    let mut peer = st.sides[i].peer.clone().unwrap_or_else(|| PeerSpec::unknown(st.kind));
                    if webrtc.is_some() || bundle.is_some() {
                        // A browser is reached where ICE proves it is, never where its SDP says.
                        (peer.rtp, peer.rtcp, peer.sdp_ip, peer.signal_ip) = (None, None, None, None);
                        (peer.any_source, peer.mux) = (false, true);
                    }
                    SideSpec {
                        rtp: SocketAddr::new(ip, l.rtp),
                        rtcp: l.rtcp.map(|p| SocketAddr::new(ip, p)),
                        peer,
                        relearn: i == change.relearn_leg,
                        srtp: st.sides[i].sdes.as_ref().and_then(|s| s.keys()),
                        webrtc,
                        transcode: st.transcode.map(|t| (t.codecs[i], t.codecs[1 - i])),
                        bundle,
                    }
                })
            }),
        })
        .collect();
    let sockets = alloc.fresh.iter_mut().flat_map(|(_, _, s)| s.drain(..)).collect();
    let (reply, rx) = oneshot::channel();
    state.workers[e.worker].send(Command::Update {
        key: e.key,
        call_id: e.call_id.clone(),
        streams,
        sockets,
        reply,
    })?;
    rx.await.map_err(|_| WorkerError::Dropped)?.map_err(Error::from)
}

/// Deletes a call (the whole call: a relay needs both legs). With
/// `from_tag`, the tag must belong to the call.
pub async fn delete(state: &State, call_id: &str, from_tag: Option<&str>) -> Result<CallSnapshot, Error> {
    let handle = entry(state, call_id, false)?;
    let mut e = handle.lock().await;
    if !e.alive {
        return Err(state.not_found("call", call_id));
    }
    if let Some(tag) = from_tag {
        if e.session.leg_by_tag(tag).is_none() {
            return Err(Error::NotFound(format!("call `{call_id}` has no leg with tag `{tag}`")));
        }
    }
    let (reply, rx) = oneshot::channel();
    state.workers[e.worker].send(Command::Remove { key: e.key, reply })?;
    let (report, sockets) = match rx.await.ok().flatten() {
        Some(r) => (r.report, r.sockets),
        None => (CallReport { streams: Vec::new() }, Vec::new()),
    };
    let summary = finish(state, &mut e, report, sockets, "deleted");
    Ok(summary)
}

/// Frees a call's ports and registry entry after its worker let go of
/// them; `sockets` (still bound) are parked for the calls to come.
pub(super) fn finish(
    state: &State,
    e: &mut CallEntry,
    report: CallReport,
    sockets: Vec<Bound>,
    reason: &'static str,
) -> CallSnapshot {
    release(state, e, reason);
    park(&e.home, sockets);
    super::replicate::call_changed(state, e);
    let summary = CallSnapshot::of(e, report);
    let duration = e.created.elapsed().as_secs_f64();
    state.metrics.call_seconds.observe(duration);
    tracing::info!(call_id = %e.call_id, reason, duration_s = duration, "call ended");
    summary
}

fn release(state: &State, e: &mut CallEntry, reason: &'static str) {
    e.alive = false;
    lock(&state.ended).record(&e.call_id, reason, Instant::now());
    for (iface, p) in e.session.all_ports() {
        free_ports(&e.home, iface, p);
    }
    unregister(state, &e.call_id, e.key);
}

/// Parks a removed call's sockets in their pools (ports already free).
fn park(home: &Home, sockets: Vec<Bound>) {
    for (local, socket) in sockets {
        if let Some(iface) = home.bind.iter().position(|ip| *ip == local.ip()) {
            lock(&home.pools[iface]).park(local, socket);
        }
    }
}

/// Ends a call here without touching its record: another instance took it
/// over while this one looked dead, and the record is that instance's now.
pub async fn let_go(state: &State, call_id: &str) -> bool {
    let Ok(handle) = entry(state, call_id, false) else {
        return false;
    };
    let mut e = handle.lock().await;
    if !e.alive {
        return false;
    }
    let (reply, rx) = oneshot::channel();
    if state.workers[e.worker]
        .send(Command::Remove { key: e.key, reply })
        .is_ok()
    {
        let _ = rx.await;
    }
    release(state, &mut e, "taken_over");
    true
}

pub async fn query(state: &State, call_id: &str) -> Result<CallSnapshot, Error> {
    let handle = entry(state, call_id, false)?;
    let e = handle.lock().await;
    if !e.alive {
        return Err(state.not_found("call", call_id));
    }
    let (reply, rx) = oneshot::channel();
    state.workers[e.worker].send(Command::Query { key: e.key, reply })?;
    let report = rx.await.ok().flatten().unwrap_or(CallReport { streams: Vec::new() });
    Ok(CallSnapshot::of(&e, report))
}

/// Call ids in order, `limit` from `offset`.
pub fn list_ids(state: &State, offset: usize, limit: usize) -> Vec<String> {
    let mut ids: Vec<String> = lock(&state.calls).keys().cloned().collect();
    ids.sort_unstable();
    ids.into_iter().skip(offset).take(limit).collect()
}

/// A page of call ids, for the HTTP API.
pub fn list(state: &State, offset: usize, limit: usize) -> Value {
    let total = state.call_count();
    let page = list_ids(state, offset, limit);
    let next = (offset + page.len() < total).then_some(offset + page.len());
    json!({ "calls": page, "total": total, "offset": offset, "next_offset": next })
}

/// A call's signalling state and its worker's report, taken together.
pub struct CallSnapshot {
    pub call_id: Arc<str>,
    pub session: Session,
    pub created_wall: SystemTime,
    pub duration_s: f64,
    pub report: CallReport,
}

impl CallSnapshot {
    fn of(e: &CallEntry, report: CallReport) -> Self {
        CallSnapshot {
            call_id: e.call_id.clone(),
            session: e.session.clone(),
            created_wall: e.created_wall,
            duration_s: (e.created.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
            report,
        }
    }

    pub fn created_unix(&self) -> f64 {
        self.created_wall
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default()
    }

    /// The call as the HTTP API shows it: per leg, per stream, what chorus
    /// received from that leg and where it relays to it.
    pub fn to_json(&self) -> Value {
        call_json(self)
    }
}

fn call_json(snap: &CallSnapshot) -> Value {
    let (s, report) = (&snap.session, &snap.report);
    let legs: Vec<Value> = (0..2)
        .map(|i| {
            let streams: Vec<Value> = s
                .streams
                .iter()
                .enumerate()
                .map(|(si, st)| {
                    let side = report.streams.get(si).map(|r| &r.sides[i]);
                    json!({
                        "index": si,
                        "media": st.media,
                        "kind": st.kind,
                        "enabled": st.enabled,
                        "local_rtp": side.and_then(|x| x.local_rtp),
                        "local_rtcp": side.and_then(|x| x.local_rtcp),
                        "stats": side.map(|x| &x.side),
                    })
                })
                .collect();
            json!({ "tag": s.legs[i].tag, "label": s.legs[i].label, "streams": streams })
        })
        .collect();
    json!({
        "call_id": &*snap.call_id,
        "created": snap.created_unix(),
        "duration_s": snap.duration_s,
        "answered": s.answered,
        "legs": legs,
    })
}
