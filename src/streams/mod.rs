//! Live audio to applications over WebSocket: chorus connects to the
//! application's URL (`ws://` or `wss://`) and streams a call leg, a
//! conference participant or a conference mix in Twilio Media Streams JSON
//! or raw PCM; what the application sends back is played into the
//! conference. One tokio task per stream does the encoding and the I/O
//! (`session`); the media worker only fills the tap's ring (`media::tap`).

pub(crate) mod backlog;
pub mod format;
mod options;
pub mod playback;
mod recording;
mod session;

pub use options::{Checked, RecordOptions, StartOptions, Target};

use crate::media::tap::Tap;
use crate::metrics::{counters, register};
use crate::store::record::TapRecord;
use format::Format;
use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGaugeVec, Opts, Registry as Prom};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::mpsc;

/// Stream events (connected, disconnected, dropped, stopped) waiting for
/// the control plane at most; more are dropped (and counted).
pub const EVENT_QUEUE: usize = 1024;

/// Whose audio a stream carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Call(String),
    Conference(String),
}

impl Owner {
    /// "call `x`", "conference `y`", for messages.
    pub fn describe(&self) -> String {
        match self {
            Owner::Call(id) => format!("call `{id}`"),
            Owner::Conference(id) => format!("conference `{id}`"),
        }
    }
}

/// Where a tap's audio goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Sink {
    /// An application's WebSocket.
    WebSocket { url: String, format: Format },
    /// A WAV file and the metadata JSON beside it (see `recording`).
    Recording {
        file: std::path::PathBuf,
        metadata: std::path::PathBuf,
    },
    /// Not a sink: a file or a tone played into a conference (see `playback`).
    Playback(playback::Source),
}

/// What kind of tap an entry is, for listing and stopping the right ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Stream,
    Recording,
    Playback,
}

impl Sink {
    pub fn kind(&self) -> Kind {
        match self {
            Sink::WebSocket { .. } => Kind::Stream,
            Sink::Recording { .. } => Kind::Recording,
            Sink::Playback(_) => Kind::Playback,
        }
    }

    pub fn is_recording(&self) -> bool {
        self.kind() == Kind::Recording
    }
}

/// A running stream or recording, as the control plane lists and stops it.
pub struct Entry {
    /// The tap's id on its worker.
    pub tap_id: u64,
    pub owner: Owner,
    pub worker: usize,
    pub key: u64,
    pub target: Target,
    pub sink: Sink,
    pub started: SystemTime,
    pub tap: Arc<Tap>,
    /// How a taker starts it again (streams and recordings; none for playbacks).
    pub resume: Option<TapRecord>,
}

impl Entry {
    pub fn to_json(&self, id: &str) -> Value {
        let mut v = serde_json::json!({
            "target": self.target,
            "started": crate::store::record::unix_seconds(self.started),
            "frames_dropped": self.tap.dropped.load(Relaxed),
        });
        match &self.sink {
            Sink::WebSocket { url, format } => {
                v["stream_id"] = serde_json::json!(id);
                v["url"] = serde_json::json!(url);
                v["format"] = serde_json::json!(format);
            }
            Sink::Recording { file, metadata } => {
                v["recording_id"] = serde_json::json!(id);
                v["file"] = serde_json::json!(file);
                v["metadata"] = serde_json::json!(metadata);
                v["format"] = serde_json::json!(recording::format_of(file));
                v["paused"] = serde_json::json!(self.tap.is_paused());
            }
            Sink::Playback(src) => {
                v["playback_id"] = serde_json::json!(id);
                v["source"] = serde_json::json!(src.name);
                v["loop"] = serde_json::json!(src.times == 0);
                v["times"] = serde_json::json!(src.times);
            }
        }
        v
    }
}

/// Something a stream's task reports, for callbacks and conference events.
#[derive(Debug)]
pub struct StreamEvent {
    pub owner: Owner,
    pub body: Value,
    /// Not for applications: a tap has left the registry, so its owner's
    /// record is written again without it (`body` is null).
    pub ended: bool,
}

pub struct StreamMetrics {
    pub active: IntGaugeVec,
    pub frames: IntCounterVec,
    pub connections: IntCounterVec,
    pub from_app: IntCounterVec,
    /// From a packet's arrival (or the mix) to its frame's WebSocket write.
    pub delay: Histogram,
    pub recordings: prometheus::IntGauge,
    pub playbacks: prometheus::IntGauge,
    pub recording_results: IntCounterVec,
}

impl StreamMetrics {
    fn new(r: &Prom) -> Self {
        let delay = HistogramOpts::new(
            "chorus_audio_stream_delay_seconds",
            "From an RTP packet's arrival (a conference: its tick) to its frame written to the WebSocket",
        )
        .buckets(vec![
            0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5,
        ]);
        StreamMetrics {
            active: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "chorus_audio_streams_active",
                        "WebSocket audio streams running, by what they tap",
                    ),
                    &["target"],
                ),
            ),
            frames: counters(
                r,
                "chorus_audio_stream_frames_total",
                "20 ms frames to applications, sent or dropped (application behind, or disconnected)",
                &["target", "outcome"],
            ),
            connections: counters(
                r,
                "chorus_audio_stream_connections_total",
                "WebSocket connections to applications: connected, failed, lost",
                &["outcome"],
            ),
            from_app: counters(
                r,
                "chorus_audio_stream_app_messages_total",
                "Messages from applications: audio, mark, clear, ignored, invalid; overflow counts audio let go",
                &["kind"],
            ),
            delay: register(r, Histogram::with_opts(delay)),
            recordings: register(
                r,
                prometheus::IntGauge::new("chorus_recordings_active", "Recordings being written"),
            ),
            playbacks: register(
                r,
                prometheus::IntGauge::new("chorus_playbacks_active", "Files and tones playing into conferences"),
            ),
            recording_results: counters(
                r,
                "chorus_recordings_total",
                "Recordings ended: completed, or failed (a write error such as a full disk)",
                &["result"],
            ),
        }
    }
}

