//! The HTTP routes of WebSocket audio streams (see `control::streams`).

use super::http::{body, instrumented, Shared};
use super::streams;
use crate::streams::{Owner, StartOptions};
use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::response::Response;
use axum::routing::{delete, post};
use axum::Router;

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/v1/calls/{call_id}/streams", post(call_start).get(call_list))
        .route("/v1/calls/{call_id}/streams/{stream_id}", delete(call_stop))
        .route("/v1/conferences/{conf_id}/streams", post(conf_start).get(conf_list))
        .route("/v1/conferences/{conf_id}/streams/{stream_id}", delete(conf_stop))
}

async fn call_start(AxState(state): AxState<Shared>, Path(id): Path<String>, bytes: Bytes) -> Response {
    instrumented(&state, "stream_start", &id, async {
        // An unknown call is said before anything about the body.
        super::calls::query(&state, &id).await?;
        let opts: StartOptions = body(&bytes)?;
        streams::start_call(&state, &id, opts).await
    })
    .await
}

async fn call_list(AxState(state): AxState<Shared>, Path(id): Path<String>) -> Response {
    instrumented(&state, "stream_list", &id, async {
        super::calls::query(&state, &id).await?;
        Ok(streams::list(&state, &Owner::Call(id.clone())))
    })
    .await
}

async fn call_stop(AxState(state): AxState<Shared>, Path((id, sid)): Path<(String, String)>) -> Response {
    instrumented(&state, "stream_stop", &id, async {
        streams::stop(&state, &Owner::Call(id.clone()), &sid).await
    })
    .await
}

async fn conf_start(AxState(state): AxState<Shared>, Path(id): Path<String>, bytes: Bytes) -> Response {
    instrumented(&state, "stream_start", &id, async {
        super::conference_commands::handle(&state, &id)?;
        let opts: StartOptions = body(&bytes)?;
        streams::start_conference(&state, &id, opts).await
    })
    .await
}

async fn conf_list(AxState(state): AxState<Shared>, Path(id): Path<String>) -> Response {
    instrumented(&state, "stream_list", &id, async {
        super::conference_commands::handle(&state, &id)?;
        Ok(streams::list(&state, &Owner::Conference(id.clone())))
    })
    .await
}

async fn conf_stop(AxState(state): AxState<Shared>, Path((id, sid)): Path<(String, String)>) -> Response {
    instrumented(&state, "stream_stop", &id, async {
        streams::stop(&state, &Owner::Conference(id.clone()), &sid).await
    })
    .await
}
