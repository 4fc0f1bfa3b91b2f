//! Recreates calls from their Redis records: this instance's own after a
//! restart, or a dead instance's (a takeover), on the same addresses and
//! ports, so phones keep sending where they were told. Latches start fresh:
//! a side learns its source again under the usual rules (RTP Bleed holds).

use super::alloc::Alloc;
use super::calls::{entry, push_to_worker, unregister};
use super::State;
use crate::session::Change;
use crate::store::record::{CallRecord, TapRecord};
use crate::store::{keys, Store};
use crate::streams::Owner;
use redis::AsyncCommands;
use std::sync::Arc;

type CallHandle = Arc<tokio::sync::Mutex<super::CallEntry>>;
use std::time::{Instant, SystemTime};

type Conn = redis::aio::ConnectionManager;

/// How long a takeover may run before another instance may try again.
const LOCK_MS: u64 = 30_000;

/// Takes the right to restore `instance`'s calls; false if another
/// instance holds it (it is taking them over).
async fn lock(store: &Store, conn: &mut Conn, instance: &str) -> bool {
    let opts = redis::SetOptions::default()
        .conditional_set(redis::ExistenceCheck::NX)
        .with_expiration(redis::SetExpiry::PX(LOCK_MS));
    let r: redis::RedisResult<Option<String>> = conn.set_options(keys::takeover(instance), &store.instance, opts).await;
    matches!(r, Ok(Some(_)))
}

/// Restores this instance's calls after a restart, unless a peer has
/// already started taking them over.
pub async fn own_calls(state: &State, store: &Store, conn: &mut Conn) {
    if !lock(store, conn, &store.instance).await {
        return tracing::warn!("another instance is taking this one's calls over; not restoring them");
    }
    calls_of(state, store, conn, &store.instance).await;
    super::restore_conference::conferences_of(state, store, conn, &store.instance).await;
    let _: redis::RedisResult<()> = conn.del(keys::takeover(&store.instance)).await;
}

/// Takes over a dead instance's calls. Returns false if another instance
/// does it.
pub async fn take_over(state: &Arc<State>, store: &Store, conn: &mut Conn, dead: &str) -> bool {
    if !lock(store, conn, dead).await {
        return false;
    }
    // It may have come back between the look and the lock (see `fence`).
    let back: redis::RedisResult<bool> = conn.exists(keys::instance(dead)).await;
    if !matches!(back, Ok(false)) {
        let _: redis::RedisResult<()> = conn.del(keys::takeover(dead)).await;
        tracing::info!(instance = dead, "instance is back; not taking it over");
        return false;
    }
    adopt_ng_address(state, conn, dead).await;
    let takeover_started = crate::store::record::unix_seconds(SystemTime::now());
    tracing::warn!(
        instance = dead,
        takeover_started,
        "instance is dead (heartbeat expired): taking its calls over"
    );
    calls_of(state, store, conn, dead).await;
    super::restore_conference::conferences_of(state, store, conn, dead).await;
    let _: redis::RedisResult<()> = conn.del(&[keys::owned(dead), keys::conferences_of(dead)]).await;
    true
}

/// Answers ng on the dead instance's address too, when it can be bound
/// here (the address floated to this host, or instances share one). A
/// proxy that pins each call to its rtpengine node, as Kamailio's module
/// does, then reaches the calls it pinned to the dead instance.
async fn adopt_ng_address(state: &Arc<State>, conn: &mut Conn, dead: &str) {
    let text: Option<String> = conn.get(keys::addresses(dead)).await.unwrap_or(None);
    let ng = text
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["ng"].as_str().and_then(|a| a.parse::<std::net::SocketAddr>().ok()));
    let Some(ng) = ng else { return };
    match tokio::net::UdpSocket::bind(ng).await {
        Ok(socket) => {
            tracing::warn!(%ng, instance = dead, "answering ng on the dead instance's address");
            tokio::spawn(super::ng::serve_udp(state.clone(), socket));
        }
        Err(e) => tracing::info!(%ng, error = %e, "the dead instance's ng address is not bindable here"),
    }
}