/// Every stream of this instance.
pub struct Registry {
    pub map: Mutex<HashMap<String, Entry>>,
    next_tap: AtomicU64,
    events: mpsc::Sender<StreamEvent>,
    tls: Arc<rustls::ClientConfig>,
    pub metrics: StreamMetrics,
    /// Streams at most, and per call or conference.
    pub max: usize,
    pub max_per_owner: usize,
}

impl Registry {
    /// The registry and the events its streams report.
    pub fn new(
        prom: &Prom,
        ca_file: Option<&str>,
        max: usize,
    ) -> Result<(Arc<Registry>, mpsc::Receiver<StreamEvent>), String> {
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let reg = Registry {
            map: Mutex::new(HashMap::new()),
            next_tap: AtomicU64::new(1),
            events: tx,
            tls: session::tls_config(ca_file)?,
            metrics: StreamMetrics::new(prom),
            max,
            max_per_owner: 4,
        };
        Ok((Arc::new(reg), rx))
    }

    pub fn next_tap_id(&self) -> u64 {
        self.next_tap.fetch_add(1, Relaxed)
    }

    /// What a taker needs to start `owner`'s streams and recordings again.
    pub fn records(&self, owner: &Owner) -> Vec<TapRecord> {
        let map = crate::control::lock(&self.map);
        let mut v: Vec<(u64, TapRecord)> = map
            .values()
            .filter(|e| &e.owner == owner)
            .filter_map(|e| Some((e.tap_id, e.resume.clone()?)))
            .collect();
        v.sort_by_key(|(id, _)| *id);
        v.into_iter().map(|(_, r)| r).collect()
    }

    /// The ids of `owner`'s streams, recordings or playbacks.
    pub fn ids(&self, owner: &Owner, kind: Kind) -> Vec<String> {
        let map = crate::control::lock(&self.map);
        map.iter()
            .filter(|(_, e)| &e.owner == owner && e.sink.kind() == kind)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// A new id, Twilio-shaped: `prefix` (`MZ` a stream, `RE` a
    /// recording) and 32 hex digits. Recordings' files are named by it.
    pub fn new_id(prefix: &str) -> String {
        let mut b = [0u8; 16];
        let _ = openssl::rand::rand_bytes(&mut b);
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        format!("{prefix}{hex}")
    }

    /// Streams, recordings or playbacks of `owner`, as the API lists them.
    pub fn list(&self, owner: &Owner, kind: Kind) -> Vec<Value> {
        let map = crate::control::lock(&self.map);
        let mut v: Vec<(&String, &Entry)> = map
            .iter()
            .filter(|(_, e)| &e.owner == owner && e.sink.kind() == kind)
            .collect();
        v.sort_by_key(|(_, e)| e.tap_id);
        v.into_iter().map(|(sid, e)| e.to_json(sid)).collect()
    }

    /// Runs stream `sid` (already in the map) until its tap closes.
    pub fn launch(self: &Arc<Self>, sid: String, opts: options::Checked, meta: format::Meta) {
        let reg = self.clone();
        let Some((tap, owner, target, sink)) = crate::control::lock(&self.map)
            .get(&sid)
            .map(|e| (e.tap.clone(), e.owner.clone(), e.target.label(), e.sink.clone()))
        else {
            return;
        };
        let gauge = match sink {
            Sink::WebSocket { .. } => self.metrics.active.with_label_values(&[target]),
            Sink::Recording { .. } => self.metrics.recordings.clone(),
            Sink::Playback(_) => self.metrics.playbacks.clone(),
        };
        gauge.inc();
        tokio::spawn(async move {
            match sink {
                Sink::WebSocket { .. } => session::run(&reg, &sid, &owner, tap, opts, meta, target).await,
                Sink::Recording { file, metadata } => {
                    recording::run(&reg, &sid, &owner, tap, meta, (&file, &metadata)).await
                }
                Sink::Playback(src) => playback::run(&reg, &sid, &owner, tap, src).await,
            }
            gauge.dec();
            crate::control::lock(&reg.map).remove(&sid);
            reg.send(StreamEvent {
                owner,
                body: Value::Null,
                ended: true,
            });
        });
    }

    fn report(&self, owner: &Owner, body: Value) {
        self.send(StreamEvent {
            owner: owner.clone(),
            body,
            ended: false,
        });
    }

    fn send(&self, ev: StreamEvent) {
        if self.events.try_send(ev).is_err() {
            tracing::warn!("stream event queue full: event dropped");
        }
    }
}
