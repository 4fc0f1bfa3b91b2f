//! Media workers: one OS thread each, owning its calls, their sockets and
//! their state. The control plane talks to a worker only by [`Command`]
//! (crossbeam channel + a mio waker) and hears back on a oneshot; workers
//! report calls they end themselves (media timeout) as [`WorkerEvent`]s.

mod clock;
pub mod ports;
pub mod recv_pool;
mod runner;
pub mod send_pool;
mod uring;

use crate::media::relay::{PeerSpec, SideReport, StreamKind};
use crate::media::srtp::Key;
use crate::metrics::WorkerCounters;
use serde::Serialize;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Why a worker could not carry out a command. Each is a bug or a
/// resource problem on this host, never the caller's input: the control
/// plane answers them as internal errors (HTTP 500, ng error).
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The worker's thread has died or its channel closed.
    #[error("media worker has stopped")]
    Stopped,
    /// The worker could not be woken to read the command.
    #[error("cannot wake media worker: {0}")]
    Wake(String),
    /// The worker dropped the command without answering (it panicked on it).
    #[error("media worker dropped the command")]
    Dropped,
    /// A socket the command names was not handed over with it.
    #[error("no socket bound for {0}")]
    NoSocket(SocketAddr),
    /// epoll refused to watch a socket (out of memory or descriptors).
    #[error("cannot watch socket {addr}: {error}")]
    Watch { addr: SocketAddr, error: String },
    /// The conference is not (or no longer) on this worker.
    #[error("no such conference on this worker")]
    NoConference,
    /// The participant's codec could not be set up.
    #[error("codec: {0}")]
    Codec(String),
    /// The call's leg is no longer on its worker.
    #[error("the call's worker no longer has the leg")]
    NoLeg,
    /// libsrtp refused a key.
    #[error("SRTP: {0}")]
    Srtp(String),
    /// The call has no audio stream, or the conference no such participant.
    #[error("{0}")]
    NoTapPoint(String),
    /// The call's state does not allow what was asked (a conflict).
    #[error("{0}")]
    Refused(String),
}

impl From<WorkerError> for crate::error::Error {
    fn from(e: WorkerError) -> Self {
        match e {
            WorkerError::NoTapPoint(what) => return crate::error::Error::NotFound(what),
            WorkerError::Refused(why) => return crate::error::Error::Conflict(why),
            _ => {}
        }
        crate::error::Error::Internal(e.to_string())
    }
}

/// The worker-side identity of a call (control plane assigns it, never reused).
pub type CallKey = u64;

/// One side of one stream, as the worker should hold it.
#[derive(Debug)]
pub struct SideSpec {
    pub rtp: SocketAddr,
    pub rtcp: Option<SocketAddr>,
    pub peer: PeerSpec,
    /// Forget the latched source and learn again (new SDP from this leg).
    pub relearn: bool,
    /// SRTP keys towards this leg (its own, chorus's) when chorus holds them.
    pub srtp: Option<(Key, Key)>,
    /// ICE-lite and DTLS-SRTP towards this leg (a browser); the keys come
    /// from the handshake.
    pub webrtc: Option<WebRtcSpec>,
    /// The codec this leg sends and the one the other leg takes, when
    /// chorus transcodes between them.
    pub transcode: Option<(crate::media::codec::CodecSpec, crate::media::codec::CodecSpec)>,
    /// This side rides another stream's transport (BUNDLE): it opens no
    /// socket (`rtp` is the owner's) and has no SRTP or WebRTC of its own.
    pub bundle: Option<Bundled>,
}

/// A side sharing another stream's socket, ICE, DTLS and SRTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bundled {
    /// The stream whose transport it uses.
    pub owner: usize,
    /// The payload types that mark its RTP there (bit n for type n).
    pub pts: u128,
}

/// How a conference participant's media is protected.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum MemberTransport {
    #[default]
    Plain,
    /// SDES-SRTP: the participant's key and chorus's.
    Sdes { theirs: Key, ours: Key },
    /// A browser: ICE-lite and DTLS-SRTP.
    Webrtc(WebRtcSpec),
}

