//! Shared state in Redis: each instance writes the records of the calls it
//! owns and a heartbeat, so that a restarted instance (or, later, a peer)
//! can recreate them. Nothing here runs on the packet path: records are
//! handed over at command boundaries and written by one task
//! (`control::replicate`), coalesced per call.

pub mod conference_record;
pub mod record;

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Redis keys, all under `chorus:`.
pub mod keys {
    /// A call's record (JSON), with an expiry its owner refreshes.
    pub fn call(id: &str) -> String {
        format!("chorus:call:{id}")
    }
    /// A conference's record (JSON, with its `owner`), refreshed like call
    /// records.
    pub fn conference(id: &str) -> String {
        format!("chorus:conference:{id}")
    }
    /// The set of conference ids an instance owns.
    pub fn conferences_of(instance: &str) -> String {
        format!("chorus:owner-conferences:{instance}")
    }
    /// The set of call ids an instance owns.
    pub fn owned(instance: &str) -> String {
        format!("chorus:owner:{instance}")
    }
    /// An instance's heartbeat (JSON); it expires after three missed beats.
    pub fn instance(instance: &str) -> String {
        format!("chorus:instance:{instance}")
    }
    /// Held by the instance restoring `instance`'s calls (itself after a
    /// restart, or a peer taking over), so only one does.
    pub fn takeover(instance: &str) -> String {
        format!("chorus:takeover:{instance}")
    }
    /// Where an instance answers (its URL and ng address), kept a day past
    /// its death so that whoever takes its calls over can take these too.
    pub fn addresses(instance: &str) -> String {
        format!("chorus:addresses:{instance}")
    }
    /// Every instance seen, scored by when its heartbeat was last written (ms).
    pub const INSTANCES: &str = "chorus:instances";
}

/// What the writer has to do for one call: write its record, or remove it.
pub type Pending = HashMap<Arc<str>, Option<String>>;

pub struct Store {
    pub instance: String,
    pub heartbeat: Duration,
    pub record_ttl: Duration,
    pub conn: ConnectionManager,
    /// Changes not written yet, coalesced per call (bounded by the calls held:
    /// while Redis is down nothing is queued, a full rewrite follows).
    pending: Mutex<Pending>,
    /// Conference records changed (`Some`) or ended (`None`) since the last write.
    conferences: Mutex<Pending>,
    pub wake: Notify,
    up: AtomicBool,
    /// Set when Redis missed changes: every record is written again.
    pub resync: AtomicBool,
    pub metrics: StoreMetrics,
}

pub struct StoreMetrics {
    pub up: IntGauge,
    /// Redis round trips by result (ok, error).
    pub ops: IntCounterVec,
    /// Calls restored from records at start, by result.
    pub restored: IntCounterVec,
    /// Conferences restored, by result (participants left out are logged).
    pub conferences_restored: IntCounterVec,
    /// Calls and conferences let go because a peer took them over while
    /// this instance's heartbeat had lapsed, by kind.
    pub fenced: IntCounterVec,
}

impl Store {
    /// Prepares the connection (made lazily: Redis may be down at start).
    pub fn new(
        url: &str,
        instance: String,
        heartbeat: Duration,
        record_ttl: Duration,
        registry: &Registry,
    ) -> Result<Store, String> {
        let client = redis::Client::open(url).map_err(|e| format!("redis_url `{url}`: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(heartbeat.max(Duration::from_millis(200))))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn =
            ConnectionManager::new_lazy_with_config(client, config).map_err(|e| format!("redis_url `{url}`: {e}"))?;
        Ok(Store {
            instance,
            heartbeat,
            record_ttl,
            conn,
            pending: Mutex::new(Pending::new()),
            conferences: Mutex::new(Pending::new()),
            wake: Notify::new(),
            up: AtomicBool::new(false),
            resync: AtomicBool::new(true),
            metrics: StoreMetrics::register(registry),
        })
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Relaxed)
    }

    /// Records whether the last round trip worked; says so once per change.
    pub fn set_up(&self, up: bool, error: Option<&redis::RedisError>) {
        self.metrics
            .ops
            .with_label_values(&[if up { "ok" } else { "error" }])
            .inc();
        if self.up.swap(up, Relaxed) != up {
            self.metrics.up.set(i64::from(up));
            match error {
                Some(e) => {
                    tracing::error!(error = %e, "redis is unreachable; calls go on, records are written again once it is back")
                }
                None => tracing::info!("redis is reachable"),
            }
        }
        if !up {
            // What is pending now is covered by the rewrite that follows.
            self.resync.store(true, Relaxed);
            self.take_pending();
            self.take_conferences();
        }
    }

    /// A call's record changed (`Some`) or the call ended (`None`).
    pub fn call_changed(&self, call_id: &Arc<str>, record: Option<String>) {
        if !self.is_up() {
            return; // the rewrite on reconnection covers it
        }
        lock(&self.pending).insert(call_id.clone(), record);
        self.wake.notify_one();
    }

    /// A conference's record changed (`Some`) or it ended (`None`).
    pub fn conference_changed(&self, id: &Arc<str>, record: Option<String>) {
        if !self.is_up() {
            return; // the rewrite on reconnection covers it
        }
        lock(&self.conferences).insert(id.clone(), record);
        self.wake.notify_one();
    }

    pub fn take_conferences(&self) -> Pending {
        std::mem::take(&mut *lock(&self.conferences))
    }

    pub fn take_pending(&self) -> Pending {
        std::mem::take(&mut *lock(&self.pending))
    }
}

impl StoreMetrics {
    fn register(registry: &Registry) -> StoreMetrics {
        let up = IntGauge::new("chorus_redis_up", "1 while Redis answers this instance").expect("valid metric");
        let ops = IntCounterVec::new(
            Opts::new("chorus_redis_operations_total", "Redis round trips by result"),
            &["result"],
        )
        .expect("valid metric");
        let restored = IntCounterVec::new(
            Opts::new(
                "chorus_calls_restored_total",
                "Calls recreated from Redis records, by result",
            ),
            &["result"],
        )
        .expect("valid metric");
        let conferences_restored = IntCounterVec::new(
            Opts::new(
                "chorus_conferences_restored_total",
                "Conferences recreated from Redis records, by result",
            ),
            &["result"],
        )
        .expect("valid metric");
        let fenced = IntCounterVec::new(
            Opts::new(
                "chorus_fenced_total",
                "Calls and conferences let go because another instance took them over while this one's heartbeat had lapsed, by kind",
            ),
            &["kind"],
        )
        .expect("valid metric");
        for c in [
            Box::new(up.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(ops.clone()),
            Box::new(restored.clone()),
            Box::new(conferences_restored.clone()),
            Box::new(fenced.clone()),
        ] {
            registry.register(c).expect("redis metrics register once");
        }
        StoreMetrics {
            up,
            ops,
            restored,
            conferences_restored,
            fenced,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
