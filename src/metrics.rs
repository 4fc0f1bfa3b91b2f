//! Prometheus metrics. Workers count in their own cache line with relaxed
//! atomics (no lock, no label lookup on the packet path); the exporter sums
//! the workers' counters when `/metrics` is scraped.

use crate::media::relay::DropReason;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// One worker's counters. Padded so two workers never share a cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct WorkerCounters {
    pub packets_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub packets_relayed: AtomicU64,
    pub bytes_relayed: AtomicU64,
    pub drops: [AtomicU64; DropReason::COUNT],
    pub streams: AtomicU64,
    /// Stream directions forwarded in the kernel (`offload`).
    pub kernel_streams: AtomicU64,
    pub participants: AtomicU64,
    pub late_ticks: AtomicU64,
    pub concealed_frames: AtomicU64,
    pub encodes: AtomicU64,
    /// 1 while the worker's mixer is degraded for overload.
    pub overloaded: AtomicU64,
    /// Conference packets this worker sent for another worker's conference.
    pub offloaded: AtomicU64,
    /// Conference packets this worker read for another worker's conference.
    pub forwarded: AtomicU64,
    /// Smoothed duration of the worker's full-cost mixer ticks (µs), for
    /// admitting conference participants.
    pub tick_us: AtomicU64,
    pub calls: AtomicU64,
    /// Panics caught around one call's or conference's processing.
    pub panics: AtomicU64,
    /// Panics that escaped to the worker loop: its calls ended, it restarted.
    pub restarts: AtomicU64,
    /// 1 once the worker thread has died.
    pub dead: AtomicU64,
    /// Telemetry events dropped because the control plane's queue was full.
    pub events_dropped: AtomicU64,
}

impl WorkerCounters {
    #[inline]
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }
}

const WORKER_METRICS: &[(&str, &str, &[&str])] = &[
    ("chorus_packets_received_total", "Media packets received", &[]),
    ("chorus_bytes_received_total", "Media bytes received", &[]),
    ("chorus_packets_relayed_total", "Media packets relayed", &[]),
    ("chorus_bytes_relayed_total", "Media bytes relayed", &[]),
    ("chorus_streams_active", "Media streams held by workers", &[]),
    ("chorus_worker_calls", "Calls held by workers", &[]),
    ("chorus_conference_participants", "Conference participants", &[]),
    (
        "chorus_mixer_late_ticks_total",
        "Mixer ticks that ran more than one tick late",
        &[],
    ),
    (
        "chorus_mixer_concealed_frames_total",
        "Frames concealed for lost packets",
        &[],
    ),
    (
        "chorus_mixer_encodes_total",
        "Encodes by the mixer (one per distinct mix and codec per tick)",
        &[],
    ),
    (
        "chorus_mixer_offloaded_packets_total",
        "Conference packets sent by a worker other than the conference's own",
        &[],
    ),
    (
        "chorus_mixer_offloaded_receives_total",
        "Conference packets received by a worker other than the conference's own",
        &[],
    ),
    (
        "chorus_packets_dropped_total",
        "Packets received and not relayed, by reason",
        &["reason"],
    ),
    (
        "chorus_worker_panics_total",
        "Panics caught in one call's or conference's processing (each ended that call only)",
        &[],
    ),
    (
        "chorus_worker_restarts_total",
        "Panics that escaped to a worker loop (its calls ended, the worker restarted)",
        &[],
    ),
    ("chorus_workers_dead", "Media worker threads that have died", &[]),
    (KERNEL_PACKETS.0, KERNEL_PACKETS.1, &[]),
    (KERNEL_BYTES.0, KERNEL_BYTES.1, &[]),
    (KERNEL_STREAMS.0, KERNEL_STREAMS.1, &[]),
    (
        "chorus_worker_events_dropped_total",
        "Telemetry events (conference events, RTCP samples, tick times) dropped on a full queue",
        &[],
    ),
];

const KERNEL_PACKETS: (&str, &str) = (
    "chorus_kernel_forwarded_packets_total",
    "Media packets forwarded in the kernel (also in received and relayed)",
);
const KERNEL_BYTES: (&str, &str) = (
    "chorus_kernel_forwarded_bytes_total",
    "Media bytes forwarded in the kernel (also in received and relayed)",
);
const KERNEL_STREAMS: (&str, &str) = ("chorus_kernel_streams", "Stream directions forwarded in the kernel");

/// Collector that sums [`WorkerCounters`] on scrape.
struct WorkerCollector {
    workers: Vec<Arc<WorkerCounters>>,
    /// What the kernel forwarded, counted by the eBPF program itself.
    kernel: Option<Arc<crate::offload::KernelForward>>,
    descs: Vec<Desc>,
}

