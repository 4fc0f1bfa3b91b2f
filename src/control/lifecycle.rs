//! What workers report (calls and conferences they ended, conference
//! events, telemetry) and the end of the process (drain).

use super::calls::{entry, finish};
use super::{conference_commands, State};
use crate::worker::{CallReport, Removed, WorkerEvent};
use serde_json::json;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::Instant;

/// Handles what workers report: today, calls they ended for lack of media.
pub async fn on_worker_event(state: Arc<State>, ev: WorkerEvent) {
    match ev {
        WorkerEvent::Conference { key, events } => conference_commands::on_events(&state, key, events).await,
        WorkerEvent::RtcpSamples { rtt, loss } => {
            rtt.into_iter()
                .for_each(|s| state.metrics.conference_rtt_seconds.observe(s));
            loss.into_iter()
                .for_each(|f| state.metrics.conference_reported_loss.observe(f));
        }
        WorkerEvent::MediaTimeout { key, call_id, removed } => {
            state.metrics.calls_timed_out.inc();
            ended_by_worker(&state, key, &call_id, removed, "media_timeout").await;
        }
        WorkerEvent::CallFailed { key, call_id, reason } => {
            tracing::error!(%call_id, panic = %reason, "call ended by an internal error");
            let removed = Removed {
                report: CallReport { streams: Vec::new() },
                sockets: Vec::new(),
            };
            ended_by_worker(&state, key, &call_id, removed, "internal_error").await;
        }
        WorkerEvent::ConferenceFailed { key, reason } => {
            conference_commands::on_failed(&state, key, &reason).await;
        }
        WorkerEvent::Dtmf {
            key,
            call_id,
            leg,
            digit,
            duration_ms,
        } => on_dtmf(&state, key, &call_id, leg, digit, duration_ms).await,
    }
}

/// A key press on a relayed call: logged, and posted to the callback with
/// the tag of the leg that pressed it.
async fn on_dtmf(state: &State, key: u64, call_id: &str, leg: usize, digit: char, duration_ms: Option<u32>) {
    let Ok(handle) = entry(state, call_id, false) else {
        return;
    };
    let e = handle.lock().await;
    if !e.alive || e.key != key {
        return;
    }
    let tag = e.session.legs.get(leg).and_then(|l| l.tag.clone());
    drop(e);
    tracing::info!(%call_id, from_tag = ?tag, %digit, ?duration_ms, "DTMF");
    let body = json!({
        "event": "dtmf",
        "call_id": call_id,
        "from_tag": tag,
        "digit": digit.to_string(),
        "duration_ms": duration_ms,
    });
    super::call_events::publish(state, call_id, &body);
    state.callbacks.post(&state.metrics, body);
}

/// A call the worker ended itself: free what the control plane holds and
/// tell the proxy (`event` is the callback's event name and the reason).
async fn ended_by_worker(state: &State, key: u64, call_id: &str, removed: Removed, event: &'static str) {
    let Ok(handle) = entry(state, call_id, false) else {
        return;
    };
    let mut e = handle.lock().await;
    if !e.alive || e.key != key {
        return;
    }
    let summary = finish(state, &mut e, removed.report, removed.sockets, event).to_json();
    drop(e);
    let body = json!({ "event": event, "call_id": call_id, "call": summary });
    state.callbacks.post(&state.metrics, body);
}

/// Handles worker events until the workers are gone: lifecycle events (at
/// most one per call) each in a task of their own; telemetry in order, here.
pub async fn pump_worker_events(state: Arc<State>, mut events: crate::worker::EventSource) {
    loop {
        tokio::select! {
            Some(ev) = events.lifecycle.recv() => {
                tokio::spawn(on_worker_event(state.clone(), ev));
            }
            Some(ev) = events.telemetry.recv() => on_worker_event(state.clone(), ev).await,
            else => return,
        }
    }
}

/// Stops taking new calls and conferences; returns once all calls and all
/// conferences with participants ended, or `deadline` passed. An empty
/// conference holds no media and does not keep the process up.
pub async fn drain(state: &State, deadline: Instant) {
    state.draining.store(true, SeqCst);
    while (state.call_count() > 0 || conference_commands::busy(state)) && Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
