//! Keeps Redis in step with this instance: one task writes the heartbeat,
//! the call records handed over at command boundaries, their expiry
//! refreshes, and, after Redis was unreachable, everything again. Commands
//! never wait on Redis.

use super::conference_commands::ConfEntry;
use super::{lock, CallEntry, State};
use crate::store::record::{unix_seconds, CallRecordRef, VERSION};
use crate::store::{keys, Store};
use crate::streams::Owner;
use redis::AsyncCommands;
use serde_json::json;
use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// The record of a call as it stands after a command, as JSON.
pub fn record_of(state: &State, store: &Store, e: &CallEntry) -> String {
    let taps = state.streams.records(&Owner::Call(e.call_id.to_string()));
    CallRecordRef {
        version: VERSION,
        call_id: &e.call_id,
        owner: &store.instance,
        created: unix_seconds(e.created_wall),
        interfaces: &e.home.interfaces,
        session: &e.session,
        taps: &taps,
    }
    .to_json()
}

/// A conference's record, with its streams and recordings, as JSON.
fn conference_record(state: &State, store: &Store, e: &ConfEntry) -> String {
    let mut r = e.record(&store.instance);
    r.taps = state.streams.records(&Owner::Conference(e.id.to_string()));
    r.to_json()
}

/// Hands a conference's new state (or its end) to the writer.
pub fn conference_changed(state: &State, e: &ConfEntry) {
    if let Some(store) = &state.store {
        let record = e.alive().then(|| conference_record(state, store, e));
        store.conference_changed(&e.id, record);
    }
}

/// Hands a call's new state (or its end) to the writer. Cheap: one
/// serialization, no I/O.
pub fn call_changed(state: &State, e: &CallEntry) {
    if let Some(store) = &state.store {
        let record = e.alive.then(|| record_of(state, store, e));
        store.call_changed(&e.call_id, record);
    }
}

/// How long the writer gathers changes before one round trip to Redis.
const BATCH: std::time::Duration = std::time::Duration::from_millis(5);

/// The writer: runs for the life of the process.
pub async fn run(state: Arc<State>) {
    let Some(store) = state.store.clone() else { return };
    let mut conn = store.conn.clone();
    let mut restored = false;
    let mut next_refresh = Instant::now();
    let mut beat = tokio::time::interval(store.heartbeat);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_beat = Instant::now() - store.heartbeat;
    // Whether a beat was written before, and whether one found the
    // previous beat expired since (this instance looked dead meanwhile).
    let (mut beaten, mut lapsed) = (false, false);
    loop {
        tokio::select! {
            _ = beat.tick() => {}
            _ = store.wake.notified() => {
                // Gather what else changes meanwhile into the same round trip
                // (a call set up and torn down within it costs nothing).
                tokio::time::sleep(BATCH).await;
            }
        }
        let beat_due = last_beat.elapsed() >= store.heartbeat;
        if beat_due {
            last_beat = Instant::now();
            let r = heartbeat(&state, &store, &mut conn).await;
            store.set_up(r.is_ok(), r.as_ref().err());
            lapsed |= beaten && matches!(r, Ok(false));
            beaten |= r.is_ok();
        }
        if !store.is_up() {
            continue;
        }
        if lapsed {
            // Before writing anything: let go of what peers own now.
            match super::fence::after_lapse(&state, &store, &mut conn).await {
                Ok(_) => {
                    lapsed = false;
                    store.resync.store(true, Relaxed);
                }
                Err(e) => {
                    store.set_up(false, Some(&e));
                    continue;
                }
            }
        }
        if !restored {
            super::restore::own_calls(&state, &store, &mut conn).await;
            restored = true;
        }
        // Deaths are looked for once a beat, not on every batch of writes.
        if beat_due && !state.draining.load(Relaxed) {
            for dead in super::restore::dead_owners(&store, &mut conn).await.unwrap_or_default() {
                super::restore::take_over(&state, &store, &mut conn, &dead).await;
            }
        }
        let r = async {
            if store.resync.swap(false, Relaxed) {
                resync(&state, &store, &mut conn).await?;
                next_refresh = Instant::now() + store.record_ttl / 3;
            } else if Instant::now() >= next_refresh {
                refresh(&state, &store, &mut conn).await?;
                next_refresh = Instant::now() + store.record_ttl / 3;
            }
            flush_conferences(&store, &mut conn, store.take_conferences()).await?;
            flush(&store, &mut conn, store.take_pending()).await
        }
        .await;
        if let Err(e) = &r {
            store.set_up(false, Some(e));
        }
    }
}

