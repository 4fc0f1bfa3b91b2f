//! A worker's event loop: sockets, commands, housekeeping.
//!
//! The packet path (`service` -> `relay_one` -> `call_path`) reads into one
//! preallocated buffer, indexes two slabs and sends: no allocation, no lock.
//! A socket is read at most `BUDGET_PER_SOCKET` times per turn and then
//! queued behind the others, so a flood on one port cannot starve other
//! ports or commands.

use super::{
    clock, CallKey, CallReport, Command, SideReportWithPorts, StreamReport, StreamSpec, WorkerConfig, WorkerError,
    WorkerEvent,
};
use crate::media::relay::RelayStream;
use crate::media::srtp::{self, SrtpSide};
use crate::media::transcode::Transcoder;
use crate::metrics::WorkerCounters;
use mio::net::UdpSocket;
use mio::{Events, Poll, Token};
use slab::Slab;
use std::collections::{HashMap, VecDeque};
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(super) const WAKER: Token = Token(usize::MAX);
/// Reads per socket per loop turn before other sockets get their go.
const BUDGET_PER_SOCKET: usize = 64;
/// How often media timeouts and gauges are checked.
const HOUSEKEEPING: Duration = Duration::from_millis(250);
/// Large enough for any UDP datagram: nothing is ever truncated. The
/// buffer has `srtp::TRAILER` more, so any packet can be encrypted in place.
const BUF_BYTES: usize = 65536;

/// Whom a socket's packets belong to.
#[derive(Debug, Clone, Copy)]
enum Owner {
    /// One side of one stream of a relayed call.
    Call { call: usize, stream: usize, side: usize },
    /// A conference participant.
    Member { conf: usize, pid: u32 },
    /// Another worker's conference participant, read here for it (see
    /// `worker::recv_pool`).
    Forward(crate::worker::recv_pool::Forward, forward::Burst),
}

pub(super) struct Sock {
    socket: UdpSocket,
    local: SocketAddr,
    owner: Owner,
    rtcp: bool,
    queued: bool,
    /// Read by the worker's io_uring (`runner::io`) rather than epoll, under
    /// this generation (completions of an earlier socket in the slot are stale).
    ring: Option<u32>,
    /// The generation it had on the ring before it moved to epoll: what the
    /// ring received before the move is still this socket's (`runner::io`).
    left_ring: Option<u32>,
}

impl Sock {
    /// Another descriptor of the same socket (for a helper worker to read).
    fn socket_dup(&self) -> std::io::Result<std::net::UdpSocket> {
        use std::os::fd::AsFd;
        Ok(self.socket.as_fd().try_clone_to_owned()?.into())
    }
}

struct WStream {
    relay: RelayStream,
    /// `sock[side][0]` RTP, `sock[side][1]` RTCP: slots in `Runner::sockets`.
    sock: [[Option<usize>; 2]; 2],
    /// SRTP towards each leg, where chorus holds the keys.
    srtp: [Option<Box<SrtpSide>>; 2],
    /// ICE-lite and DTLS towards a browser leg.
    webrtc: [Option<Box<webrtc::WebRtc>>; 2],
    /// `transcode[side]` converts what leg `side` sends, when the legs
    /// share no codec.
    transcode: [Option<Box<Transcoder>>; 2],
    /// Key presses chorus sends to leg `i` (see `media::dtmf_out`).
    dtmf_out: [Option<Box<crate::media::dtmf_out::DtmfOut>>; 2],
    /// `bundle[side]`: this side rides another stream's transport.
    bundle: [Option<super::Bundled>; 2],
    /// Other streams ride this one's transport on that side.
    has_followers: [bool; 2],
    /// `kernel[side]`: what leg `side` sends is forwarded in the kernel.
    kernel: [Option<kernel::InKernel>; 2],
    /// The kernel refused it (map full, no route): not asked again before
    /// this time or the next command.
    kernel_refused: [Option<Instant>; 2],
}

struct WCall {
    key: CallKey,
    call_id: Arc<str>,
    streams: Vec<WStream>,
    last_activity: Instant,
    /// Applications listening to its legs (usually none).
    taps: Vec<taps::LegTap>,
    /// Legs applications speak to (bidirectional taps, playbacks).
    hearings: Vec<hearing::Hearing>,
}

