//! The control plane: shared state, the call commands both front doors use,
//! and the HTTP API.

pub mod alloc;
pub mod bridge;
pub mod call_events;
pub mod callbacks;
pub mod calls;
pub mod command;
pub mod conference_commands;
mod conference_join;
pub mod ended;
pub mod fence;
pub mod forward;
pub mod home;
pub mod http;
pub mod http_streams;
pub mod lifecycle;
pub mod limits;
pub mod ng;
pub mod ng_cookie;
mod ng_options;
mod ng_reply;
pub mod ng_streams;
pub mod openapi;
pub mod play_dtmf;
pub mod playbacks;
pub mod recordings;
pub mod replicate;
pub mod restore;
pub mod restore_conference;
pub mod streams;
#[cfg(feature = "test-hooks")]
pub mod test_hooks;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::session::Session;
use crate::worker::ports::SocketOptions;
use crate::worker::{self, CallKey, WorkerConfig, WorkerHandle};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;

/// What the control plane remembers of a call. Guarded by its own async
/// mutex so that commands on one call run in order while calls run in parallel.
pub struct CallEntry {
    pub call_id: Arc<str>,
    pub key: CallKey,
    pub worker: usize,
    pub session: Session,
    pub created: Instant,
    pub created_wall: SystemTime,
    /// The addresses and port pools the call's sockets live on.
    pub home: Arc<home::Home>,
    /// False once deleted: a command that waited on the lock must not revive it.
    pub alive: bool,
}

impl CallEntry {
    /// Which worker holds the call, under which key.
    pub fn placement(&self) -> (usize, CallKey) {
        (self.worker, self.key)
    }
}

/// A call's entry, locked for the length of one command.
pub type CallHandle = Arc<tokio::sync::Mutex<CallEntry>>;

pub struct State {
    pub config: Config,
    /// This instance's interfaces: addresses and port pools.
    pub home: Arc<home::Home>,
    /// Pools of addresses taken over from dead instances.
    pub foreign: home::ForeignPools,
    pub socket_options: SocketOptions,
    pub workers: Vec<WorkerHandle>,
    pub(crate) next_worker: AtomicUsize,
    pub(crate) next_key: AtomicU64,
    /// call id -> (key, entry). The key tells a call from a later one with the same id.
    pub calls: Mutex<HashMap<String, (CallKey, CallHandle)>>,
    pub metrics: Metrics,
    pub draining: AtomicBool,
    pub http: reqwest::Client,
    pub started: Instant,
    /// Last `statistics` sample, for ng's packet and byte rates.
    pub ng_rates: Mutex<ng_reply::Rates>,
    /// Replies by cookie, for ng retransmissions.
    pub ng_cookies: Mutex<ng::CookieCache>,
    /// conference id -> (key, entry).
    pub conferences: Mutex<HashMap<String, (CallKey, conference_commands::ConfHandle)>>,
    /// Calls and conferences that ended recently, for precise 404s.
    pub ended: Mutex<ended::Ended>,
    pub callbacks: callbacks::Callbacks,
    /// Control requests per second per source IP.
    pub rate: Mutex<limits::RateLimiter>,
    /// Redis, when `redis_url` is set.
    pub store: Option<Arc<crate::store::Store>>,
    /// Tells this run from an earlier one under the same instance name.
    pub boot: String,
    pub started_wall: SystemTime,
    /// chorus's DTLS certificate, made at start (browsers pin its fingerprint per call).
    pub dtls: Arc<crate::media::dtls::Identity>,
    /// WebSocket audio streams to applications.
    pub streams: Arc<crate::streams::Registry>,
    /// Calls' live events, by call id, while someone listens.
    pub call_events: Mutex<HashMap<String, tokio::sync::broadcast::Sender<serde_json::Value>>>,
}

/// A running control plane: its state, worker threads and worker events.
pub struct Started {
    pub state: Arc<State>,
    pub threads: Vec<std::thread::JoinHandle<()>>,
    pub events: worker::EventSource,
    /// Callbacks to deliver, when a callback URL is configured (run
    /// [`callbacks::deliver`] on it).
    pub callback_queue: Option<mpsc::Receiver<serde_json::Value>>,
    /// What streams report (run [`streams::pump_events`] on it).
    pub stream_events: mpsc::Receiver<crate::streams::StreamEvent>,
}