type Conn = redis::aio::ConnectionManager;

/// Writes the heartbeat; true if the previous one was still there (false:
/// it had expired, or this is the first).
async fn heartbeat(state: &State, store: &Store, conn: &mut Conn) -> redis::RedisResult<bool> {
    let now = unix_seconds(SystemTime::now());
    let beat = json!({
        "id": store.instance,
        "boot": state.boot,
        "state": if state.draining.load(Relaxed) { "draining" } else { "serving" },
        "calls": state.call_count(),
        "conferences": lock(&state.conferences).len(),
        "workers": state.workers.len(),
        "dead_workers": state.dead_workers().len(),
        "url": super::forward::own_url(&state.config),
        "ng": state.config.ng_listen,
        "media": state.home.interfaces,
        "started": unix_seconds(state.started_wall),
        "updated": now,
    });
    let ttl_ms = 3 * store.heartbeat.as_millis() as u64;
    let (previous,): (Option<String>,) = redis::pipe()
        .set_options(
            keys::instance(&store.instance),
            beat.to_string(),
            redis::SetOptions::default()
                .with_expiration(redis::SetExpiry::PX(ttl_ms))
                .get(true),
        )
        .zadd(keys::INSTANCES, &store.instance, (now * 1000.0) as i64)
        .ignore()
        .query_async(conn)
        .await?;
    Ok(previous.is_some())
}

/// Where this instance answers, for a peer taking its calls over; kept a
/// day, renewed with the records (not every beat: it does not change).
async fn write_addresses(state: &State, store: &Store, conn: &mut Conn) -> redis::RedisResult<()> {
    let addresses = json!({ "url": super::forward::own_url(&state.config), "ng": state.config.ng_listen });
    conn.set_ex(keys::addresses(&store.instance), addresses.to_string(), 86_400)
        .await
}

/// Writes what commands changed to calls: records set with their expiry,
/// ended calls removed, and the owner's set of call ids kept alongside.
async fn flush(store: &Store, conn: &mut Conn, pending: crate::store::Pending) -> redis::RedisResult<()> {
    write_records(store, conn, pending, keys::call, &keys::owned(&store.instance)).await
}

/// The same for conferences: their records also tell other instances where
/// to forward commands on them.
async fn flush_conferences(store: &Store, conn: &mut Conn, changed: crate::store::Pending) -> redis::RedisResult<()> {
    write_records(
        store,
        conn,
        changed,
        keys::conference,
        &keys::conferences_of(&store.instance),
    )
    .await
}

async fn write_records(
    store: &Store,
    conn: &mut Conn,
    changed: crate::store::Pending,
    key: fn(&str) -> String,
    owned: &str,
) -> redis::RedisResult<()> {
    if changed.is_empty() {
        return Ok(());
    }
    let ttl = store.record_ttl.as_secs();
    let mut pipe = redis::pipe();
    for (id, record) in &changed {
        match record {
            Some(json) => pipe.set_ex(key(id), json, ttl).ignore().sadd(owned, &**id).ignore(),
            None => pipe.del(key(id)).ignore().srem(owned, &**id).ignore(),
        };
    }
    pipe.expire(owned, ttl as i64).ignore();
    pipe.query_async(conn).await
}

/// Everything again, after Redis missed changes: every call held is
/// written, and records this instance owns but no longer holds are removed.
async fn resync(state: &State, store: &Store, conn: &mut Conn) -> redis::RedisResult<()> {
    store.take_pending();
    write_addresses(state, store, conn).await?;
    let handles: Vec<_> = lock(&state.calls).values().map(|(_, h)| h.clone()).collect();
    let mut pending = crate::store::Pending::new();
    for h in handles {
        let e = h.lock().await;
        if e.alive {
            pending.insert(e.call_id.clone(), Some(record_of(state, store, &e)));
        }
    }
    let listed: Vec<String> = conn.smembers(keys::owned(&store.instance)).await?;
    let held: HashSet<&str> = pending.keys().map(|k| &**k).collect();
    let not_held: Vec<String> = listed.into_iter().filter(|id| !held.contains(id.as_str())).collect();
    // Records of calls that ended here are removed; a peer's are not.
    let theirs: HashSet<String> = super::fence::owned_elsewhere(conn, &not_held, keys::call, &store.instance)
        .await?
        .into_iter()
        .collect();
    let gone: Vec<Arc<str>> = not_held
        .iter()
        .filter(|id| !theirs.contains(id.as_str()))
        .map(|id| id.as_str().into())
        .collect();
    let n = (pending.len(), gone.len());
    pending.extend(gone.into_iter().map(|id| (id, None)));
    flush(store, conn, pending).await?;
    let conf_handles: Vec<_> = lock(&state.conferences).values().map(|(_, h)| h.clone()).collect();
    let mut confs = crate::store::Pending::new();
    for h in conf_handles {
        let e = h.lock().await;
        if e.alive() {
            confs.insert(e.id.clone(), Some(conference_record(state, store, &e)));
        }
    }
    let listed: Vec<String> = conn.smembers(keys::conferences_of(&store.instance)).await?;
    let theirs: HashSet<String> = super::fence::owned_elsewhere(conn, &listed, keys::conference, &store.instance)
        .await?
        .into_iter()
        .collect();
    for id in listed.iter().filter(|id| !theirs.contains(id.as_str())) {
        confs.entry(id.as_str().into()).or_insert(None);
    }
    flush_conferences(store, conn, confs).await?;
    tracing::info!(written = n.0, removed = n.1, "redis: call records written again");
    Ok(())
}

