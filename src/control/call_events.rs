//! Live events of relayed calls (server-sent events on `GET
//! /v1/calls/{id}/events`): key presses, and what the call's streams and
//! recordings report. A channel exists only while someone listens; it ends
//! with the call.

use super::{lock, State};
use crate::error::Error;
use serde_json::Value;
use tokio::sync::broadcast;

/// Listeners per call at most, and events queued for each.
pub const MAX_SUBSCRIBERS: usize = 16;
const QUEUE: usize = 256;

/// A live stream of call `call_id`'s events.
pub fn subscribe(state: &State, call_id: &str) -> Result<broadcast::Receiver<Value>, Error> {
    super::calls::entry(state, call_id, false)?;
    let mut map = lock(&state.call_events);
    let tx = map
        .entry(call_id.to_string())
        .or_insert_with(|| broadcast::channel(QUEUE).0);
    if tx.receiver_count() >= MAX_SUBSCRIBERS {
        state.metrics.limited.with_label_values(&["event_subscribers"]).inc();
        return Err(Error::Overloaded(format!(
            "call `{call_id}` has {MAX_SUBSCRIBERS} event subscribers already"
        )));
    }
    Ok(tx.subscribe())
}

/// Tells the call's listeners, if any.
pub fn publish(state: &State, call_id: &str, event: &Value) {
    if let Some(tx) = lock(&state.call_events).get(call_id) {
        let _ = tx.send(event.clone());
    }
}

/// The call ended: its listeners' streams end.
pub fn close(state: &State, call_id: &str) {
    lock(&state.call_events).remove(call_id);
}
