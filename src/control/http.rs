//! The HTTP JSON API (see `openapi.json`, served at `/openapi.json`).

use super::calls;
use super::command::{self, CallCommand, Outcome};
use super::State;
use crate::error::Error;
use crate::session::{checked_transport, suites, MuxOption, Options, SdesOptions};
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State as AxState};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// Request bodies at most: an SDP offer with video and ICE is a few KB.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Request headers at most (all names and values): a bearer token and the
/// usual few fit in well under this.
pub const MAX_HEADER_BYTES: usize = 16 << 10;

pub(super) type Shared = Arc<State>;

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = json!({ "error": { "code": self.code(), "message": self.to_string() } });
        (status, Json(body)).into_response()
    }
}

pub fn router(state: Shared) -> Router {
    let v1 = Router::new()
        .route("/v1/calls", get(list))
        .route("/v1/calls/{call_id}", get(query).delete(delete))
        .route("/v1/calls/{call_id}/offer", post(offer))
        .route("/v1/calls/{call_id}/answer", post(answer))
        .route("/v1/calls/{call_id}/delete", post(delete_post))
        .route("/v1/conferences", post(conf_create).get(conf_list))
        .route("/v1/instances", get(instances))
        .route("/v1/conferences/{conf_id}", get(conf_query).delete(conf_delete))
        .route("/v1/conferences/{conf_id}/participants", post(conf_join))
        .route("/v1/conferences/{conf_id}/events", get(conf_events))
        .route(
            "/v1/conferences/{conf_id}/participants/{pid}",
            patch(conf_control).delete(conf_leave),
        )
        .merge(super::http_streams::routes())
        // Layers run last-added first: auth, then forwarding.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            super::forward::http_layer,
        ))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    #[cfg(feature = "test-hooks")]
    let v1 = v1.merge(super::test_hooks::routes());
    Router::new()
        .merge(v1)
        .route(
            "/ng",
            post(ng_http).route_layer(middleware::from_fn_with_state(state.clone(), auth)),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(
            "/openapi.json",
            get(|AxState(state): AxState<Shared>| async move {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    super::openapi::document(&state),
                )
            }),
        )
        .fallback(|| async { Error::NotFound("no such endpoint; see /openapi.json".into()) })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(json_errors))
        .with_state(state)
}

/// Every error answers in the API's JSON shape, including the ones axum
/// makes itself (405 for a wrong method, 413 for a body over the limit), and
/// oversized headers are refused before any handler runs.
async fn json_errors(req: Request, next: Next) -> Response {
    let header_bytes: usize = req.headers().iter().map(|(k, v)| k.as_str().len() + v.len()).sum();
    if header_bytes > MAX_HEADER_BYTES {
        let e = json!({ "error": { "code": "headers_too_large",
            "message": format!("request headers over {MAX_HEADER_BYTES} bytes") } });
        return (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, Json(e)).into_response();
    }
    let resp = next.run(req).await;
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let text = axum::body::to_bytes(resp.into_body(), 4096).await.unwrap_or_default();
    let message = match String::from_utf8_lossy(&text).trim() {
        "" => status.canonical_reason().unwrap_or("error").to_string(),
        t => t.to_string(),
    };
    let error = match status {
        StatusCode::METHOD_NOT_ALLOWED => Error::MethodNotAllowed(format!("{message}; see /openapi.json")),
        StatusCode::PAYLOAD_TOO_LARGE => Error::TooLarge(format!("request body over {MAX_BODY_BYTES} bytes")),
        s if s.is_server_error() => Error::Internal(message),
        _ => Error::BadRequest(message),
    };
    let mut out = error.into_response();
    *out.status_mut() = status;
    out
}

async fn auth(AxState(state): AxState<Shared>, headers: HeaderMap, req: Request, next: Next) -> Response {
    // Rate first: a flood of unauthenticated requests is limited too.
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    if let Some(ip) = peer {
        if let Err(e) = state.admit(ip) {
            return e.into_response();
        }
    }
    if let Some(token) = &state.config.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(token.as_str()) {
            state
                .metrics
                .requests
                .with_label_values(&["auth", "unauthorized"])
                .inc();
            return Error::Unauthorized.into_response();
        }
    }
    next.run(req).await
}

