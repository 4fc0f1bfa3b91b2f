//! Recreates this instance's calls from their Redis records after a
//! restart: same ports, same peers, fresh latches (a side learns its
//! source again under the usual rules, so RTP Bleed protection holds).

use super::alloc::Alloc;
use super::calls::{entry, push_to_worker, unregister};
use super::State;
use crate::session::Change;
use crate::store::record::CallRecord;
use crate::store::{keys, Store};
use redis::AsyncCommands;
use std::time::{Instant, SystemTime};

/// Restores every call the records say this instance owned. Calls that
/// cannot be restored (ports taken meanwhile, another interface) are
/// logged, counted and their records removed.
pub async fn own_calls(state: &State, store: &Store, conn: &mut redis::aio::ConnectionManager) {
    let t0 = Instant::now();
    let ids: Vec<String> = match conn.smembers(keys::owned(&store.instance)).await {
        Ok(ids) => ids,
        Err(e) => return tracing::error!(error = %e, "redis: cannot list this instance's calls"),
    };
    let (mut ok, mut failed) = (0, 0);
    for chunk in ids.chunks(500) {
        let call_keys: Vec<String> = chunk.iter().map(|id| keys::call(id)).collect();
        let records: Vec<Option<String>> = match conn.mget(&call_keys).await {
            Ok(r) => r,
            Err(e) => return tracing::error!(error = %e, "redis: cannot read call records"),
        };
        for (id, text) in chunk.iter().zip(records) {
            let result = match text {
                None => Err("its record expired".to_string()),
                Some(t) => match CallRecord::from_json(&t) {
                    Ok(rec) => one(state, store, rec).await,
                    Err(e) => Err(e),
                },
            };
            let label = if result.is_ok() { "ok" } else { "failed" };
            store.metrics.restored.with_label_values(&[label]).inc();
            match result {
                Ok(()) => ok += 1,
                Err(reason) => {
                    failed += 1;
                    tracing::warn!(call_id = %id, %reason, "call not restored");
                    let _: Result<(), _> = redis::pipe()
                        .del(keys::call(id))
                        .srem(keys::owned(&store.instance), id)
                        .query_async(conn)
                        .await;
                }
            }
        }
    }
    if ok + failed > 0 {
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        tracing::info!(restored = ok, failed, ms, "calls restored from redis");
    }
}

/// Recreates one call: its entry, its sockets on the recorded ports, its
/// streams on a worker.
async fn one(state: &State, store: &Store, rec: CallRecord) -> Result<(), String> {
    if rec.owner != store.instance {
        return Err(format!("owned by `{}`", rec.owner));
    }
    rec.check_interfaces(&state.interfaces)?;
    super::check_id("call", &rec.call_id).map_err(|e| e.to_string())?;
    let handle = entry(state, &rec.call_id, true).map_err(|e| e.to_string())?;
    let mut e = handle.lock().await;
    if e.session.offered {
        return Err("a call with this id exists already".into());
    }
    let mut alloc = Alloc::new(state);
    let claimed = rec.session.all_ports().try_for_each(|(iface, p)| alloc.claim(iface, p));
    let pushed = match claimed {
        Ok(()) => {
            e.session = rec.session.clone();
            let age = SystemTime::now().duration_since(rec.created_at()).unwrap_or_default();
            e.created_wall = rec.created_at();
            e.created = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
            push_to_worker(state, &e, &mut alloc, Change { relearn_leg: 0 })
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
    Ok(())
}
