//! Any instance answers for any call: a command for a call that another live
//! instance owns is forwarded to it over HTTP and its answer returned as is.
//! Forwarding (rather than a redirect) because Kamailio's rtpengine module
//! and plain HTTP clients in proxies do not follow redirects, and a UDP ng
//! reply cannot be one. A forwarded request carries `x-chorus-forwarded`
//! and is never forwarded again, so two instances that disagree about an
//! owner cannot bounce a request between them.

use super::{lock, State};
use crate::error::Error;
use crate::store::keys;
use redis::AsyncCommands;
use serde::Deserialize;
use std::time::Duration;

/// Header marking a request one instance forwarded to another.
pub const FORWARDED: &str = "x-chorus-forwarded";

/// Where a command on a call runs.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Here,
    /// On the owner, at this base URL (`http://host:port`).
    Owner {
        id: String,
        url: String,
    },
}

#[derive(Deserialize)]
struct OwnerOnly {
    owner: String,
}

/// Decides where a command on `call_id` runs. Here when there is no Redis,
/// Redis does not answer, the call is held here, or nobody else owns it
/// (a first offer creates it here). A call whose record is not written yet
/// (an answer racing its offer's write) is looked up once more.
pub async fn route(state: &State, call_id: &str, creates: bool) -> Route {
    if lock(&state.calls).contains_key(call_id) {
        return Route::Here;
    }
    owner_of(state, &keys::call(call_id), if creates { 1 } else { 2 }).await
}

/// Decides where a command on a conference runs: on the instance that holds
/// it. A conference just created elsewhere may not be written yet: unless
/// the command creates it, its record is looked up once more.
pub async fn route_conference(state: &State, conf_id: &str, creates: bool) -> Route {
    if lock(&state.conferences).contains_key(conf_id) {
        return Route::Here;
    }
    owner_of(state, &keys::conference(conf_id), if creates { 1 } else { 2 }).await
}

/// The live owner named in the record at `key`, looked up `attempts` times
/// 30 ms apart while there is none.
async fn owner_of(state: &State, key: &str, attempts: usize) -> Route {
    let Some(store) = &state.store else { return Route::Here };
    if !store.is_up() {
        return Route::Here;
    }
    let mut conn = store.conn.clone();
    for attempt in 0..attempts {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        let text: Option<String> = match conn.get(key).await {
            Ok(t) => t,
            Err(_) => return Route::Here,
        };
        let owner = text
            .and_then(|t| serde_json::from_str::<OwnerOnly>(&t).ok())
            .map(|o| o.owner);
        match owner {
            Some(id) if id == store.instance => return Route::Here,
            Some(id) => {
                let beat: Option<String> = conn.get(keys::instance(&id)).await.unwrap_or(None);
                let url = beat.and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok());
                return match url.as_ref().and_then(|v| v["url"].as_str()) {
                    Some(url) => Route::Owner {
                        id,
                        url: url.to_string(),
                    },
                    None => Route::Here, // owner dead: its calls are being taken over
                };
            }
            None => {}
        }
    }
    Route::Here
}

/// Sends a request on to the owner; returns its status, content type and body.
pub async fn send(
    state: &State,
    url: &str,
    method: reqwest::Method,
    path_and_query: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> Result<(u16, Option<String>, Vec<u8>), Error> {
    let me = state.store.as_ref().map(|s| s.instance.as_str()).unwrap_or("");
    let mut req = state
        .http
        .request(method, format!("{url}{path_and_query}"))
        .header(FORWARDED, me)
        .body(body);
    if let Some(ct) = content_type {
        req = req.header(reqwest::header::CONTENT_TYPE, ct);
    }
    if let Some(token) = &state.config.token {
        req = req.bearer_auth(token);
    }
    let unreachable = |e: reqwest::Error| {
        state.metrics.forwarded.with_label_values(&["failed"]).inc();
        Error::Unavailable(format!("the call's owner at {url} did not answer: {e}"))
    };
    let resp = req.send().await.map_err(unreachable)?;
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = resp.bytes().await.map_err(unreachable)?;
    state.metrics.forwarded.with_label_values(&["ok"]).inc();
    Ok((status, ct, bytes.to_vec()))
}

/// The base URL peers reach this instance's HTTP API at.
pub fn own_url(config: &crate::config::Config) -> String {
    if let Some(u) = &config.advertise_http {
        return u.trim_end_matches('/').to_string();
    }
    let mut addr = config.http_listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(config.advertise.unwrap_or(config.media_bind));
    }
    format!("http://{addr}")
}

/// HTTP middleware on the call routes: runs the request here, or forwards
/// it to the instance that owns the call.
pub async fn http_layer(
    axum::extract::State(state): axum::extract::State<std::sync::Arc<State>>,
    params: Result<
        axum::extract::Path<std::collections::HashMap<String, String>>,
        axum::extract::rejection::PathRejection,
    >,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let params = params.map(|p| p.0).unwrap_or_default();
    if req.headers().contains_key(FORWARDED) {
        return next.run(req).await;
    }
    let route = match (params.get("call_id"), params.get("conf_id")) {
        (Some(call_id), _) => {
            let creates = req.method() == axum::http::Method::POST && req.uri().path().ends_with("/offer");
            route(&state, call_id, creates).await
        }
        (None, Some(conf_id)) => route_conference(&state, conf_id, false).await,
        (None, None) => Route::Here,
    };
    let Route::Owner { id, url } = route else {
        return next.run(req).await;
    };
    let target = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
    if target.split('?').next().is_some_and(|p| p.ends_with("/events")) {
        // An event stream is not buffered through here: the client follows.
        let location = format!("{url}{target}");
        return (
            axum::http::StatusCode::TEMPORARY_REDIRECT,
            [(axum::http::header::LOCATION, location)],
        )
            .into_response();
    }
    tracing::debug!(owner = %id, %target, "forwarding to the owner");
    let method = req.method().clone();
    let ct = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let Ok(body) = axum::body::to_bytes(req.into_body(), super::http::MAX_BODY_BYTES).await else {
        return Error::TooLarge("request body over the limit".into()).into_response();
    };
    match send(&state, &url, method, &target, ct.as_deref(), body.to_vec()).await {
        Ok((status, ct, body)) => {
            let status = axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
            let ct = ct.unwrap_or_else(|| "application/json".into());
            (status, [(axum::http::header::CONTENT_TYPE, ct)], body).into_response()
        }
        Err(e) => e.into_response(),
    }
}
