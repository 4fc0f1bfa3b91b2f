//! Recreates conferences from their Redis records, like `restore` does
//! calls: same id and settings, each participant on its recorded address and
//! ports with its codec, so phones keep sending where they were told.
//! Latches start fresh; mute, deafen and gain are set again; the event
//! history is not carried.

use super::alloc::Alloc;
use super::conference_commands::{self as conf, Member, Settings};
use super::State;
use crate::store::conference_record::ConferenceRecord;
use crate::store::{keys, Store};
use crate::streams::Owner;
use redis::AsyncCommands;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

type Conn = redis::aio::ConnectionManager;

/// Restores every conference in `instance`'s set.
pub async fn conferences_of(state: &State, store: &Store, conn: &mut Conn, instance: &str) {
    let t0 = Instant::now();
    let ids: Vec<String> = match conn.smembers(keys::conferences_of(instance)).await {
        Ok(ids) => ids,
        Err(e) => return tracing::error!(error = %e, instance, "redis: cannot list the instance's conferences"),
    };
    if ids.is_empty() {
        return;
    }
    let conf_keys: Vec<String> = ids.iter().map(|id| keys::conference(id)).collect();
    let records: Vec<Option<String>> = match conn.mget(&conf_keys).await {
        Ok(r) => r,
        Err(e) => return tracing::error!(error = %e, "redis: cannot read conference records"),
    };
    let (mut restored, mut taps) = (0, Vec::new());
    for (id, text) in ids.iter().zip(records) {
        let result = match text.as_deref().map(ConferenceRecord::from_json) {
            None => Err("its record expired".to_string()),
            Some(Ok(rec)) if rec.owner != instance => Err(format!("owned by `{}` now", rec.owner)),
            Some(Ok(mut rec)) => {
                let t = std::mem::take(&mut rec.taps);
                let r = one(state, rec).await;
                if r.is_ok() {
                    taps.extend(t.into_iter().map(|t| (Owner::Conference(id.clone()), t)));
                }
                r
            }
            Some(Err(e)) => Err(e),
        };
        let label = if result.is_ok() { "ok" } else { "failed" };
        store.metrics.conferences_restored.with_label_values(&[label]).inc();
        match result {
            Ok(n) => {
                restored += 1;
                tracing::info!(conference = %id, participants = n, from = instance, "conference restored");
            }
            Err(reason) => tracing::warn!(conference = %id, from = instance, %reason, "conference not restored"),
        }
    }
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    tracing::info!(
        restored,
        of = ids.len(),
        ms,
        from = instance,
        "conferences restored from redis"
    );
    super::restore::resume_taps(state, taps).await;
}

/// Recreates one conference and its participants; returns how many came
/// back. A participant whose ports do not bind is left out (and logged);
/// the others keep their audio.
async fn one(state: &State, rec: ConferenceRecord) -> Result<usize, String> {
    super::check_id("conference", &rec.id).map_err(|e| e.to_string())?;
    let home = state.home_for_record(&rec.interfaces, &rec.owner);
    let max = state.config.max_participants;
    if rec.participants.len() > max {
        return Err(format!(
            "{} participants, more than this instance's max_participants ({max})",
            rec.participants.len()
        ));
    }
    let settings = Settings {
        mix_rate: rec.sample_rate,
        max_speakers: rec.max_speakers,
        max_participants: rec.max_participants.min(max),
    };
    let created = crate::store::record::time_of(rec.created);
    let key = state.next_key.fetch_add(1, Relaxed);
    let mut e = conf::open(state, rec.id.as_str().into(), key, settings, home.clone(), created)
        .await
        .map_err(|e| e.to_string())?;
    e.next_pid = rec.next_pid;
    for p in rec.participants {
        let spec = match p.codec.spec() {
            Ok(s) => s,
            Err(err) => {
                tracing::warn!(conference = %rec.id, participant = p.pid, error = %err, "participant not restored");
                continue;
            }
        };
        let mut alloc = Alloc::new(state, &home);
        if let Err(err) = alloc.claim(p.iface, p.ports) {
            tracing::warn!(conference = %rec.id, participant = p.pid, error = %err, "participant not restored");
            continue;
        }
        let sockets = alloc.fresh.iter_mut().flat_map(|(_, _, s)| s.drain(..)).collect();
        let member = Member {
            iface: p.iface,
            ports: p.ports,
            spec,
            peer: p.peer,
            controls: Default::default(),
            // SDES keys carry over; a browser must renegotiate with the
            // taker (its certificate differs), which the ICE and DTLS
            // state here cannot spare it.
            transport: p.transport,
        };
        if let Err(err) = conf::attach(state, &mut e, p.pid, member, sockets, None).await {
            alloc.rollback();
            tracing::warn!(conference = %rec.id, participant = p.pid, error = %err, "participant not restored");
            continue;
        }
        if let Err(err) = conf::set_controls(state, &mut e, p.pid, p.controls).await {
            tracing::warn!(conference = %rec.id, participant = p.pid, error = %err, "participant's controls not restored");
        }
    }
    super::replicate::conference_changed(state, &e);
    Ok(e.participants.len())
}