/// What the worker needs to be a browser's ICE-lite peer and DTLS server.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WebRtcSpec {
    pub ufrag: String,
    pub pwd: String,
    pub remote_ufrag: Option<String>,
    pub remote_fingerprint: crate::media::dtls::Fingerprint,
    #[serde(default = "passive")]
    pub role: crate::media::dtls::Role,
}

fn passive() -> crate::media::dtls::Role {
    crate::media::dtls::Role::Server
}

impl WebRtcSpec {
    /// Once the browser's SDP named its fingerprint.
    pub fn of(w: &crate::session::WebRtcSide) -> Option<WebRtcSpec> {
        Some(WebRtcSpec {
            ufrag: w.ufrag.clone(),
            pwd: w.pwd.clone(),
            remote_ufrag: w.remote_ufrag.clone(),
            remote_fingerprint: w.remote_fingerprint.clone()?,
            role: w.role,
        })
    }
}

#[derive(Debug)]
pub struct StreamSpec {
    pub kind: StreamKind,
    /// `sides[i]`: chorus's ports facing leg `i`, if allocated.
    pub sides: [Option<SideSpec>; 2],
}

pub enum Command {
    /// Create or update a call to match `streams`. Sockets of ports the call
    /// does not hold yet come in `sockets`; held sockets no longer named are closed.
    Update {
        key: CallKey,
        call_id: Arc<str>,
        streams: Vec<StreamSpec>,
        sockets: Vec<Bound>,
        reply: oneshot::Sender<Result<(), WorkerError>>,
    },
    /// End the call: its final report, and its sockets, still bound.
    Remove {
        key: CallKey,
        reply: oneshot::Sender<Option<Removed>>,
    },
    Query {
        key: CallKey,
        reply: oneshot::Sender<Option<CallReport>>,
    },
    /// Takes one side of one stream out of a call (to move it into a
    /// conference): its sockets, what its leg said, and where it latched.
    Detach {
        key: CallKey,
        stream: usize,
        side: usize,
        reply: oneshot::Sender<Option<Detached>>,
    },
    /// Starts handing the audio of leg `leg` of the call's stream `stream`
    /// to an application; `codecs` decode what either leg sends.
    Tap {
        key: CallKey,
        stream: usize,
        leg: usize,
        codecs: Vec<crate::media::codec::CodecSpec>,
        spec: TapSpec,
        reply: oneshot::Sender<Result<(), WorkerError>>,
    },
    /// Sends key presses (RFC 4733 event `codes`) to leg `leg` of the call's
    /// stream `stream`, riding what is relayed to it.
    Dtmf {
        key: CallKey,
        stream: usize,
        leg: usize,
        codes: Vec<u8>,
        duration_ms: u32,
        volume: u8,
        /// The hearing leg's telephone-event payload type and clock.
        event: (u8, u32),
        reply: oneshot::Sender<Result<(), WorkerError>>,
    },
    /// Stops tap `id` of call or conference `key`; false if there is none.
    Untap {
        key: CallKey,
        id: u64,
        reply: oneshot::Sender<bool>,
    },
    Conference(ConfCommand),
    /// Test-only: the call or conference `key` panics on its next packet or
    /// tick, as a bug in its processing would. False if the worker has no `key`.
    #[cfg(feature = "test-hooks")]
    ArmPanic {
        key: CallKey,
        reply: oneshot::Sender<bool>,
    },
    /// Test-only: the worker loop itself panics, outside any call.
    #[cfg(feature = "test-hooks")]
    PanicLoop,
    /// Test-only: the worker thread dies (its recovery panics too).
    #[cfg(feature = "test-hooks")]
    KillThread,
    /// Test-only: every mixer tick takes this much longer (a stand-in for
    /// a load the test machine cannot make), to drive overload and admission.
    #[cfg(feature = "test-hooks")]
    SlowTicks(std::time::Duration),
    Shutdown,
}