/// Runs one control request (metrics, one log line) and answers in JSON.
pub(super) async fn instrumented<F>(state: &State, endpoint: &'static str, call_id: &str, f: F) -> Response
where
    F: std::future::Future<Output = Result<Value, Error>>,
{
    match super::instrument(state, endpoint, call_id, f).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Query-string errors in the API's JSON shape, not axum's plain text.
fn bad_query(e: QueryRejection) -> Error {
    Error::BadRequest(format!("invalid query string: {}", e.body_text()))
}

/// A JSON body. An explicit `null` is refused (leave the field out): the
/// API document has no nullable fields, and the server says what it says.
pub(super) fn body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| Error::BadRequest(format!("invalid JSON body: {e}")))?;
    if let Some(path) = null_member(&v, "") {
        return Err(Error::BadRequest(format!(
            "`{path}` is null; leave the field out instead"
        )));
    }
    serde_json::from_value(v).map_err(|e| Error::BadRequest(format!("invalid JSON body: {e}")))
}

/// The path of the first object member whose value is `null`, if any.
fn null_member(v: &Value, at: &str) -> Option<String> {
    match v {
        Value::Object(m) => m.iter().find_map(|(k, x)| {
            let path = if at.is_empty() { k.clone() } else { format!("{at}.{k}") };
            if x.is_null() {
                Some(path)
            } else {
                null_member(x, &path)
            }
        }),
        Value::Array(items) => items.iter().find_map(|x| null_member(x, at)),
        _ => None,
    }
}

/// Offer/answer options as the HTTP API spells them.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpOptions {
    received_from: Option<IpAddr>,
    #[serde(default)]
    ice: IceOption,
    rtcp_mux: Option<MuxOption>,
    from_interface: Option<String>,
    to_interface: Option<String>,
    #[serde(default)]
    any_source: bool,
    #[serde(default)]
    sip_source_address: bool,
    #[serde(default)]
    replace_origin: bool,
    media_address: Option<IpAddr>,
    #[serde(default)]
    strip_codecs: Vec<String>,
    label: Option<String>,
    transport_protocol: Option<String>,
    #[serde(default)]
    sdes: HttpSdes,
    dtls: Option<crate::media::dtls::Role>,
    #[serde(default)]
    generate_mid: bool,
    #[serde(default)]
    transcode: Vec<String>,
    #[serde(default)]
    mask_codecs: Vec<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpSdes {
    #[serde(default)]
    off: bool,
    #[serde(default)]
    only: Vec<String>,
    #[serde(default)]
    no: Vec<String>,
}

#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
enum IceOption {
    #[default]
    Keep,
    Remove,
}