/// Restores every call in `instance`'s set.
async fn calls_of(state: &State, store: &Store, conn: &mut Conn, instance: &str) {
    let t0 = Instant::now();
    let ids: Vec<String> = match conn.smembers(keys::owned(instance)).await {
        Ok(ids) => ids,
        Err(e) => return tracing::error!(error = %e, instance, "redis: cannot list the instance's calls"),
    };
    if ids.is_empty() {
        return;
    }
    // Every record in one round trip, so that all calls come back together.
    let mut pipe = redis::pipe();
    for chunk in ids.chunks(500) {
        pipe.mget(chunk.iter().map(|id| keys::call(id)).collect::<Vec<_>>());
    }
    let chunks: Vec<Vec<Option<String>>> = match pipe.query_async(conn).await {
        Ok(r) => r,
        Err(e) => return tracing::error!(error = %e, "redis: cannot read call records"),
    };
    let read_ms = t0.elapsed().as_secs_f64() * 1e3;
    // Concurrently: each call waits on its worker's reply, and the workers
    // take the updates in batches. Records are written once all are back.
    let restores = ids
        .iter()
        .zip(chunks.into_iter().flatten())
        .map(|(id, text)| async move {
            let result = match text.as_deref().map(CallRecord::from_json) {
                None => Err("its record expired".to_string()),
                Some(Ok(rec)) if rec.owner != instance => Err(format!("owned by `{}` now", rec.owner)),
                Some(Ok(rec)) => one(state, rec).await,
                Some(Err(e)) => Err(e),
            };
            (id, result)
        });
    let (mut ok, mut failed, mut taps) = (Vec::new(), 0, Vec::new());
    for (id, result) in futures_util::future::join_all(restores).await {
        let label = if result.is_ok() { "ok" } else { "failed" };
        store.metrics.restored.with_label_values(&[label]).inc();
        match result {
            Ok((handle, t)) => {
                ok.push(handle);
                taps.extend(t.into_iter().map(|t| (Owner::Call(id.clone()), t)));
            }
            Err(reason) => {
                failed += 1;
                tracing::warn!(call_id = %id, from = instance, %reason, "call not restored");
            }
        }
    }
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    for handle in &ok {
        super::replicate::call_changed(state, &*handle.lock().await);
    }
    tracing::info!(
        restored = ok.len(),
        failed,
        ms,
        read_ms,
        from = instance,
        "calls restored from redis"
    );
    resume_taps(state, taps).await;
}

/// Starts restored calls' and conferences' streams and recordings again:
/// streams reconnect under their ids (a fresh `start`), recordings go on
/// in their next file.
pub async fn resume_taps(state: &State, taps: Vec<(Owner, TapRecord)>) {
    let resumes = taps.into_iter().map(|(owner, rec)| async move {
        let id = rec.id.clone();
        match super::streams::resume(state, &owner, rec).await {
            Ok(_) => tracing::info!(id, of = %owner.describe(), "stream or recording started again after a takeover"),
            Err(e) => tracing::warn!(id, of = %owner.describe(), error = %e, "stream or recording not started again"),
        }
    });
    futures_util::future::join_all(resumes).await;
}

/// Recreates one call: its entry, its sockets on the recorded addresses and
/// ports, its streams on a worker. The caller records it as ours.
async fn one(state: &State, mut rec: CallRecord) -> Result<(CallHandle, Vec<TapRecord>), String> {
    super::check_id("call", &rec.call_id).map_err(|e| e.to_string())?;
    let home = state.home_for_record(&rec.interfaces, &rec.owner);
    let handle = entry(state, &rec.call_id, true).map_err(|e| e.to_string())?;
    let mut e = handle.lock().await;
    if e.session.offered {
        return Err("a call with this id exists here already".into());
    }
    let mut alloc = Alloc::new(state, &home);
    let claimed = rec.session.all_ports().try_for_each(|(iface, p)| alloc.claim(iface, p));
    let pushed = match claimed {
        Ok(()) => {
            let created = rec.created_at();
            e.session = rec.session;
            e.home = home.clone();
            let age = SystemTime::now().duration_since(created).unwrap_or_default();
            e.created_wall = created;
            e.created = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
            let change = Change { relearn_leg: 0 };
            push_to_worker(state, &e, &mut alloc, change)
                .await
                .map_err(|e| e.to_string())
        }
        Err(err) => Err(err.to_string()),
    };
    if let Err(err) = pushed {
        alloc.rollback();
        e.alive = false;
        unregister(state, &rec.call_id, e.key);
        return Err(err);
    }
    drop(e);
    Ok((handle, std::mem::take(&mut rec.taps)))
}

/// The instances whose heartbeat expired while they still own calls or
/// conferences.
pub async fn dead_owners(store: &Store, conn: &mut Conn) -> redis::RedisResult<Vec<String>> {
    let ids: Vec<String> = conn.zrange(keys::INSTANCES, 0, -1).await?;
    let others: Vec<&String> = ids.iter().filter(|i| **i != store.instance).collect();
    if others.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for id in &others {
        pipe.exists(keys::instance(id))
            .exists(keys::owned(id))
            .exists(keys::conferences_of(id));
    }
    let flags: Vec<bool> = pipe.query_async(conn).await?;
    let dead = others
        .iter()
        .zip(flags.chunks(3))
        .filter(|(_, f)| matches!(f, [false, true, _] | [false, _, true]))
        .map(|(id, _)| id.to_string())
        .collect();
    Ok(dead)
}