impl Command {
    /// The call or conference the command is for; `None` for `Shutdown`.
    fn key(&self) -> Option<CallKey> {
        Some(match self {
            Command::Update { key, .. }
            | Command::Remove { key, .. }
            | Command::Query { key, .. }
            | Command::Detach { key, .. }
            | Command::Tap { key, .. }
            | Command::Dtmf { key, .. }
            | Command::Untap { key, .. } => *key,
            #[cfg(feature = "test-hooks")]
            Command::ArmPanic { key, .. } => *key,
            Command::Conference(c) => match c {
                ConfCommand::Create { key, .. }
                | ConfCommand::Join { key, .. }
                | ConfCommand::Leave { key, .. }
                | ConfCommand::Control { key, .. }
                | ConfCommand::Query { key, .. }
                | ConfCommand::Delete { key, .. }
                | ConfCommand::Tap { key, .. } => *key,
            },
            #[cfg(feature = "test-hooks")]
            Command::PanicLoop | Command::KillThread | Command::SlowTicks(_) => return Some(0),
            Command::Shutdown => return None,
        })
    }
}

/// A tap as the worker starts it (see `media::tap`).
pub struct TapSpec {
    pub id: u64,
    /// Inbound (what the party says), outbound (what it hears).
    pub tracks: [bool; 2],
    /// Where the application's audio goes, if anywhere.
    pub back: crate::media::conference::Back,
    /// The rate the stream wants: Opus is decoded at it.
    pub rate: u32,
    pub tap: Arc<crate::media::tap::Tap>,
}

/// A media socket and the address it was bound to: the worker need not
/// ask the kernel (`getsockname`, four per call).
pub type Bound = (SocketAddr, UdpSocket);

/// A call's side, taken out of its worker.
#[derive(Debug)]
pub struct Detached {
    pub sockets: Vec<Bound>,
    pub peer: Box<PeerSpec>,
    pub latched: Option<SocketAddr>,
    /// That was the call's last socket: the worker has ended the call.
    pub call_emptied: bool,
}

/// Commands for conferences hosted by a worker.
pub enum ConfCommand {
    Create {
        key: CallKey,
        conf_id: Arc<str>,
        speakers: crate::media::mixer::speakers::SpeakerConfig,
        mix_rate: u32,
        reply: oneshot::Sender<()>,
    },
    Join {
        key: CallKey,
        pid: u32,
        spec: crate::media::codec::CodecSpec,
        /// Boxed: its clock-rate table is 512 bytes.
        peer: Box<PeerSpec>,
        rtp: SocketAddr,
        rtcp: Option<SocketAddr>,
        sockets: Vec<Bound>,
        /// Where the participant already latched (moved from a call).
        latched: Option<SocketAddr>,
        transport: Box<MemberTransport>,
        reply: oneshot::Sender<Result<(), WorkerError>>,
    },
    /// Replies with the events the leave made (a speaker's
    /// `stopped_speaking`), for the control plane to tell before `left`.
    Leave {
        key: CallKey,
        pid: u32,
        reply: oneshot::Sender<Vec<crate::media::conference::ConfEvent>>,
    },
    Control {
        key: CallKey,
        pid: u32,
        controls: crate::media::conference::Controls,
        reply: oneshot::Sender<bool>,
    },
    Query {
        key: CallKey,
        reply: oneshot::Sender<Option<ConfReport>>,
    },
    Delete {
        key: CallKey,
        reply: oneshot::Sender<bool>,
    },
    /// Starts a tap on the mix or a participant (stopped by `Command::Untap`).
    Tap {
        key: CallKey,
        point: crate::media::conference::TapPoint,
        spec: TapSpec,
        reply: oneshot::Sender<Result<(), WorkerError>>,
    },
}

/// A conference as its worker sees it.
#[derive(Debug, Clone, Serialize)]
pub struct ConfReport {
    pub participants: Vec<crate::media::conference::ParticipantReport>,
    pub encodes_last_tick: usize,
    pub late_ticks: u64,
}

/// Telemetry events (tick durations, RTCP samples, conference events) a
/// worker may queue before it drops them: the control plane drains them
/// continuously, so this fills only if it stalls or a sender floods.
pub const TELEMETRY_QUEUE: usize = 4096;

