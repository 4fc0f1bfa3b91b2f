//! The HTTP routes of WebSocket audio streams and recordings (see
//! `control::streams`, `control::recordings`).

use super::http::{body, instrumented, Shared};
use super::{recordings, streams};
use crate::streams::{Owner, RecordOptions, StartOptions};
use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::response::Response;
use axum::routing::{delete, post};
use axum::Router;
use serde::Deserialize;

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/v1/calls/{call_id}/events", axum::routing::get(call_events))
        .route("/v1/calls/{call_id}/dtmf", post(call_dtmf))
        .route("/v1/calls/{call_id}/streams", post(call_start).get(call_list))
        .route("/v1/calls/{call_id}/streams/{stream_id}", delete(call_stop))
        .route("/v1/conferences/{conf_id}/streams", post(conf_start).get(conf_list))
        .route("/v1/conferences/{conf_id}/streams/{stream_id}", delete(conf_stop))
        .route("/v1/calls/{call_id}/recordings", post(call_record).get(call_recordings))
        .route(
            "/v1/calls/{call_id}/recordings/{recording_id}",
            delete(call_record_stop).patch(call_record_pause),
        )
        .route(
            "/v1/conferences/{conf_id}/recordings",
            post(conf_record).get(conf_recordings),
        )
        .route(
            "/v1/conferences/{conf_id}/recordings/{recording_id}",
            delete(conf_record_stop).patch(conf_record_pause),
        )
        .route("/v1/conferences/{conf_id}/playbacks", post(play).get(playbacks))
        .route("/v1/conferences/{conf_id}/playbacks/{playback_id}", delete(play_stop))
        .route("/v1/calls/{call_id}/playbacks", post(call_play).get(call_playbacks))
        .route("/v1/calls/{call_id}/playbacks/{playback_id}", delete(call_play_stop))
}

async fn play(AxState(state): AxState<Shared>, Path(id): Path<String>, bytes: Bytes) -> Response {
    instrumented(&state, "playback_start", &id, async {
        super::conference_commands::handle(&state, &id)?;
        let opts: super::playbacks::PlayOptions = body(&bytes)?;
        super::playbacks::start(&state, &id, opts).await
    })
    .await
}

async fn playbacks(AxState(state): AxState<Shared>, Path(id): Path<String>) -> Response {
    instrumented(&state, "playback_list", &id, async {
        super::conference_commands::handle(&state, &id)?;
        Ok(super::playbacks::list(&state, &owner(false, &id)))
    })
    .await
}

async fn play_stop(AxState(state): AxState<Shared>, Path((id, pid)): Path<(String, String)>) -> Response {
    instrumented(&state, "playback_stop", &id, async {
        super::playbacks::stop(&state, &owner(false, &id), &pid).await
    })
    .await
}

async fn call_play(AxState(state): AxState<Shared>, Path(id): Path<String>, bytes: Bytes) -> Response {
    instrumented(&state, "playback_start", &id, async {
        super::calls::entry(&state, &id, false)?;
        let opts: super::playbacks::PlayOptions = body(&bytes)?;
        super::playbacks::start_call(&state, &id, opts).await
    })
    .await
}

async fn call_playbacks(AxState(state): AxState<Shared>, Path(id): Path<String>) -> Response {
    instrumented(&state, "playback_list", &id, async {
        super::calls::entry(&state, &id, false)?;
        Ok(super::playbacks::list(&state, &owner(true, &id)))
    })
    .await
}