pub(super) struct Runner {
    poll: Poll,
    commands: crossbeam_channel::Receiver<Command>,
    /// Set by the control plane when it wakes this worker for commands.
    wake_pending: Arc<std::sync::atomic::AtomicBool>,
    events: super::EventSink,
    counters: Arc<WorkerCounters>,
    config: WorkerConfig,
    sockets: Slab<Sock>,
    calls: Slab<WCall>,
    by_key: HashMap<CallKey, usize>,
    /// Sockets that still had data when their budget ran out.
    queued: VecDeque<usize>,
    buf: Box<[u8]>,
    conferences: Slab<conference_host::WConference>,
    conf_by_key: HashMap<CallKey, usize>,
    /// Sockets this worker reads for other workers' conferences, by ticket.
    adopted: HashMap<u64, usize>,
    /// The next ticket this worker hands a helper with a socket.
    next_ticket: u64,
    /// When the earliest conference's next tick is due (none without conferences).
    next_tick: Option<Instant>,
    /// When to look at call legs applications speak to (none: no such leg).
    fill_at: Option<Instant>,
    /// Since when tick work is being added up, and how much (see `ticks`).
    tick_window: (Option<Instant>, Duration),
    overload: crate::media::overload::OverloadGuard,
    /// io_uring for call sockets (`--io uring`); `None`: epoll.
    ring: Option<crate::worker::uring::Uring>,
    /// The generation the next socket read by the ring gets.
    next_gen: u32,
    /// Test-only: calls and conferences that panic on their next packet or tick.
    #[cfg(feature = "test-hooks")]
    armed_panics: std::collections::HashSet<CallKey>,
    /// Test-only: the recovery from the next loop panic panics too.
    #[cfg(feature = "test-hooks")]
    kill_thread: bool,
    /// Test-only: added to every tick's work.
    #[cfg(feature = "test-hooks")]
    slow_ticks: Duration,
}

mod bundle;
mod call_path;
mod conference_host;
mod forward;
mod hearing;
mod inject;
mod io;
mod isolation;
mod kernel;
mod sockets;
mod stream;
mod taps;
mod ticks;
mod webrtc;

use isolation::guarded;
pub(super) use isolation::panic_message;
use stream::{set_srtp, set_transcoder};

impl Runner {
    pub(super) fn new(
        poll: Poll,
        (commands, wake_pending): (crossbeam_channel::Receiver<Command>, Arc<std::sync::atomic::AtomicBool>),
        events: super::EventSink,
        counters: Arc<WorkerCounters>,
        config: WorkerConfig,
    ) -> Self {
        let ring = io::ring_for(&config, &poll);
        Runner {
            ring,
            next_gen: 0,
            poll,
            commands,
            wake_pending,
            events,
            counters,
            config,
            sockets: Slab::new(),
            calls: Slab::new(),
            by_key: HashMap::new(),
            queued: VecDeque::new(),
            conferences: Slab::new(),
            conf_by_key: HashMap::new(),
            adopted: HashMap::new(),
            next_ticket: 0,
            next_tick: None,
            fill_at: None,
            tick_window: Default::default(),
            overload: Default::default(),
            #[cfg(feature = "test-hooks")]
            armed_panics: Default::default(),
            #[cfg(feature = "test-hooks")]
            kill_thread: false,
            #[cfg(feature = "test-hooks")]
            slow_ticks: Duration::ZERO,
            buf: vec![0u8; BUF_BYTES + srtp::TRAILER].into_boxed_slice(),
        }
    }

    /// Serves until `Shutdown`. A panic that escapes (one outside any call's
    /// processing) unwinds out of here to the supervisor in `worker::spawn`.
    pub(super) fn run(&mut self) {
        let mut events = Events::with_capacity(1024);
        let mut next_housekeeping = clock::now() + HOUSEKEEPING;
        loop {
            let timeout = if self.queued.is_empty() {
                let next = [self.next_tick, self.fill_at]
                    .into_iter()
                    .flatten()
                    .fold(next_housekeeping, Instant::min);
                next.saturating_duration_since(clock::now())
            } else {
                Duration::ZERO
            };
            let go_on = if self.ring.is_some() {
                self.ring_turn(&mut events, timeout)
            } else {
                self.epoll_turn(&mut events, Some(timeout))
            };
            if !go_on {
                return;
            }
            for _ in 0..self.queued.len() {
                let Some(slot) = self.queued.pop_front() else {
                    break;
                };
                if let Some(s) = self.sockets.get_mut(slot) {
                    s.queued = false;
                    self.service(slot);
                }
            }
            // Other workers' conferences' packets, to send (see `send_pool`).
            let (p, b) = self.config.send_pool.drain(self.config.index);
            if p > 0 {
                WorkerCounters::add(&self.counters.packets_relayed, p);
                WorkerCounters::add(&self.counters.bytes_relayed, b);
                WorkerCounters::add(&self.counters.offloaded, p);
            }
            // Other workers' reads for this one's conferences, before the tick.
            self.take_forwarded();
            let now = clock::now();
            if self.next_tick.is_some_and(|t| now >= t) {
                self.tick_conferences(now);
            }
            if self.fill_at.is_some_and(|t| now >= t) {
                self.fill_calls(now);
            }
            if now >= next_housekeeping {
                self.housekeeping(now);
                next_housekeeping = now + HOUSEKEEPING;
            }
        }
    }