/// Extends the expiry of every record this instance holds.
async fn refresh(state: &State, store: &Store, conn: &mut Conn) -> redis::RedisResult<()> {
    write_addresses(state, store, conn).await?;
    let ids: Vec<String> = lock(&state.calls).keys().cloned().collect();
    let ttl = store.record_ttl.as_secs() as i64;
    for chunk in ids.chunks(1000) {
        let mut pipe = redis::pipe();
        for id in chunk {
            pipe.expire(keys::call(id), ttl).ignore();
        }
        pipe.query_async::<()>(conn).await?;
    }
    let confs: Vec<String> = lock(&state.conferences).keys().cloned().collect();
    let mut pipe = redis::pipe();
    for id in &confs {
        pipe.expire(keys::conference(id), ttl).ignore();
    }
    pipe.expire(keys::owned(&store.instance), ttl).ignore();
    pipe.expire(keys::conferences_of(&store.instance), ttl).ignore();
    pipe.query_async(conn).await
}

/// Instances as their heartbeats describe them: serving or draining while
/// the heartbeat lives, dead once it expired (kept for an hour).
pub async fn instances(state: &State) -> Result<serde_json::Value, crate::error::Error> {
    let Some(store) = &state.store else {
        return Ok(json!({ "instances": [local_view(state)] }));
    };
    let unavailable = |e: redis::RedisError| crate::error::Error::Unavailable(format!("redis: {e}"));
    let mut conn = store.conn.clone();
    let now_ms = (unix_seconds(SystemTime::now()) * 1000.0) as i64;
    let _: () = conn
        .zrembyscore(keys::INSTANCES, 0, now_ms - 3_600_000)
        .await
        .map_err(unavailable)?;
    let seen: Vec<(String, i64)> = conn
        .zrange_withscores(keys::INSTANCES, 0, -1)
        .await
        .map_err(unavailable)?;
    let mut out = Vec::new();
    for (id, last_ms) in seen {
        let beat: Option<String> = conn.get(keys::instance(&id)).await.map_err(unavailable)?;
        let v = match beat.and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok()) {
            Some(v) => v,
            None => json!({ "id": id, "state": "dead", "updated": last_ms as f64 / 1000.0 }),
        };
        out.push(v);
    }
    Ok(json!({ "instances": out }))
}

fn local_view(state: &State) -> serde_json::Value {
    json!({
        "id": state.config.instance_name(),
        "state": if state.draining.load(Relaxed) { "draining" } else { "serving" },
        "calls": state.call_count(),
        "conferences": lock(&state.conferences).len(),
        "workers": state.workers.len(),
        "dead_workers": state.dead_workers().len(),
    })
}

/// Waits until no other live instance uses this instance's name (a killed
/// predecessor's heartbeat expires within three beats); an error if one does.
pub async fn claim_name(store: &Store, boot: &str) -> Result<(), String> {
    let mut conn = store.conn.clone();
    let deadline = Instant::now() + 4 * store.heartbeat;
    loop {
        let beat: Option<String> = match conn.get(keys::instance(&store.instance)).await {
            Ok(b) => b,
            Err(_) => return Ok(()), // Redis down: nothing to check against
        };
        let other = beat
            .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
            .is_some_and(|v| v["boot"].as_str() != Some(boot));
        if !other {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "instance_id `{}` is in use by another live chorus; give each instance its own",
                store.instance
            ));
        }
        tokio::time::sleep(store.heartbeat / 2).await;
    }
}