/// Where a worker reports. Lifecycle events (a call or conference ended)
/// are never dropped, and there is at most one per call; telemetry goes on
/// a bounded queue and is dropped and counted when that is full, so the
/// media path never waits and memory never grows with a flood.
#[derive(Clone)]
pub struct EventSink {
    lifecycle: mpsc::UnboundedSender<WorkerEvent>,
    telemetry: mpsc::Sender<WorkerEvent>,
    counters: Arc<WorkerCounters>,
}

/// The control plane's end of every worker's [`EventSink`].
pub struct EventSource {
    pub lifecycle: mpsc::UnboundedReceiver<WorkerEvent>,
    pub telemetry: mpsc::Receiver<WorkerEvent>,
}

/// A sink for workers and its source; each worker's sink gets its counters with [`EventSink::for_worker`].
pub fn event_channel() -> (EventSink, EventSource) {
    let (lt, lr) = mpsc::unbounded_channel();
    let (tt, tr) = mpsc::channel(TELEMETRY_QUEUE);
    (
        EventSink {
            lifecycle: lt,
            telemetry: tt,
            counters: Arc::default(),
        },
        EventSource {
            lifecycle: lr,
            telemetry: tr,
        },
    )
}

impl EventSink {
    fn for_worker(&self, counters: Arc<WorkerCounters>) -> EventSink {
        EventSink {
            counters,
            ..self.clone()
        }
    }

    pub fn send(&self, ev: WorkerEvent) {
        match ev {
            WorkerEvent::CallFailed { .. }
            | WorkerEvent::ConferenceFailed { .. }
            | WorkerEvent::MediaTimeout { .. } => {
                let _ = self.lifecycle.send(ev);
            }
            _ => {
                if self.telemetry.try_send(ev).is_err() {
                    WorkerCounters::add(&self.counters.events_dropped, 1);
                }
            }
        }
    }
}

#[derive(Debug)]
pub enum WorkerEvent {
    /// A key press (RFC 4733) on leg `leg` (0: the offerer) of a relayed call.
    Dtmf {
        key: CallKey,
        call_id: Arc<str>,
        leg: usize,
        digit: char,
        duration_ms: Option<u32>,
    },
    /// Round-trip times (s) and loss fractions from conference participants' RTCP.
    RtcpSamples { rtt: Vec<f64>, loss: Vec<f64> },
    /// Speaking changes and DTMF digits from a conference's last tick.
    Conference {
        key: CallKey,
        events: Vec<crate::media::conference::ConfEvent>,
    },
    /// A panic in the call's processing (a bug): the worker has closed it.
    CallFailed {
        key: CallKey,
        call_id: Arc<str>,
        reason: String,
    },
    /// A panic in the conference's processing: the worker has closed it.
    ConferenceFailed { key: CallKey, reason: String },
    /// No media for the configured time: the worker has ended the call
    /// (its sockets come along, still bound, to be parked).
    MediaTimeout {
        key: CallKey,
        call_id: Arc<str>,
        removed: Removed,
    },
}