    /// Waits on epoll and handles what it reports; false once told to stop.
    fn epoll_turn(&mut self, events: &mut Events, timeout: Option<Duration>) -> bool {
        if let Err(e) = self.poll.poll(events, timeout) {
            if e.kind() != ErrorKind::Interrupted {
                tracing::error!(error = %e, "media worker poll failed");
            }
            return true;
        }
        for ev in events.iter() {
            match ev.token() {
                WAKER => {
                    if !self.drain_commands() {
                        return false;
                    }
                    self.take_handovers();
                }
                Token(slot) => self.service(slot),
            }
        }
        true
    }

    fn relay_one(&mut self, slot: usize, n: usize, from: SocketAddr) {
        let now = clock::now();
        let c = &*self.counters;
        WorkerCounters::add(&c.packets_in, 1);
        WorkerCounters::add(&c.bytes_in, n as u64);
        let s = &self.sockets[slot];
        let rtcp = s.rtcp;
        match s.owner {
            Owner::Call { call, stream, side } => {
                let packet = |r: &mut Self| {
                    if !r.webrtc_datagram(now, call, stream, side, slot, n, from) {
                        r.call_packet(now, call, stream, side, rtcp, n, from)
                    }
                };
                if let Err(panic) = guarded(|| packet(self)) {
                    WorkerCounters::add(&self.counters.panics, 1);
                    self.fail_call(call, &panic);
                }
            }
            Owner::Member { conf, pid } => {
                if let Err(panic) = guarded(|| self.member_packet(now, conf, pid, slot, rtcp, n, from)) {
                    WorkerCounters::add(&self.counters.panics, 1);
                    self.fail_conference(conf, &panic);
                }
            }
            Owner::Forward(to, _) => self.forward_one(slot, to, rtcp, now, n, from),
        }
    }