impl HttpOptions {
    fn resolve(self, state: &State) -> Result<Options, Error> {
        let iface = |name: Option<String>| -> Result<Option<usize>, Error> {
            name.map(|n| {
                state
                    .interface_index(&n)
                    .ok_or_else(|| Error::BadRequest(format!("no interface named `{n}`")))
            })
            .transpose()
        };
        Ok(Options {
            received_from: self.received_from,
            remove_ice: self.ice == IceOption::Remove,
            rtcp_mux: self.rtcp_mux,
            from_interface: iface(self.from_interface)?,
            to_interface: iface(self.to_interface)?,
            any_source: self.any_source,
            sip_source_address: self.sip_source_address,
            replace_origin: self.replace_origin,
            media_address: self.media_address,
            strip_codecs: self.strip_codecs,
            label: self.label,
            transport_protocol: self.transport_protocol.map(checked_transport).transpose()?,
            sdes: SdesOptions {
                off: self.sdes.off,
                only: suites(&self.sdes.only)?,
                no: suites(&self.sdes.no)?,
            },
            dtls: self.dtls,
            generate_mid: self.generate_mid,
            transcode: self.transcode,
            mask_codecs: self.mask_codecs,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OfferBody {
    from_tag: String,
    sdp: String,
    #[serde(default)]
    options: HttpOptions,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnswerBody {
    from_tag: String,
    to_tag: String,
    sdp: String,
    #[serde(default)]
    options: HttpOptions,
}

/// Runs a call command (or reports why the request did not make one) and
/// answers with its outcome in JSON.
async fn call_command(
    state: &State,
    endpoint: &'static str,
    call_id: &str,
    cmd: Result<CallCommand<'_>, Error>,
) -> Response {
    instrumented(state, endpoint, call_id, async {
        match command::execute(state, cmd?).await? {
            Outcome::Sdp(sdp) => Ok(json!({ "sdp": sdp })),
            Outcome::Call(c) => Ok(c.to_json()),
        }
    })
    .await
}

async fn offer(AxState(state): AxState<Shared>, Path(call_id): Path<String>, bytes: Bytes) -> Response {
    let b = match body::<OfferBody>(&bytes) {
        Ok(b) => b,
        Err(e) => return call_command(&state, "offer", &call_id, Err(e)).await,
    };
    let cmd = b.options.clone().resolve(&state).map(|options| CallCommand::Offer {
        call_id: &call_id,
        from_tag: &b.from_tag,
        sdp: &b.sdp,
        options,
    });
    call_command(&state, "offer", &call_id, cmd).await
}

async fn answer(AxState(state): AxState<Shared>, Path(call_id): Path<String>, bytes: Bytes) -> Response {
    let b = match body::<AnswerBody>(&bytes) {
        Ok(b) => b,
        Err(e) => return call_command(&state, "answer", &call_id, Err(e)).await,
    };
    let cmd = b.options.clone().resolve(&state).map(|options| CallCommand::Answer {
        call_id: &call_id,
        from_tag: &b.from_tag,
        to_tag: &b.to_tag,
        sdp: &b.sdp,
        options,
    });
    call_command(&state, "answer", &call_id, cmd).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DeleteParams {
    from_tag: Option<String>,
}

async fn delete(
    AxState(state): AxState<Shared>,
    Path(call_id): Path<String>,
    q: Result<Query<DeleteParams>, QueryRejection>,
) -> Response {
    let p = match q {
        Ok(Query(p)) => p,
        Err(e) => return call_command(&state, "delete", &call_id, Err(bad_query(e))).await,
    };
    let cmd = CallCommand::Delete {
        call_id: &call_id,
        from_tag: p.from_tag.as_deref(),
    };
    call_command(&state, "delete", &call_id, Ok(cmd)).await
}

/// POST alias of DELETE, for HTTP clients in SIP proxies that cannot send DELETE.
async fn delete_post(AxState(state): AxState<Shared>, Path(call_id): Path<String>, bytes: Bytes) -> Response {
    let p = if bytes.iter().all(u8::is_ascii_whitespace) {
        DeleteParams::default()
    } else {
        match body::<DeleteParams>(&bytes) {
            Ok(p) => p,
            Err(e) => return call_command(&state, "delete", &call_id, Err(e)).await,
        }
    };
    let cmd = CallCommand::Delete {
        call_id: &call_id,
        from_tag: p.from_tag.as_deref(),
    };
    call_command(&state, "delete", &call_id, Ok(cmd)).await
}

async fn query(AxState(state): AxState<Shared>, Path(call_id): Path<String>) -> Response {
    call_command(&state, "query", &call_id, Ok(CallCommand::Query { call_id: &call_id })).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    #[serde(default)]
    offset: usize,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    100
}

async fn list(AxState(state): AxState<Shared>, q: Result<Query<ListParams>, QueryRejection>) -> Response {
    instrumented(&state, "list", "", async {
        let Query(p) = q.map_err(bad_query)?;
        if p.limit == 0 || p.limit > 1000 {
            return Err(Error::BadRequest("limit must be 1..=1000".into()));
        }
        Ok(calls::list(&state, p.offset, p.limit))
    })
    .await
}

/// Live while every media worker thread is: a dead one means calls placed
/// on it fail, so the process should be restarted (Kubernetes, systemd).
async fn healthz(AxState(state): AxState<Shared>) -> Response {
    let dead = state.dead_workers();
    if dead.is_empty() {
        Json(json!({ "status": "ok", "workers": state.workers.len() })).into_response()
    } else {
        let body = json!({
            "status": "unhealthy",
            "error": { "code": "dead_workers", "message": format!("media worker(s) {dead:?} have died") },
            "dead_workers": dead,
        });
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

async fn readyz(AxState(state): AxState<Shared>) -> Response {
    let dead = state.dead_workers();
    if state.draining.load(Relaxed) {
        Error::Draining.into_response()
    } else if !dead.is_empty() {
        Error::Unavailable(format!("media worker(s) {dead:?} have died")).into_response()
    } else {
        // Redis down does not make an instance unready: its calls go on.
        let redis = match &state.store {
            None => "off",
            Some(s) if s.is_up() => "up",
            Some(_) => "down",
        };
        Json(json!({ "status": "ready", "redis": redis })).into_response()
    }
}

async fn metrics(AxState(state): AxState<Shared>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.render_metrics(),
    )
        .into_response()
}

/// rtpengine's ng protocol over HTTP: the body is `<cookie> <bencode>`.
/// Replies are cached per cookie and client IP, as over UDP per address.
async fn ng_http(AxState(state): AxState<Shared>, req: Request) -> Response {
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let forwarded = req.headers().contains_key(super::forward::FORWARDED);
    let Ok(bytes) = axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES).await else {
        return Error::TooLarge(format!("ng message over {MAX_BODY_BYTES} bytes")).into_response();
    };
    match (super::ng::Ng {
        state: &state,
        forwarded,
    })
    .handle(&bytes, super::ng::Source::Http(peer))
    .await
    {
        Some(reply) => ([(header::CONTENT_TYPE, "application/x-rtpengine-ng")], reply.to_vec()).into_response(),
        None => Error::BadRequest("ng message needs `<cookie> <bencoded dictionary>`".into()).into_response(),
    }
}

async fn conf_create(AxState(state): AxState<Shared>, bytes: Bytes) -> Response {
    instrumented(&state, "conference_create", "", async {
        let opts = if bytes.iter().all(u8::is_ascii_whitespace) {
            Default::default()
        } else {
            body(&bytes)?
        };
        super::conference_commands::create(&state, opts).await
    })
    .await
}

async fn conf_query(AxState(state): AxState<Shared>, Path(id): Path<String>) -> Response {
    instrumented(
        &state,
        "conference_query",
        &id,
        super::conference_commands::query(&state, &id),
    )
    .await
}

async fn conf_delete(AxState(state): AxState<Shared>, Path(id): Path<String>) -> Response {
    instrumented(
        &state,
        "conference_delete",
        &id,
        super::conference_commands::delete(&state, &id),
    )
    .await
}

/// Either an SDP offer, or a leg of a relayed call to move in.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinBody {
    sdp: Option<String>,
    call_id: Option<String>,
    from_tag: Option<String>,
    options: Option<super::conference_commands::JoinOptions>,
}

async fn conf_join(AxState(state): AxState<Shared>, Path(id): Path<String>, bytes: Bytes) -> Response {
    instrumented(&state, "conference_join", &id, async {
        let b: JoinBody = body(&bytes)?;
        match (b.sdp, b.call_id, b.from_tag, b.options) {
            (Some(sdp), None, None, options) => {
                super::conference_commands::join(&state, &id, &sdp, options.unwrap_or_default()).await
            }
            (None, Some(call), Some(tag), None) => {
                super::conference_commands::join_call_leg(&state, &id, &call, &tag).await
            }
            _ => Err(Error::BadRequest(
                "give either `sdp` (and `options`), or `call_id` and `from_tag`".into(),
            )),
        }
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ControlBody {
    muted: Option<bool>,
    deaf: Option<bool>,
    gain: Option<f32>,
}

async fn conf_control(AxState(state): AxState<Shared>, Path((id, pid)): Path<(String, u32)>, bytes: Bytes) -> Response {
    instrumented(&state, "conference_control", &id, async {
        let b: ControlBody = body(&bytes)?;
        let c = crate::media::conference::Controls {
            muted: b.muted,
            deaf: b.deaf,
            gain: b.gain,
        };
        super::conference_commands::control(&state, &id, pid, c).await
    })
    .await
}

async fn conf_leave(AxState(state): AxState<Shared>, Path((id, pid)): Path<(String, u32)>) -> Response {
    instrumented(
        &state,
        "conference_leave",
        &id,
        super::conference_commands::leave(&state, &id, pid),
    )
    .await
}

/// Server-sent events: joined, left, started/stopped speaking, DTMF digits.
async fn conf_events(AxState(state): AxState<Shared>, Path(id): Path<String>) -> Response {
    match super::conference_commands::subscribe(&state, &id).await {
        Ok(rx) => sse(rx),
        Err(e) => e.into_response(),
    }
}

/// Server-sent events from `rx`, each named by its `event` field, until it closes.
pub(super) fn sse(rx: tokio::sync::broadcast::Receiver<Value>) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use tokio::sync::broadcast::error::RecvError;
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(v) => {
                    let name = v["event"].as_str().unwrap_or("event").to_string();
                    let ev = Event::default().event(name).data(v.to_string());
                    return Some((Ok::<_, std::convert::Infallible>(ev), rx));
                }
                // A slow reader missed some; carry on with the newest.
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

async fn instances(AxState(state): AxState<Shared>) -> Response {
    instrumented(&state, "instances", "", super::replicate::instances(&state)).await
}

async fn conf_list(AxState(state): AxState<Shared>, q: Result<Query<ListParams>, QueryRejection>) -> Response {
    instrumented(&state, "conference_list", "", async {
        let Query(p) = q.map_err(bad_query)?;
        if p.limit == 0 || p.limit > 1000 {
            return Err(Error::BadRequest("limit must be 1..=1000".into()));
        }
        Ok(super::conference_commands::list(&state, p.offset, p.limit))
    })
    .await
}