/// What a removed call leaves: its final report, and its sockets, off the
/// worker but still bound, for the control plane to park for the next call.
#[derive(Debug)]
pub struct Removed {
    pub report: CallReport,
    pub sockets: Vec<Bound>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CallReport {
    pub streams: Vec<StreamReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StreamReport {
    pub kind: StreamKind,
    pub sides: [SideReportWithPorts; 2],
}

#[derive(Debug, Clone, Serialize)]
pub struct SideReportWithPorts {
    pub local_rtp: Option<SocketAddr>,
    pub local_rtcp: Option<SocketAddr>,
    #[serde(flatten)]
    pub side: SideReport,
}

/// The control plane's handle on one worker.
#[derive(Clone)]
pub struct WorkerHandle {
    tx: crossbeam_channel::Sender<Command>,
    waker: Arc<mio::Waker>,
    /// A wake-up for commands is on its way (see `send`).
    wake_pending: Arc<std::sync::atomic::AtomicBool>,
    pub counters: Arc<WorkerCounters>,
}

impl WorkerHandle {
    /// False once the worker's thread has died (see [`spawn`]).
    pub fn alive(&self) -> bool {
        self.counters.dead.load(std::sync::atomic::Ordering::Relaxed) == 0
    }

    /// Queues a command and wakes the worker. Fails only if the worker died.
    /// Commands sent while a wake-up is on its way ride it: the worker
    /// clears the flag before it drains the queue, so none is left behind,
    /// and a burst of commands costs one eventfd write and one wake-up.
    pub fn send(&self, cmd: Command) -> Result<(), WorkerError> {
        use std::sync::atomic::Ordering::AcqRel;
        self.tx.send(cmd).map_err(|_| WorkerError::Stopped)?;
        if self.wake_pending.swap(true, AcqRel) {
            return Ok(());
        }
        self.waker.wake().map_err(|e| WorkerError::Wake(e.to_string()))
    }
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub media_timeout: Duration,
    /// The certificate for DTLS handshakes with browsers.
    pub dtls: Arc<crate::media::dtls::Identity>,
    /// `chorus_mixer_tick_seconds`, observed by the worker each tick.
    pub tick_seconds: prometheus::Histogram,
    /// This worker's number, and every worker's send lane.
    pub index: usize,
    pub send_pool: Arc<send_pool::SendPool>,
    /// Every worker's inbound lane, for receives read elsewhere.
    pub recv_pool: Arc<recv_pool::RecvPool>,
    /// Conferences this large hand their sends, and their newer
    /// participants' receives, to other workers (0: never).
    pub offload_min: usize,
    /// The kernel forwarder, when it runs.
    pub kernel: Option<Arc<crate::offload::KernelForward>>,
    /// The TOS byte of media sockets (DSCP), for what the kernel forwards.
    pub tos: u8,
    /// Read and send call sockets through io_uring (`--io uring`).
    pub io_uring: bool,
}

/// Starts worker `index` on its own thread, under a supervisor: a panic that
/// escapes the per-call isolation (a bug in the worker loop itself) ends the
/// calls that worker held and restarts its loop on the same command channel,
/// so the control plane's handle stays valid. If the thread ends any other
/// way than by `Shutdown`, the worker is marked dead: health checks fail and
/// no call is placed on it.
pub fn spawn(
    index: usize,
    config: WorkerConfig,
    events: &EventSink,
) -> std::io::Result<(WorkerHandle, std::thread::JoinHandle<()>)> {
    let poll = mio::Poll::new()?;
    let waker = Arc::new(mio::Waker::new(poll.registry(), runner::WAKER)?);
    config.send_pool.register(index, waker.clone());
    config.recv_pool.register(index, waker.clone());
    let (tx, rx) = crossbeam_channel::unbounded();
    let counters = Arc::new(WorkerCounters::default());
    let events = events.for_worker(counters.clone());
    let c = counters.clone();
    let wake_pending = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pending = wake_pending.clone();
    let thread = std::thread::Builder::new()
        .name(format!("chorus-media-{index}"))
        .spawn(move || {
            let mut dead = DeadUnlessDisarmed(Some(c.clone()));
            let mut runner = runner::Runner::new(poll, (rx, pending), events, c.clone(), config);
            loop {
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runner.run())) {
                    Ok(()) => break,
                    Err(p) => {
                        let message = runner::panic_message(&*p);
                        WorkerCounters::add(&c.restarts, 1);
                        tracing::error!(worker = index, panic = %message, "media worker loop panicked (a bug): its calls end, the worker restarts");
                        runner.abandon_all(&message);
                    }
                }
            }
            dead.0 = None;
        })?;
    let handle = WorkerHandle {
        tx,
        waker,
        wake_pending,
        counters,
    };
    Ok((handle, thread))
}

/// Marks the worker dead when dropped armed: the thread is unwinding out.
struct DeadUnlessDisarmed(Option<Arc<WorkerCounters>>);

impl Drop for DeadUnlessDisarmed {
    fn drop(&mut self) {
        if let Some(c) = &self.0 {
            c.dead.store(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!("a media worker thread has died; health checks now fail");
        }
    }
}