async fn call_play_stop(AxState(state): AxState<Shared>, Path((id, pid)): Path<(String, String)>) -> Response {
    instrumented(&state, "playback_stop", &id, async {
        super::playbacks::stop(&state, &owner(true, &id), &pid).await
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PauseBody {
    paused: bool,
}

async fn call_record(AxState(state): AxState<Shared>, Path(id): Path<String>, bytes: Bytes) -> Response {
    instrumented(&state, "recording_start", &id, async {
        super::calls::entry(&state, &id, false)?;
        let opts: RecordOptions = body(&bytes)?;
        recordings::start_call(&state, &id, opts).await
    })
    .await
}

async fn conf_record(AxState(state): AxState<Shared>, Path(id): Path<String>, bytes: Bytes) -> Response {
    instrumented(&state, "recording_start", &id, async {
        super::conference_commands::handle(&state, &id)?;
        let opts: RecordOptions = body(&bytes)?;
        recordings::start_conference(&state, &id, opts).await
    })
    .await
}

async fn call_recordings(AxState(state): AxState<Shared>, Path(id): Path<String>) -> Response {
    instrumented(&state, "recording_list", &id, async {
        super::calls::entry(&state, &id, false)?;
        Ok(recordings::list(&state, &Owner::Call(id.clone())))
    })
    .await
}

async fn conf_recordings(AxState(state): AxState<Shared>, Path(id): Path<String>) -> Response {
    instrumented(&state, "recording_list", &id, async {
        super::conference_commands::handle(&state, &id)?;
        Ok(recordings::list(&state, &Owner::Conference(id.clone())))
    })
    .await
}

/// `owner` from the route: a call or a conference.
fn owner(call: bool, id: &str) -> Owner {
    match call {
        true => Owner::Call(id.to_string()),
        false => Owner::Conference(id.to_string()),
    }
}

async fn record_stop(state: Shared, call: bool, id: String, rid: String) -> Response {
    instrumented(&state, "recording_stop", &id, async {
        recordings::stop(&state, &owner(call, &id), &rid).await
    })
    .await
}

async fn record_pause(state: Shared, call: bool, id: String, rid: String, bytes: Bytes) -> Response {
    instrumented(&state, "recording_pause", &id, async {
        let b: PauseBody = body(&bytes)?;
        recordings::pause(&state, &owner(call, &id), &rid, b.paused)
    })
    .await
}

async fn call_record_stop(AxState(state): AxState<Shared>, Path((id, rid)): Path<(String, String)>) -> Response {
    record_stop(state, true, id, rid).await
}

async fn conf_record_stop(AxState(state): AxState<Shared>, Path((id, rid)): Path<(String, String)>) -> Response {
    record_stop(state, false, id, rid).await
}

async fn call_record_pause(
    AxState(state): AxState<Shared>,
    Path((id, rid)): Path<(String, String)>,
    bytes: Bytes,
) -> Response {
    record_pause(state, true, id, rid, bytes).await
}

async fn conf_record_pause(
    AxState(state): AxState<Shared>,
    Path((id, rid)): Path<(String, String)>,
    bytes: Bytes,
) -> Response {
    record_pause(state, false, id, rid, bytes).await
}

async fn call_dtmf(AxState(state): AxState<Shared>, Path(id): Path<String>, bytes: Bytes) -> Response {
    instrumented(&state, "dtmf_play", &id, async {
        super::calls::entry(&state, &id, false)?;
        let p: super::play_dtmf::PlayDtmf = body(&bytes)?;
        super::play_dtmf::play(&state, &id, p).await
    })
    .await
}

/// A call's live events: key presses, its streams' and recordings'.
async fn call_events(AxState(state): AxState<Shared>, Path(id): Path<String>) -> Response {
    use axum::response::IntoResponse;
    match super::call_events::subscribe(&state, &id) {
        Ok(rx) => super::http::sse(rx),
        Err(e) => e.into_response(),
    }
}

async fn call_start(AxState(state): AxState<Shared>, Path(id): Path<String>, bytes: Bytes) -> Response {
    instrumented(&state, "stream_start", &id, async {
        // An unknown call is said before anything about the body.
        super::calls::entry(&state, &id, false)?;
        let opts: StartOptions = body(&bytes)?;
        streams::start_call(&state, &id, opts).await
    })
    .await
}

async fn call_list(AxState(state): AxState<Shared>, Path(id): Path<String>) -> Response {
    instrumented(&state, "stream_list", &id, async {
        super::calls::entry(&state, &id, false)?;
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