impl State {
    /// Starts the media workers and builds the shared state.
    pub fn start(config: Config) -> std::io::Result<Started> {
        let (tx, events) = worker::event_channel();
        let media = Media::start(&config, &tx)?;
        let (callbacks, callback_queue) = callbacks::Callbacks::new(config.callback_url.as_deref());
        let counters = media.workers.iter().map(|w| w.counters.clone()).collect();
        let metrics = Metrics::new(counters, media.kernel, media.tick_seconds);
        let store = open_store(&config, &metrics)?;
        let (streams, stream_events) =
            crate::streams::Registry::new(&metrics.registry, config.stream_ca_file.as_deref(), config.max_streams)
                .map_err(std::io::Error::other)?;
        let started_wall = SystemTime::now();
        let state = State {
            home: Arc::new(home::Home::own(
                config.all_interfaces(),
                config.port_min,
                config.port_max,
            )),
            foreign: home::ForeignPools::default(),
            socket_options: SocketOptions {
                recv_buffer: config.socket_recv_buffer,
                send_buffer: config.socket_send_buffer,
                dscp: config.dscp,
            },
            workers: media.workers,
            next_worker: AtomicUsize::new(0),
            next_key: AtomicU64::new(1),
            calls: Mutex::new(HashMap::new()),
            metrics,
            draining: AtomicBool::new(false),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .map_err(std::io::Error::other)?,
            started: Instant::now(),
            ng_rates: Mutex::new(ng_reply::Rates::default()),
            ng_cookies: Mutex::new(ng::CookieCache::default()),
            conferences: Mutex::new(HashMap::new()),
            ended: Mutex::new(ended::Ended::default()),
            callbacks,
            rate: Mutex::new(limits::RateLimiter::new(config.max_requests_per_second)),
            store,
            boot: boot_id(started_wall),
            started_wall,
            dtls: media.dtls,
            streams,
            call_events: Mutex::new(HashMap::new()),
            config,
        };
        Ok(Started {
            state: Arc::new(state),
            threads: media.threads,
            events,
            callback_queue,
            stream_events,
        })
    }

    /// The next worker in turn that is alive; an error if none is.
    pub fn pick_worker(&self) -> Result<usize, crate::error::Error> {
        let n = self.workers.len();
        let start = self.next_worker.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        (0..n)
            .map(|i| (start + i) % n)
            .find(|&w| self.workers[w].alive())
            .ok_or_else(|| crate::error::Error::Unavailable("no media worker is running".into()))
    }

    /// Admits one control request from `ip` under the per-source rate.
    pub fn admit(&self, ip: IpAddr) -> Result<(), crate::error::Error> {
        if lock(&self.rate).allow(ip, Instant::now()) {
            return Ok(());
        }
        self.metrics.limited.with_label_values(&["requests_per_second"]).inc();
        Err(crate::error::Error::Limit(format!(
            "more than {} control requests per second from {ip}",
            self.config.max_requests_per_second
        )))
    }

    /// Counts a refusal by a configured limit and says which.
    pub fn refuse(&self, limit: &'static str, message: String) -> crate::error::Error {
        self.metrics.limited.with_label_values(&[limit]).inc();
        tracing::warn!(limit, %message, "refused by a limit");
        crate::error::Error::Overloaded(message)
    }

    /// Parses an SDP from the proxy within the `m=` line limit.
    pub fn parse_sdp(&self, text: &str) -> Result<crate::sdp::Sdp, crate::error::Error> {
        let sdp = crate::sdp::Sdp::parse(text)?;
        let max = self.config.max_sdp_media;
        if sdp.media.len() > max {
            self.metrics.limited.with_label_values(&["sdp_media"]).inc();
            return Err(crate::error::Error::BadRequest(format!(
                "SDP has {} m= lines; max_sdp_media is {max}",
                sdp.media.len()
            )));
        }
        Ok(sdp)
    }

    /// Workers whose threads have died.
    pub fn dead_workers(&self) -> Vec<usize> {
        (0..self.workers.len()).filter(|&w| !self.workers[w].alive()).collect()
    }

    /// "no call `x`" with, when known, when and why it ended.
    pub fn not_found(&self, what: &str, id: &str) -> crate::error::Error {
        let why = lock(&self.ended).describe(id, Instant::now());
        crate::error::Error::NotFound(format!("no {what} `{id}`{why}"))
    }

    /// Where state restored from `owner`'s record lives: this instance's
    /// interfaces, or the dead owner's addresses with pools of our range.
    pub fn home_for_record(&self, interfaces: &[crate::config::Interface], owner: &str) -> Arc<home::Home> {
        let range = (self.config.port_min, self.config.port_max);
        self.foreign.home_for(&self.home, interfaces, owner, range)
    }

    pub fn interface_index(&self, name: &str) -> Option<usize> {
        self.home.interfaces.iter().position(|i| i.name == name)
    }

    pub fn call_count(&self) -> usize {
        lock(&self.calls).len()
    }

    /// Refreshes gauges that are cheaper to read on scrape than to keep.
    pub fn render_metrics(&self) -> String {
        self.metrics.calls_active.set(self.call_count() as i64);
        self.metrics
            .conferences_active
            .set(lock(&self.conferences).len() as i64);
        for (i, iface) in self.home.interfaces.iter().enumerate() {
            let (free, parked) = {
                let pool = lock(&self.home.pools[i]);
                (pool.free(), pool.parked())
            };
            let label = [iface.name.as_str()];
            self.metrics.ports_free.with_label_values(&label).set(free as i64);
            self.metrics.ports_parked.with_label_values(&label).set(parked as i64);
        }
        self.metrics.render()
    }
}

/// Longest call or conference id accepted (SIP Call-IDs are far shorter).
pub const MAX_ID_BYTES: usize = 256;

