//! Handing a relayed direction to the kernel forwarder (`crate::offload`)
//! and taking it back.
//!
//! A direction goes to the kernel once userspace has relayed an RTP packet
//! on it with both legs latched and nothing else to do: no SRTP, browser,
//! transcoding, bundle, key presses to inject, taps or audio into the
//! call. Every command that may change that (new SDP, a tap, key presses,
//! a leg moving away, the call ending) first takes the call's directions
//! back, with their counters; the next packet in userspace hands them
//! over again if they still qualify. Dropping a direction's [`InKernel`]
//! removes its entry, so no path that forgets a call leaves one behind.

use super::{Runner, WCall, WStream};
use crate::media::relay::StreamKind;
use crate::metrics::WorkerCounters;
use crate::offload::route::{self, Egress};
use crate::offload::{map, KernelForward, Key, Route};
use crate::worker::clock;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One direction of one stream forwarded in the kernel.
pub(super) struct InKernel {
    kernel: Arc<KernelForward>,
    key: Key,
    /// The route it was handed over with (`to` from `via`, out of
    /// `egress`, 0 for this host), and when that was last checked.
    to: SocketAddr,
    via: SocketAddr,
    egress: u32,
    checked: Instant,
    /// Counters already added to the side's statistics.
    applied: (u64, u64),
    /// Taken back (its entry is gone).
    done: bool,
}

impl Drop for InKernel {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.kernel.map.take(&self.key);
        }
    }
}

/// What the kernel counted for a direction since it was last looked at.
struct Counted {
    packets: u64,
    bytes: u64,
    last: Option<Instant>,
    seq_max: u32,
    /// The kernel's jitter (scaled by 16) and its clock, once it measured one.
    jitter: Option<(u64, u32)>,
}

impl InKernel {
    /// The entry's counters since the last call; `take` also removes it.
    fn collect(&mut self, take: bool, now: Instant) -> Option<Counted> {
        let entry = if take {
            self.done = true;
            self.kernel.map.take(&self.key)
        } else {
            self.kernel.map.read(&self.key)
        };
        let e = entry.ok().flatten()?;
        let packets = e.packets.saturating_sub(self.applied.0);
        let bytes = e.bytes.saturating_sub(self.applied.1);
        self.applied = (e.packets, e.bytes);
        // Both clocks are CLOCK_MONOTONIC; the kernel's is read as an age.
        let age = map::monotonic_ns().saturating_sub(e.last_ns);
        let last = (e.last_ns != 0).then(|| now.checked_sub(Duration::from_nanos(age)).unwrap_or(now));
        Some(Counted {
            packets,
            bytes,
            last,
            seq_max: e.seq_max,
            jitter: (e.clock != 0).then_some((e.jitter_q4, e.clock)),
        })
    }
}

/// How often a kernel-forwarded direction's route is looked up again.
const RECHECK_EVERY: Duration = Duration::from_secs(1);
/// Route lookups per housekeeping turn (a netlink round trip each).
const RECHECKS_PER_TURN: usize = 64;
/// A direction the kernel refused (no route, a full map) is offered again
/// after this, or at the call's next command.
const RETRY_REFUSED: Duration = Duration::from_secs(5);

/// Folds what the kernel counted for direction (`stream`, `side`) into the
/// call's statistics and activity; `take` also removes its entry.
fn collect_direction(call: &mut WCall, (si, side): (usize, usize), take: bool, now: Instant, c: &WorkerCounters) {
    let ws = &mut call.streams[si];
    if take {
        ws.kernel_refused[side] = None;
    }
    let Some(k) = &mut ws.kernel[side] else { return };
    let counted = k.collect(take, now);
    if take {
        ws.kernel[side] = None;
        c.kernel_streams.fetch_sub(1, Relaxed);
    }
    let Some(n) = counted else { return };
    ws.relay.sides[side]
        .rtp
        .on_forwarded(n.packets, n.bytes, n.last, n.seq_max, n.jitter);
    if let Some(last) = n.last {
        call.last_activity = call.last_activity.max(last);
    }
}

/// Whether packets from leg `side` of `ws` need nothing but forwarding.
fn plain(call: &WCall, ws: &WStream, side: usize) -> bool {
    call.taps.is_empty()
        && call.hearings.is_empty()
        && ws.relay.sides[side].peer.kind == StreamKind::Rtp
        && ws.srtp.iter().all(Option::is_none)
        && ws.webrtc.iter().all(Option::is_none)
        && ws.transcode.iter().all(Option::is_none)
        && ws.bundle.iter().all(Option::is_none)
        && !ws.has_followers.iter().any(|f| *f)
        && ws.dtmf_out[1 - side].is_none()
}