impl WorkerCollector {
    fn sum(&self, f: impl Fn(&WorkerCounters) -> &AtomicU64) -> u64 {
        self.workers.iter().map(|w| f(w).load(Relaxed)).sum()
    }
}

fn counter(name: &str, help: &str, v: u64) -> MetricFamily {
    let c = IntCounter::new(name, help).expect("static metric name is valid");
    c.inc_by(v);
    c.collect().remove(0)
}

fn gauge(name: &str, help: &str, v: u64) -> MetricFamily {
    let g = IntGauge::new(name, help).expect("static metric name is valid");
    g.set(v as i64);
    g.collect().remove(0)
}

impl Collector for WorkerCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let drops = IntCounterVec::new(
            Opts::new(
                "chorus_packets_dropped_total",
                "Packets received and not relayed, by reason",
            ),
            &["reason"],
        )
        .expect("static metric name is valid");
        for r in DropReason::ALL {
            drops
                .with_label_values(&[r.label()])
                .inc_by(self.sum(|w| &w.drops[r as usize]));
        }
        let (kp, kb) = self.kernel.as_ref().map_or((0, 0), |k| k.totals());
        let mut out = vec![
            counter(
                "chorus_packets_received_total",
                "Media packets received",
                self.sum(|w| &w.packets_in) + kp,
            ),
            counter(
                "chorus_bytes_received_total",
                "Media bytes received",
                self.sum(|w| &w.bytes_in) + kb,
            ),
            counter(
                "chorus_packets_relayed_total",
                "Media packets relayed",
                self.sum(|w| &w.packets_relayed) + kp,
            ),
            counter(
                "chorus_bytes_relayed_total",
                "Media bytes relayed",
                self.sum(|w| &w.bytes_relayed) + kb,
            ),
            counter(KERNEL_PACKETS.0, KERNEL_PACKETS.1, kp),
            counter(KERNEL_BYTES.0, KERNEL_BYTES.1, kb),
            gauge(KERNEL_STREAMS.0, KERNEL_STREAMS.1, self.sum(|w| &w.kernel_streams)),
            gauge(
                "chorus_streams_active",
                "Media streams held by workers",
                self.sum(|w| &w.streams),
            ),
            gauge("chorus_worker_calls", "Calls held by workers", self.sum(|w| &w.calls)),
            gauge(
                "chorus_conference_participants",
                "Conference participants",
                self.sum(|w| &w.participants),
            ),
            counter(
                "chorus_mixer_late_ticks_total",
                "Mixer ticks that ran more than one tick late",
                self.sum(|w| &w.late_ticks),
            ),
            counter(
                "chorus_mixer_concealed_frames_total",
                "Frames concealed for lost packets",
                self.sum(|w| &w.concealed_frames),
            ),
            gauge(
                "chorus_mixer_overloaded_workers",
                "Workers whose mixer is degraded for overload",
                self.sum(|w| &w.overloaded),
            ),
            counter(
                "chorus_mixer_encodes_total",
                "Encodes by the mixer (one per distinct mix and codec per tick)",
                self.sum(|w| &w.encodes),
            ),
            counter(
                "chorus_mixer_offloaded_packets_total",
                "Conference packets sent by a worker other than the conference's own",
                self.sum(|w| &w.offloaded),
            ),
            counter(
                "chorus_mixer_offloaded_receives_total",
                "Conference packets received by a worker other than the conference's own",
                self.sum(|w| &w.forwarded),
            ),
            counter(
                "chorus_worker_panics_total",
                "Panics caught in one call's or conference's processing (each ended that call only)",
                self.sum(|w| &w.panics),
            ),
            counter(
                "chorus_worker_restarts_total",
                "Panics that escaped to a worker loop (its calls ended, the worker restarted)",
                self.sum(|w| &w.restarts),
            ),
            gauge(
                "chorus_workers_dead",
                "Media worker threads that have died",
                self.sum(|w| &w.dead),
            ),
            counter(
                "chorus_worker_events_dropped_total",
                "Telemetry events (conference events, RTCP samples, tick times) dropped on a full queue",
                self.sum(|w| &w.events_dropped),
            ),
        ];
        out.extend(drops.collect());
        out
    }
}