/// The media workers, started, and what they share with the control plane.
struct Media {
    workers: Vec<WorkerHandle>,
    threads: Vec<std::thread::JoinHandle<()>>,
    dtls: Arc<crate::media::dtls::Identity>,
    kernel: Option<Arc<crate::offload::KernelForward>>,
    tick_seconds: prometheus::Histogram,
}

impl Media {
    /// One worker per core unless configured; kernel forwarding set up
    /// first (or refused with the reason), so every worker gets it.
    fn start(config: &Config, events: &worker::EventSink) -> std::io::Result<Media> {
        let n = if config.workers == 0 {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        } else {
            config.workers
        };
        let dtls = crate::media::dtls::Identity::from_config(
            config.dtls_certificate.as_deref(),
            config.dtls_private_key.as_deref(),
        );
        let dtls = Arc::new(dtls.map_err(std::io::Error::other)?);
        let tick_seconds = crate::metrics::tick_histogram();
        let media_ips: Vec<_> = config.all_interfaces().iter().map(|i| i.bind).collect();
        let kernel = crate::offload::KernelForward::start(
            config.kernel_forward,
            &media_ips,
            &config.kernel_interfaces,
            config.kernel_streams,
        )
        .map_err(std::io::Error::other)?
        .map(Arc::new);
        let wc = WorkerConfig {
            media_timeout: Duration::from_secs(config.media_timeout),
            dtls: dtls.clone(),
            tick_seconds: tick_seconds.clone(),
            index: 0,
            send_pool: worker::send_pool::SendPool::new(n),
            recv_pool: worker::recv_pool::RecvPool::new(n),
            offload_min: config.mixer_offload_min,
            kernel: kernel.clone(),
            tos: config.dscp << 2,
            io_uring: config.io == crate::config::IoMode::Uring,
        };
        let (mut workers, mut threads) = (Vec::new(), Vec::new());
        for i in 0..n {
            let (h, t) = worker::spawn(i, WorkerConfig { index: i, ..wc.clone() }, events)?;
            workers.push(h);
            threads.push(t);
        }
        Ok(Media {
            workers,
            threads,
            dtls,
            kernel,
            tick_seconds,
        })
    }
}

/// The Redis store, when one is configured.
fn open_store(config: &Config, metrics: &Metrics) -> std::io::Result<Option<Arc<crate::store::Store>>> {
    let Some(url) = &config.redis_url else {
        return Ok(None);
    };
    let store = crate::store::Store::new(
        url,
        config.instance_name(),
        Duration::from_millis(config.redis_heartbeat_ms),
        Duration::from_secs(config.redis_record_ttl),
        &metrics.registry,
    )
    .map_err(std::io::Error::other)?;
    Ok(Some(Arc::new(store)))
}

/// Tells this run of the process apart from any other: its pid and its
/// start time in nanoseconds.
fn boot_id(started_wall: SystemTime) -> String {
    let nanos = started_wall
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{}-{nanos}", std::process::id())
}

/// Checks a call or conference id from the proxy: 1..=256 bytes, no control
/// characters (NUL included) and no whitespace. Other characters stay
/// allowed, `/` included, because SIP's Call-ID grammar (RFC 3261 25.1)
/// allows them; chorus never uses an id as a file name or a path.
pub fn check_id(what: &str, id: &str) -> Result<(), crate::error::Error> {
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        return Err(crate::error::Error::BadRequest(format!(
            "{what} id must be 1..={MAX_ID_BYTES} bytes, not {}",
            id.len()
        )));
    }
    if let Some(c) = id.chars().find(|c| c.is_control() || c.is_whitespace()) {
        return Err(crate::error::Error::BadRequest(format!(
            "{what} id contains the character {c:?}, which ids may not"
        )));
    }
    Ok(())
}

/// Locks a std mutex of the control plane. A panic while holding one is a
/// bug; the data (maps, port bitmaps) stays consistent, so carry on.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs one control command with its metrics and its log line; both front
/// doors (HTTP and ng) go through here.
pub async fn instrument<T, F>(
    state: &State,
    endpoint: &'static str,
    call_id: &str,
    f: F,
) -> Result<T, crate::error::Error>
where
    F: std::future::Future<Output = Result<T, crate::error::Error>>,
{
    let t0 = Instant::now();
    let r = f.await;
    let secs = t0.elapsed().as_secs_f64();
    state
        .metrics
        .request_seconds
        .with_label_values(&[endpoint])
        .observe(secs);
    let result = match &r {
        Ok(_) => "ok",
        Err(e) => e.code(),
    };
    state.metrics.requests.with_label_values(&[endpoint, result]).inc();
    match &r {
        // A line per request is three writes per set-up at thousands of
        // set-ups a second: a call is logged when it ends, requests at
        // debug.
        Ok(_) => tracing::debug!(endpoint, call_id, ms = secs * 1e3, "ok"),
        Err(e) => tracing::warn!(endpoint, call_id, ms = secs * 1e3, code = e.code(), error = %e, "refused"),
    }
    r
}