    /// Handles every queued command; false when the worker must stop. A
    /// command that panics ends the call or conference it was for; its reply
    /// channel drops, so the control plane sees the failure at once.
    fn drain_commands(&mut self) -> bool {
        // Cleared before the queue is read: a command queued after this
        // wakes the worker again, one queued before is read below.
        // (A swap: it reads the sender's, so what was queued before is seen.)
        self.wake_pending.swap(false, std::sync::atomic::Ordering::AcqRel);
        while let Ok(cmd) = self.commands.try_recv() {
            #[cfg(feature = "test-hooks")]
            match cmd {
                Command::PanicLoop => panic!("test hook: injected panic in the worker loop"),
                Command::KillThread => {
                    self.kill_thread = true;
                    panic!("test hook: the worker thread dies");
                }
                _ => {}
            }
            let Some(key) = cmd.key() else { return false };
            if let Err(panic) = guarded(|| self.command(cmd)) {
                self.fail_key(key, &panic);
            }
        }
        true
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Update {
                key,
                call_id,
                streams,
                sockets,
                reply,
            } => {
                self.reclaim_key(key);
                let r = self.update(key, call_id, streams, sockets);
                let _ = reply.send(r);
            }
            Command::Remove { key, reply } => {
                let _ = reply.send(self.remove(key));
            }
            Command::Query { key, reply } => {
                let now = clock::now();
                let ci = self.by_key.get(&key).copied();
                ci.inspect(|&ci| self.sync_from_kernel(ci));
                let report = ci.map(|i| self.report(i, now));
                let _ = reply.send(report);
            }
            Command::Detach {
                key,
                stream,
                side,
                reply,
            } => {
                self.reclaim_key(key);
                let _ = reply.send(self.detach(key, stream, side));
            }
            Command::Tap {
                key,
                stream,
                leg,
                codecs,
                spec,
                reply,
            } => {
                self.reclaim_key(key);
                let _ = reply.send(self.tap_call(key, (stream, leg), codecs, spec));
            }
            Command::Dtmf {
                key,
                stream,
                leg,
                codes,
                duration_ms,
                volume,
                event,
                reply,
            } => {
                self.reclaim_key(key);
                let r = self.queue_dtmf(key, (stream, leg), &codes, (duration_ms, volume, event));
                let _ = reply.send(r);
            }
            Command::Untap { key, id, reply } => {
                let _ = reply.send(self.untap(key, id));
            }
            Command::Conference(c) => self.conference_command(c),
            #[cfg(feature = "test-hooks")]
            Command::ArmPanic { key, reply } => {
                self.reclaim_key(key);
                let _ = reply.send(self.arm_panic(key));
            }
            #[cfg(feature = "test-hooks")]
            Command::SlowTicks(d) => self.slow_ticks = d,
            #[cfg(feature = "test-hooks")]
            Command::PanicLoop | Command::KillThread => {}
            Command::Shutdown => {}
        }
    }

    /// Brings a call to `streams`. All or nothing for the sockets it opens:
    /// on an error, those are closed again (and a call it created removed),
    /// so the control plane may return their ports to the pool.
    fn update(
        &mut self,
        key: CallKey,
        call_id: Arc<str>,
        streams: Vec<StreamSpec>,
        sockets: Vec<super::Bound>,
    ) -> Result<(), WorkerError> {
        let now = clock::now();
        let mut fresh: HashMap<SocketAddr, UdpSocket> = sockets
            .into_iter()
            .map(|(local, s)| (local, UdpSocket::from_std(s)))
            .collect();
        let created = !self.by_key.contains_key(&key);
        let ci = *self.by_key.entry(key).or_insert_with(|| {
            self.calls.insert(WCall {
                key,
                call_id,
                streams: Vec::new(),
                last_activity: now,
                taps: Vec::new(),
                hearings: Vec::new(),
            })
        });
        self.calls[ci].last_activity = now;
        let mut opened = Vec::new();
        let result = self.apply_streams(ci, streams, &mut fresh, &mut opened);
        if result.is_err() {
            for (si, side, which, slot) in opened {
                self.close_socket(slot);
                self.calls[ci].streams[si].sock[side][which] = None;
            }
            if created {
                self.by_key.remove(&key);
                self.calls.remove(ci);
            }
        }
        // Sockets replaced or rolled back are closed before the reply.
        self.flush_ring();
        result
    }

    /// The body of [`update`](Self::update); `opened` collects the sockets
    /// it opened as (stream, side, RTP or RTCP, slot).
    fn apply_streams(
        &mut self,
        ci: usize,
        streams: Vec<StreamSpec>,
        fresh: &mut HashMap<SocketAddr, UdpSocket>,
        opened: &mut Vec<(usize, usize, usize, usize)>,
    ) -> Result<(), WorkerError> {
        for (si, spec) in streams.into_iter().enumerate() {
            if si == self.calls[ci].streams.len() {
                self.calls[ci].streams.push(WStream::new(spec.kind));
            }
            for (side, ss) in spec.sides.into_iter().enumerate() {
                // A bundled side uses its owner's socket.
                let want = match &ss {
                    Some(s) if s.bundle.is_none() => [Some(s.rtp), s.rtcp],
                    _ => [None, None],
                };
                for (which, want) in want.into_iter().enumerate() {
                    let cur = self.calls[ci].streams[si].sock[side][which];
                    if cur.map(|slot| self.sockets[slot].local) == want {
                        continue;
                    }
                    if let Some(slot) = cur {
                        self.close_socket(slot);
                    }
                    self.calls[ci].streams[si].sock[side][which] = None;
                    if let Some(addr) = want {
                        let socket = fresh.remove(&addr).ok_or(WorkerError::NoSocket(addr))?;
                        let owner = Owner::Call {
                            call: ci,
                            stream: si,
                            side,
                        };
                        let slot = self.open_socket(socket, addr, owner, which == 1)?;
                        self.calls[ci].streams[si].sock[side][which] = Some(slot);
                        opened.push((si, side, which, slot));
                    }
                }
                let ssrc = (self.calls[ci].key as u32).wrapping_mul(2654435761) ^ (2 * si + side) as u32;
                let ws = &mut self.calls[ci].streams[si];
                ws.bundle[side] = ss.as_ref().and_then(|s| s.bundle);
                set_transcoder(&mut ws.transcode[side], ss.as_ref().and_then(|s| s.transcode), ssrc)?;
                let browser = ss.as_ref().and_then(|s| s.webrtc.as_ref());
                let rebuilt = webrtc::set_webrtc(ws, side, browser, &self.config.dtls)?;
                if browser.is_none() {
                    set_srtp(&mut ws.srtp[side], ss.as_ref().and_then(|s| s.srtp.as_ref()))?;
                }
                let relay_side = &mut ws.relay.sides[side];
                match ss {
                    // A browser's address comes from ICE: new SDP keeps it
                    // unless the credentials changed (an ICE restart).
                    Some(s) if browser.is_some() && !rebuilt => relay_side.peer = s.peer,
                    Some(s) if s.relearn || rebuilt => relay_side.update(s.peer),
                    Some(s) => relay_side.peer = s.peer,
                    None => relay_side.update(crate::media::relay::PeerSpec::unknown(spec.kind)),
                }
            }
        }
        bundle::mark_owners(&mut self.calls[ci].streams);
        Ok(())
    }

    fn detach(&mut self, key: CallKey, stream: usize, side: usize) -> Option<super::Detached> {
        let ci = *self.by_key.get(&key)?;
        let ws = self.calls[ci].streams.get_mut(stream)?;
        let slots: Vec<usize> = ws.sock.get_mut(side)?.iter_mut().filter_map(Option::take).collect();
        let s = &mut ws.relay.sides[side];
        let peer = Box::new(s.peer.clone());
        let latched = s.latched();
        s.update(crate::media::relay::PeerSpec::unknown(peer.kind));
        let sockets = slots.into_iter().map(|slot| self.take_socket(slot)).collect();
        // The ring must not read them once the conference does.
        self.flush_ring();
        // A call whose every side moved away has nothing left to relay: it
        // ends here, so no media timeout is reported for a live conversation.
        let emptied = self.calls[ci]
            .streams
            .iter()
            .all(|ws| ws.sock.iter().flatten().all(Option::is_none));
        if emptied {
            self.by_key.remove(&key);
            self.calls.remove(ci);
        }
        Some(super::Detached {
            sockets,
            peer,
            latched,
            call_emptied: emptied,
        })
    }

    /// Takes call `key`'s directions back from the kernel, if it has any.
    fn reclaim_key(&mut self, key: CallKey) {
        if let Some(&ci) = self.by_key.get(&key) {
            self.reclaim_from_kernel(ci);
        }
    }

    fn remove(&mut self, key: CallKey) -> Option<super::Removed> {
        let ci = self.by_key.remove(&key)?;
        self.reclaim_from_kernel(ci);
        let report = self.report(ci, clock::now());
        let call = self.calls.remove(ci);
        let slots = call.streams.iter().flat_map(|ws| ws.sock.iter().flatten().flatten());
        let sockets = slots.map(|slot| self.take_socket(*slot)).collect();
        // The ring lets go of them before the control plane hands them out.
        self.flush_ring();
        Some(super::Removed { report, sockets })
    }

    fn report(&self, ci: usize, now: Instant) -> CallReport {
        let local = |s: Option<usize>| s.map(|slot| self.sockets[slot].local);
        CallReport {
            streams: self.calls[ci]
                .streams
                .iter()
                .map(|ws| StreamReport {
                    kind: ws.relay.sides[0].peer.kind,
                    sides: [0, 1].map(|i| SideReportWithPorts {
                        local_rtp: local(ws.sock[i][0]),
                        local_rtcp: local(ws.sock[i][1]),
                        side: ws.relay.sides[i].report(now),
                    }),
                })
                .collect(),
        }
    }

    fn housekeeping(&mut self, now: Instant) {
        let streams: usize = self.calls.iter().map(|(_, c)| c.streams.len()).sum();
        self.counters.streams.store(streams as u64, Relaxed);
        self.counters.calls.store(self.calls.len() as u64, Relaxed);
        self.counters.kernel_streams.store(self.in_kernel(), Relaxed);
        if self.config.kernel.is_some() {
            self.recheck_egress(now);
        }
        for (_, c) in self.calls.iter_mut() {
            for ws in &mut c.streams {
                webrtc::check_consent(ws, now, &c.call_id, &self.sockets);
            }
        }
        self.housekeep_members(now);
        let timeout = self.config.media_timeout;
        if timeout.is_zero() {
            return;
        }
        let quiet = |c: &WCall| now.saturating_duration_since(c.last_activity) >= timeout;
        let expired: Vec<(usize, CallKey, Arc<str>)> = self
            .calls
            .iter()
            .filter(|(_, c)| quiet(c))
            .map(|(ci, c)| (ci, c.key, c.call_id.clone()))
            .collect();
        for (ci, key, call_id) in expired {
            // Quiet in userspace, maybe not in the kernel.
            self.sync_from_kernel(ci);
            if !self.calls.get(ci).is_some_and(quiet) {
                continue;
            }
            if let Some(removed) = self.remove(key) {
                self.events.send(WorkerEvent::MediaTimeout { key, call_id, removed });
            }
        }
    }
}