/// Control-plane metrics and the registry they live in.
pub struct Metrics {
    pub registry: Registry,
    pub calls_active: IntGauge,
    pub calls_timed_out: IntCounter,
    pub ports_free: IntGaugeVec,
    pub ports_parked: IntGaugeVec,
    pub requests: IntCounterVec,
    pub request_seconds: HistogramVec,
    pub call_seconds: prometheus::Histogram,
    pub conferences_active: IntGauge,
    pub mixer_tick_seconds: prometheus::Histogram,
    pub conference_rtt_seconds: prometheus::Histogram,
    pub conference_reported_loss: prometheus::Histogram,
    /// Callback POSTs by result: sent, refused, failed, dropped (queue full).
    pub callbacks: IntCounterVec,
    /// Requests refused by a limit, by limit.
    pub limited: IntCounterVec,
    /// Commands forwarded to the instance owning their call, by result.
    pub forwarded: IntCounterVec,
}

impl Metrics {
    /// `mixer_tick_seconds` is made beforehand ([`tick_histogram`]): the
    /// workers observe it themselves, each tick, without allocating.
    pub fn new(
        workers: Vec<Arc<WorkerCounters>>,
        kernel: Option<Arc<crate::offload::KernelForward>>,
        mixer_tick_seconds: prometheus::Histogram,
    ) -> Self {
        let registry = Registry::new();
        let r = &registry;
        let descs = WORKER_METRICS
            .iter()
            .map(|(name, help, labels)| {
                Desc::new(
                    name.to_string(),
                    help.to_string(),
                    labels.iter().map(|l| l.to_string()).collect(),
                    Default::default(),
                )
                .expect("static metric name is valid")
            })
            .collect();
        registry
            .register(Box::new(WorkerCollector { workers, kernel, descs }))
            .expect("worker metrics register once");
        Metrics {
            calls_active: register(r, IntGauge::new("chorus_calls_active", "Calls being relayed")),
            calls_timed_out: register(
                r,
                IntCounter::new("chorus_calls_timed_out_total", "Calls torn down for lack of media"),
            ),
            ports_free: register(
                r,
                IntGaugeVec::new(Opts::new("chorus_ports_free", "Free media ports"), &["interface"]),
            ),
            ports_parked: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "chorus_ports_parked",
                        "Free media ports whose socket stays bound for the next call",
                    ),
                    &["interface"],
                ),
            ),
            requests: counters(
                r,
                "chorus_control_requests_total",
                "Control requests by endpoint and result",
                &["endpoint", "result"],
            ),
            request_seconds: register(
                r,
                HistogramVec::new(
                    HistogramOpts::new("chorus_control_request_seconds", "Control request latency").buckets(vec![
                        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
                    ]),
                    &["endpoint"],
                ),
            ),
            call_seconds: histogram(
                r,
                "chorus_call_duration_seconds",
                "Duration of ended calls",
                vec![1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0],
            ),
            conferences_active: register(r, IntGauge::new("chorus_conferences_active", "Conferences being mixed")),
            mixer_tick_seconds: register(r, Ok(mixer_tick_seconds)),
            conference_rtt_seconds: histogram(
                r,
                "chorus_conference_rtt_seconds",
                "Round-trip times from participants' RTCP reports",
                vec![0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0],
            ),
            conference_reported_loss: histogram(
                r,
                "chorus_conference_reported_loss_ratio",
                "Fraction of chorus's packets lost, as participants report it",
                vec![0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5],
            ),
            callbacks: counters(
                r,
                "chorus_callbacks_total",
                "Callback POSTs by result (dropped: queue full)",
                &["result"],
            ),
            limited: counters(
                r,
                "chorus_limit_refusals_total",
                "Requests refused by a configured limit",
                &["limit"],
            ),
            forwarded: counters(
                r,
                "chorus_forwarded_requests_total",
                "Commands forwarded to the instance that owns their call, by result",
                &["result"],
            ),
            registry: registry.clone(),
        }
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Registers `metric` (built from static, valid names) and hands it back.
pub(crate) fn register<C: Collector + Clone + 'static>(registry: &Registry, metric: prometheus::Result<C>) -> C {
    let metric = metric.expect("static metric names and labels are valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

pub(crate) fn counters(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(registry, IntCounterVec::new(Opts::new(name, help), labels))
}

/// The mixer's tick histogram, for the workers and then [`Metrics::new`].
pub fn tick_histogram() -> prometheus::Histogram {
    let opts = HistogramOpts::new(
        "chorus_mixer_tick_seconds",
        "Time a worker spends on its conferences' ticks, per 20 ms",
    );
    let buckets = vec![0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.05];
    prometheus::Histogram::with_opts(opts.buckets(buckets)).expect("static histogram options are valid")
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> prometheus::Histogram {
    register(
        registry,
        prometheus::Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)),
    )
}
