//! Test-only endpoints, compiled with the `test-hooks` feature (scripts/test
//! turns it on; release builds never have it). `POST /v1/test/panic/calls/{id}`
//! and `.../conferences/{id}` make that call or conference panic on its next
//! packet or tick, as a bug in its processing would, so that tests can show
//! that the panic costs that call only. `.../workers/{n}` makes worker `n`'s
//! loop itself panic, outside any call; `/v1/test/kill/workers/{n}` makes its
//! thread die; `/v1/test/slow/workers/{n}/{ms}` adds `ms` to each of its
//! mixer ticks.

use super::{lock, State};
use crate::error::Error;
use crate::worker::Command;
use axum::extract::{Path, State as AxState};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;
use std::sync::Arc;
use tokio::sync::oneshot;

pub fn routes() -> Router<Arc<State>> {
    Router::new()
        .route("/v1/test/panic/calls/{id}", post(arm_call))
        .route("/v1/test/panic/conferences/{id}", post(arm_conference))
        .route("/v1/test/panic/workers/{n}", post(panic_worker))
        .route("/v1/test/kill/workers/{n}", post(kill_worker))
        .route("/v1/test/slow/workers/{n}/{ms}", post(slow_worker))
}

async fn arm(state: &State, worker: usize, key: u64) -> Result<(), Error> {
    let (reply, rx) = oneshot::channel();
    state.workers[worker].send(Command::ArmPanic { key, reply })?;
    match rx.await {
        Ok(true) => Ok(()),
        _ => Err(Error::NotFound("the worker does not hold it".into())),
    }
}

async fn arm_call(AxState(state): AxState<Arc<State>>, Path(id): Path<String>) -> Response {
    let handle = lock(&state.calls).get(&id).map(|(_, h)| h.clone());
    let at = match handle {
        Some(h) => Some(h.lock().await.placement()),
        None => None,
    };
    arm_at(&state, "call", id, at).await
}

async fn arm_conference(AxState(state): AxState<Arc<State>>, Path(id): Path<String>) -> Response {
    let handle = lock(&state.conferences).get(&id).map(|(_, h)| h.clone());
    let at = match handle {
        Some(h) => Some(h.lock().await.placement()),
        None => None,
    };
    arm_at(&state, "conference", id, at).await
}

/// Arms the call or conference at `(worker, key)`, if it exists.
async fn arm_at(state: &State, what: &str, id: String, at: Option<(usize, u64)>) -> Response {
    let Some((worker, key)) = at else {
        return state.not_found(what, &id).into_response();
    };
    match arm(state, worker, key).await {
        Ok(()) => Json(json!({ "armed": id })).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn panic_worker(AxState(state): AxState<Arc<State>>, Path(n): Path<usize>) -> Response {
    to_worker(&state, n, Command::PanicLoop)
}

async fn kill_worker(AxState(state): AxState<Arc<State>>, Path(n): Path<usize>) -> Response {
    to_worker(&state, n, Command::KillThread)
}

/// Every tick of worker `n` takes `ms` longer (0 ends it).
async fn slow_worker(AxState(state): AxState<Arc<State>>, Path((n, ms)): Path<(usize, u64)>) -> Response {
    let d = std::time::Duration::from_millis(ms.min(100));
    to_worker(&state, n, Command::SlowTicks(d))
}

fn to_worker(state: &State, n: usize, cmd: Command) -> Response {
    match state.workers.get(n).map(|w| w.send(cmd)) {
        Some(Ok(())) => Json(json!({ "panicked": n })).into_response(),
        Some(Err(e)) => Error::from(e).into_response(),
        None => Error::NotFound(format!("no worker {n}")).into_response(),
    }
}
