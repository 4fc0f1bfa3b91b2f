//! Fencing. An instance that stalled, or lost Redis, for longer than its
//! heartbeat lives may have been taken over by a peer meanwhile. Before it
//! writes anything again it lets go of every call and conference whose
//! record now names another owner, so two instances never both act as the
//! owner (and this one never writes its stale records over the peer's).
//!
//! The race with a peer that is just starting a takeover is closed by
//! ordering: this instance writes its heartbeat, then looks for a takeover
//! lock; the peer takes the lock, then looks for the heartbeat (in
//! `restore::take_over`). One of the two always sees the other.

use super::{calls, conference_commands, lock, State};
use crate::store::{keys, Store};
use redis::AsyncCommands;
use std::time::{Duration, Instant};

type Conn = redis::aio::ConnectionManager;

/// How long to wait for a peer's takeover of this instance to finish.
const TAKEOVER_WAIT: Duration = Duration::from_secs(10);

/// Lets go of what peers took over while this instance's heartbeat had
/// lapsed. Returns how many calls and conferences went.
pub async fn after_lapse(state: &State, store: &Store, conn: &mut Conn) -> redis::RedisResult<(usize, usize)> {
    let me = store.instance.as_str();
    let deadline = Instant::now() + TAKEOVER_WAIT;
    // A peer holding the lock is taking this instance over; it removes the
    // instance's sets when done.
    loop {
        let holder: Option<String> = conn.get(keys::takeover(me)).await?;
        let sets: bool = conn.exists(&[keys::owned(me), keys::conferences_of(me)]).await?;
        if !(holder.is_some_and(|h| h != me) && sets) || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(store.heartbeat / 2).await;
    }
    let call_ids: Vec<String> = lock(&state.calls).keys().cloned().collect();
    let conf_ids: Vec<String> = lock(&state.conferences).keys().cloned().collect();
    let mut gone = (0, 0);
    for id in owned_elsewhere(conn, &call_ids, keys::call, me).await? {
        if calls::let_go(state, &id).await {
            gone.0 += 1;
            tracing::error!(call_id = %id, "call taken over by another instance while this one looked dead; let go here");
        }
    }
    for id in owned_elsewhere(conn, &conf_ids, keys::conference, me).await? {
        if conference_commands::let_go(state, &id).await {
            gone.1 += 1;
            tracing::error!(conference = %id, "conference taken over by another instance while this one looked dead; let go here");
        }
    }
    store.metrics.fenced.with_label_values(&["call"]).inc_by(gone.0 as u64);
    store
        .metrics
        .fenced
        .with_label_values(&["conference"])
        .inc_by(gone.1 as u64);
    tracing::warn!(
        calls = gone.0,
        conferences = gone.1,
        "heartbeat had lapsed: checked which records peers own now"
    );
    Ok(gone)
}

/// Of `ids`, those whose record (at `key(id)`) names an owner other than `me`.
pub async fn owned_elsewhere(
    conn: &mut Conn,
    ids: &[String],
    key: fn(&str) -> String,
    me: &str,
) -> redis::RedisResult<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct OwnerOnly {
        owner: String,
    }
    let mut out = Vec::new();
    for chunk in ids.chunks(500) {
        let record_keys: Vec<String> = chunk.iter().map(|id| key(id)).collect();
        let records: Vec<Option<String>> = conn.mget(&record_keys).await?;
        for (id, text) in chunk.iter().zip(records) {
            let owner = text.and_then(|t| serde_json::from_str::<OwnerOnly>(&t).ok());
            if owner.is_some_and(|o| o.owner != me) {
                out.push(id.clone());
            }
        }
    }
    Ok(out)
}