impl Runner {
    /// After userspace relayed an RTP packet from leg `side` of stream
    /// `si` to `to`: the kernel takes that direction on if it qualifies.
    /// Once per direction (it is then in the kernel, or refused for
    /// `RETRY_REFUSED` or until the call's next command).
    pub(super) fn offer_to_kernel(&mut self, now: Instant, ci: usize, si: usize, side: usize, to: SocketAddr) {
        let Some(kernel) = &self.config.kernel else { return };
        let Some(call) = self.calls.get(ci) else { return };
        let Some(ws) = call.streams.get(si) else { return };
        if ws.kernel[side].is_some() || ws.kernel_refused[side].is_some_and(|until| now < until) {
            return;
        }
        #[cfg(feature = "test-hooks")]
        if self.armed_panics.contains(&call.key) {
            return;
        }
        if kernel.map.full() {
            // Refused without a route lookup (a netlink round trip), again
            // after RETRY_REFUSED: it may have room by then.
            self.calls[ci].streams[si].kernel_refused[side] = Some(now + RETRY_REFUSED);
            return;
        }
        let (rx, tx) = (&ws.relay.sides[side], &ws.relay.sides[1 - side]);
        let local = |s: Option<usize>| s.and_then(|slot| self.sockets.get(slot)).map(|s| s.local);
        let mut no_route = false;
        let route = (|| {
            // Both latched: neither address may change until the next command.
            (plain(call, ws, side) && tx.latched() == Some(to)).then_some(())?;
            let (from, via) = (rx.latched()?, local(ws.sock[1 - side][0])?);
            // One family throughout; a socket on 0.0.0.0 or :: has no
            // source address to write.
            let v6 = to.is_ipv6();
            (from.is_ipv6() == v6 && via.is_ipv6() == v6 && !via.ip().is_unspecified()).then_some(())?;
            let ifindex = match route::egress(to.ip(), via.ip()) {
                Ok(Egress::Local) => 0,
                Ok(Egress::Out(i)) => i,
                Err(error) => {
                    tracing::debug!(%error, %to, "no route for kernel forwarding");
                    no_route = true;
                    return None;
                }
            };
            Some(Route {
                from,
                via,
                to,
                tos: self.config.tos,
                punt: rx.peer.dtmf_pts,
                seq_max: rx.rtp.extended_max_seq()?,
                ifindex,
                jitter: rx.rtp.jitter_q4().map_or((0, 0, 0), |(q4, clock)| {
                    (q4, clock, rx.peer.clock_rates.payload_types_at(clock))
                }),
            })
        })();
        let at = local(ws.sock[side][0]).filter(|a| route.is_some_and(|r| a.is_ipv6() == r.to.is_ipv6()));
        let (Some(route), Some(at)) = (route, at) else {
            // Not asked again for every packet: after RETRY_REFUSED or the next command.
            if no_route {
                self.calls[ci].streams[si].kernel_refused[side] = Some(now + RETRY_REFUSED);
            }
            return;
        };
        let key = Key::new(at);
        let kernel = Arc::clone(kernel);
        let installed = kernel.map.insert(&key, &route);
        let ws = &mut self.calls[ci].streams[si];
        match installed {
            Ok(()) => {
                WorkerCounters::add(&self.counters.kernel_streams, 1);
                ws.kernel[side] = Some(InKernel {
                    kernel,
                    key,
                    to: route.to,
                    via: route.via,
                    egress: route.ifindex,
                    checked: now,
                    applied: (0, 0),
                    done: false,
                })
            }
            Err(error) => {
                // A full map (65,536 directions) or no memory: userspace it is.
                tracing::debug!(%error, port = at.port(), "kernel forwarding refused a stream");
                ws.kernel_refused[side] = Some(now + RETRY_REFUSED);
            }
        }
    }

    /// Takes every direction of call `ci` back to userspace, adding what the
    /// kernel counted to the call's statistics. Before any change to it.
    pub(super) fn reclaim_from_kernel(&mut self, ci: usize) {
        self.kernel_counts(ci, true);
    }

    /// Adds what the kernel counted for call `ci` to its statistics and its
    /// last activity, and leaves its directions there.
    pub(super) fn sync_from_kernel(&mut self, ci: usize) {
        self.kernel_counts(ci, false);
    }

    fn kernel_counts(&mut self, ci: usize, take: bool) {
        let Some(call) = self.calls.get_mut(ci) else { return };
        let now = clock::now();
        for si in 0..call.streams.len() {
            for side in 0..2 {
                collect_direction(call, (si, side), take, now, &self.counters);
            }
        }
    }

    /// Follows route changes: a direction whose peer is now reached by
    /// another interface (or no longer at all) is taken back, and the next
    /// packet in userspace hands it over again with the route of the day.
    /// Each direction is looked up again once a second at most, and
    /// `RECHECKS_PER_TURN` per housekeeping turn.
    pub(super) fn recheck_egress(&mut self, now: Instant) {
        let mut due = Vec::new();
        'calls: for (ci, c) in self.calls.iter() {
            for (si, ws) in c.streams.iter().enumerate() {
                for (side, k) in ws.kernel.iter().enumerate() {
                    if k.as_ref()
                        .is_some_and(|k| now.saturating_duration_since(k.checked) >= RECHECK_EVERY)
                    {
                        due.push((ci, si, side));
                        if due.len() == RECHECKS_PER_TURN {
                            break 'calls;
                        }
                    }
                }
            }
        }
        for (ci, si, side) in due {
            let Some(k) = self.calls[ci].streams[si].kernel[side].as_mut() else {
                continue;
            };
            k.checked = now;
            let egress = match route::egress(k.to.ip(), k.via.ip()) {
                Ok(Egress::Local) => Some(0),
                Ok(Egress::Out(i)) => Some(i),
                Err(_) => None,
            };
            let (to, was) = (k.to, k.egress);
            if egress != Some(was) {
                let call = &mut self.calls[ci];
                tracing::info!(call_id = %call.call_id, %to, was, now = ?egress, "route changed: a kernel-forwarded direction comes back to userspace");
                collect_direction(call, (si, side), true, now, &self.counters);
            }
        }
    }

    /// Directions this worker has in the kernel: the gauge, kept by
    /// installs and reclaims and set right by housekeeping (a call that
    /// ended by a panic drops its directions without a reclaim).
    pub(super) fn in_kernel(&self) -> u64 {
        let streams = self.calls.iter().flat_map(|(_, c)| &c.streams);
        streams.map(|ws| ws.kernel.iter().flatten().count() as u64).sum()
    }
}
