//! Conferences on a worker: participants' sockets, source checks, and the
//! 20 ms tick that runs each conference's mixer.

use super::webrtc::{is_handshake, BrowserSide, WebRtc};
use super::{clock, CallKey, Owner, Runner};
use crate::media::conference::Conference;
use crate::media::relay::{DropReason, PacketKind, PeerSpec, Side};
use crate::media::srtp::{SrtpSide, TRAILER};
use crate::metrics::WorkerCounters;
use crate::worker::MemberTransport;
use crate::worker::{ConfCommand, ConfReport, WorkerError, WorkerEvent};
use mio::net::UdpSocket;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::ticks::TICK;

pub(super) struct Member {
    /// Source checks and latching, as for a relayed leg.
    side: Side,
    rtp: usize,
    rtcp: Option<usize>,
    /// SRTP with the participant (SDES keys, or a browser's once DTLS is done).
    srtp: Option<Box<SrtpSide>>,
    webrtc: Option<Box<WebRtc>>,
    /// The RTP socket again, for another worker to send from (see
    /// `worker::send_pool`); only where there are other workers.
    shared: Option<Arc<std::net::UdpSocket>>,
    /// The helper worker that reads this participant's sockets, and the
    /// tickets to take them back (see `worker::recv_pool`).
    away: Option<(usize, [Option<u64>; 2])>,
}

impl Member {
    /// Tells the helper reading this participant's sockets to close them.
    pub(super) fn release_reads(&self, runner: &Runner) {
        if let Some((helper, tickets)) = self.away {
            runner.release_member(helper, tickets);
        }
    }
}

pub(in crate::worker) struct WConference {
    pub(super) key: CallKey,
    pub(super) conf_id: Arc<str>,
    pub(super) core: Conference,
    pub(super) members: HashMap<u32, Member>,
    pub(super) late_ticks: u64,
    /// When this conference's next tick is due (see `ticks`).
    pub(super) next_tick: Instant,
}

impl Runner {
    pub(super) fn conference_command(&mut self, cmd: ConfCommand) {
        match cmd {
            ConfCommand::Create {
                key,
                conf_id,
                speakers,
                mix_rate,
                reply,
            } => {
                self.create_conference(key, conf_id, speakers, mix_rate);
                let _ = reply.send(());
            }
            ConfCommand::Join {
                key,
                pid,
                spec,
                peer,
                rtp,
                rtcp,
                sockets,
                latched,
                transport,
                reply,
            } => {
                let joined = self.join(key, pid, spec, *peer, rtp, rtcp, sockets, latched, *transport);
                let _ = reply.send(joined);
            }
            ConfCommand::Leave { key, pid, reply } => {
                let _ = reply.send(self.leave(key, pid));
            }
            ConfCommand::Control {
                key,
                pid,
                controls,
                reply,
            } => {
                let ok = match self.conf_by_key.get(&key) {
                    Some(&ci) => self.conferences[ci].core.control(pid, controls),
                    None => false,
                };
                let _ = reply.send(ok);
            }
            ConfCommand::Query { key, reply } => {
                let now = clock::now();
                let report = self.conf_by_key.get(&key).map(|&ci| {
                    let c = &self.conferences[ci];
                    ConfReport {
                        participants: c.core.report(now),
                        encodes_last_tick: c.core.last_encodes,
                        late_ticks: c.late_ticks,
                    }
                });
                let _ = reply.send(report);
            }
            ConfCommand::Delete { key, reply } => {
                let _ = reply.send(self.delete_conference(key));
            }
            ConfCommand::Tap {
                key,
                point,
                spec,
                reply,
            } => {
                let _ = reply.send(self.tap_conference(key, point, spec));
            }
        }
    }

    fn create_conference(
        &mut self,
        key: CallKey,
        conf_id: Arc<str>,
        speakers: crate::media::mixer::speakers::SpeakerConfig,
        mix_rate: u32,
    ) {
        let mut core = Conference::with_rate(speakers, mix_rate);
        if self.overload.degraded() {
            core.degrade(true);
        }
        let ci = self.conferences.insert(WConference {
            key,
            conf_id,
            core,
            members: HashMap::new(),
            late_ticks: 0,
            next_tick: clock::now() + TICK,
        });
        self.conf_by_key.insert(key, ci);
        let first = self.conferences[ci].next_tick;
        self.next_tick = Some(self.next_tick.map_or(first, |t| t.min(first)));
    }

    /// Stops a conference and closes its sockets; false if there is none.
    fn delete_conference(&mut self, key: CallKey) -> bool {
        let Some(ci) = self.conf_by_key.remove(&key) else {
            return false;
        };
        let conf = self.conferences.remove(ci);
        for m in conf.members.values() {
            self.close_member_sockets(m);
        }
        if self.conferences.is_empty() {
            // No ticks, no load: the next conference starts afresh.
            self.next_tick = None;
            self.tick_window = Default::default();
            self.overload = Default::default();
            for c in [
                &self.counters.participants,
                &self.counters.overloaded,
                &self.counters.tick_us,
            ] {
                c.store(0, std::sync::atomic::Ordering::Relaxed);
            }
        }
        true
    }

    #[allow(clippy::too_many_arguments)] // one command's fields
    fn join(
        &mut self,
        key: CallKey,
        pid: u32,
        spec: crate::media::codec::CodecSpec,
        peer: PeerSpec,
        rtp: SocketAddr,
        rtcp: Option<SocketAddr>,
        sockets: Vec<crate::worker::Bound>,
        latched: Option<SocketAddr>,
        transport: MemberTransport,
    ) -> Result<(), WorkerError> {
        let ci = *self.conf_by_key.get(&key).ok_or(WorkerError::NoConference)?;
        let (srtp, webrtc) = match &transport {
            MemberTransport::Plain => (None, None),
            MemberTransport::Sdes { theirs, ours } => (
                Some(Box::new(SrtpSide::new(theirs, ours).map_err(WorkerError::Srtp)?)),
                None,
            ),
            MemberTransport::Webrtc(spec) => (None, Some(Box::new(WebRtc::new(spec, &self.config.dtls)?))),
        };
        let mut fresh: HashMap<SocketAddr, UdpSocket> = HashMap::new();
        let mut shared = None;
        for (local, s) in sockets {
            if local == rtp && self.config.send_pool.can_offload() {
                shared = s.try_clone().ok().map(Arc::new);
            }
            fresh.insert(local, UdpSocket::from_std(s));
        }
        let owner = Owner::Member { conf: ci, pid };
        let mut open = |runner: &mut Runner, addr: SocketAddr, is_rtcp: bool| -> Result<usize, WorkerError> {
            let s = fresh.remove(&addr).ok_or(WorkerError::NoSocket(addr))?;
            runner.open_socket(s, addr, owner, is_rtcp)
        };
        let rtp_slot = open(self, rtp, false)?;
        let rtcp_slot = match rtcp {
            Some(a) => Some(open(self, a, true)?),
            None => None,
        };
        let ssrc = crate::media::conference::participant_ssrc(key, pid);
        let away = self.place_reads(ci, key, pid, [Some(rtp_slot), rtcp_slot]);
        let conf = &mut self.conferences[ci];
        conf.core.join(pid, spec, ssrc).map_err(WorkerError::Codec)?;
        let mut side = Side::new(peer);
        side.set_latched(latched);
        conf.members.insert(
            pid,
            Member {
                side,
                rtp: rtp_slot,
                rtcp: rtcp_slot,
                srtp,
                webrtc,
                shared,
                away,
            },
        );
        Ok(())
    }

    /// Takes `pid` out; returns the events that made (see `Command::Leave`).
    fn leave(&mut self, key: CallKey, pid: u32) -> Vec<crate::media::conference::ConfEvent> {
        let Some(&ci) = self.conf_by_key.get(&key) else {
            return Vec::new();
        };
        let conf = &mut self.conferences[ci];
        conf.core.leave(pid);
        let events = std::mem::take(&mut conf.core.events);
        if let Some(m) = conf.members.remove(&pid) {
            self.close_member_sockets(&m);
        }
        events
    }

    /// A participant joining a conference of `mixer_offload_min` or more
    /// (itself included) is read by another worker; None: read here.
    fn place_reads(
        &mut self,
        ci: usize,
        key: CallKey,
        pid: u32,
        slots: [Option<usize>; 2],
    ) -> Option<(usize, [Option<u64>; 2])> {
        let c = &self.config;
        let size = self.conferences.get(ci)?.members.len() + 1;
        if c.offload_min == 0 || size < c.offload_min {
            return None;
        }
        let helper = c.send_pool.lane_for(c.index, pid)?;
        let to = crate::worker::recv_pool::Forward {
            home: c.index,
            key,
            pid,
        };
        let tickets = self.hand_over_member(helper, to, slots);
        tickets.iter().any(Option::is_some).then_some((helper, tickets))
    }

    /// The conference slot and socket slot a forwarded datagram belongs to.
    pub(super) fn member_slot(&self, key: CallKey, pid: u32, rtcp: bool) -> Option<(usize, usize)> {
        let ci = *self.conf_by_key.get(&key)?;
        let m = self.conferences.get(ci)?.members.get(&pid)?;
        Some((ci, if rtcp { m.rtcp.unwrap_or(m.rtp) } else { m.rtp }))
    }

    fn close_member_sockets(&mut self, m: &Member) {
        m.release_reads(self);
        self.close_socket(m.rtp);
        if let Some(r) = m.rtcp {
            self.close_socket(r);
        }
    }

    /// A packet on a participant's socket: a browser's handshake, SRTP
    /// taken off, source check, then the mixer.
    #[allow(clippy::too_many_arguments)] // the packet and where it came from
    pub(super) fn member_packet(
        &mut self,
        now: Instant,
        ci: usize,
        pid: u32,
        slot: usize,
        rtcp: bool,
        n: usize,
        from: SocketAddr,
    ) {
        let Some(conf) = self.conferences.get_mut(ci) else {
            return;
        };
        let Some(m) = conf.members.get_mut(&pid) else { return };
        let c = &*self.counters;
        let drop = |m: &mut Member, reason: DropReason| {
            m.side.count_drop(reason);
            WorkerCounters::add(&c.drops[reason as usize], 1);
        };
        let mut n = n;
        if let Some(webrtc) = m.webrtc.as_deref_mut() {
            if is_handshake(&self.buf[..n]) {
                let mut b = BrowserSide {
                    webrtc,
                    relay: &mut m.side,
                    srtp: &mut m.srtp,
                };
                let reply = self.sockets.get(slot).map(|s| &s.socket);
                let who = format_args!("conference {} participant {pid}", conf.conf_id);
                if let Some(reason) = b.datagram(now, from, &self.buf[..n], reply, &who) {
                    drop(m, reason);
                }
                return;
            }
        }
        if m.webrtc.is_some() && m.srtp.is_none() {
            // Nothing from a browser counts before its DTLS keys exist.
            return drop(m, DropReason::Srtp);
        }
        if let Some(srtp) = &mut m.srtp {
            let is_rtcp = rtcp || crate::wire::is_rtcp(&self.buf[..n]);
            match srtp.unprotect(&mut self.buf, n, is_rtcp) {
                Ok(plain) => n = plain,
                Err(_) => return drop(m, DropReason::Srtp),
            }
        }
        let packet = &self.buf[..n];
        match m.side.receive(now, from, packet, rtcp) {
            Ok(PacketKind::Rtp) => conf.core.handle_rtp(now, pid, packet),
            Ok(PacketKind::Rtcp) => conf.core.handle_rtcp(now, clock::ntp_now(), pid, packet),
            Ok(PacketKind::Raw) => {}
            Err(reason) => drop(m, reason),
        }
    }

    /// Browser participants' timers (DTLS client resends, consent).
    pub(super) fn housekeep_members(&mut self, now: Instant) {
        for (_, conf) in self.conferences.iter_mut() {
            for (pid, m) in conf.members.iter_mut() {
                let Some(w) = m.webrtc.as_deref_mut() else { continue };
                let sock = self.sockets.get(m.rtp).map(|s| &s.socket);
                let who = format_args!("conference {} participant {pid}", conf.conf_id);
                super::webrtc::housekeep(w, &mut m.side, sock, now, &who);
            }
        }
    }
}

/// One conference's tick: mix, send, count, and hand its events on.
pub(super) fn tick_one(
    conf: &mut WConference,
    now: Instant,
    ntp: u64,
    sockets: &slab::Slab<super::Sock>,
    counters: &WorkerCounters,
    events: &crate::worker::EventSink,
    offload: Option<(&crate::worker::send_pool::SendPool, usize)>,
) {
    let concealed_before = conf.core.concealed_total;
    // Lanes (other workers) handed packets this tick: woken once, after.
    let mut lanes = 0u64;
    let (core, members) = (&mut conf.core, &mut conf.members);
    // Room to encrypt a mixed packet in place, on the stack.
    let mut sealed = [0u8; 1500 + TRAILER];
    core.tick(now, ntp, &mut |pid, is_rtcp, bytes| {
        let Some(m) = members.get_mut(&pid) else { return };
        let bytes = match &mut m.srtp {
            Some(srtp) => {
                let Some(room) = sealed.get_mut(..bytes.len()) else {
                    return;
                };
                room.copy_from_slice(bytes);
                match srtp.protect(&mut sealed, bytes.len(), is_rtcp) {
                    Ok(len) => &sealed[..len],
                    Err(_) => return,
                }
            }
            // A browser gets nothing before its keys exist.
            None if m.webrtc.is_some() => return,
            None => bytes,
        };
        // RTCP leaves from the RTCP socket unless the participant multiplexes.
        let (to, slot) = if is_rtcp {
            match m.side.rtcp_destination() {
                Some((true, to)) => (Some(to), m.rtcp.unwrap_or(m.rtp)),
                Some((false, to)) => (Some(to), m.rtp),
                None => (None, m.rtp),
            }
        } else {
            (m.side.rtp_destination(), m.rtp)
        };
        let (Some(to), Some(s)) = (to, sockets.get(slot)) else {
            return;
        };
        // A large conference's sends go to another worker (`send_pool`).
        if let (Some((pool, home)), Some(shared), true) = (offload, &m.shared, slot == m.rtp) {
            if let Some(lane) = pool.lane_for(home, pid).filter(|&l| pool.offer(l, shared, to, bytes)) {
                lanes |= 1 << lane.min(63);
                return;
            }
        }
        if s.socket.send_to(bytes, to).is_ok() {
            WorkerCounters::add(&counters.packets_relayed, 1);
            WorkerCounters::add(&counters.bytes_relayed, bytes.len() as u64);
        }
    });
    if let Some((pool, _)) = offload.filter(|_| lanes != 0) {
        pool.wake(lanes);
    }
    WorkerCounters::add(&counters.encodes, conf.core.last_encodes as u64);
    WorkerCounters::add(&counters.concealed_frames, conf.core.concealed_total - concealed_before);
    // RTCP samples go out with the tick, coalesced: one event per tick at most.
    if !conf.core.rtt_seconds.is_empty() || !conf.core.reported_loss.is_empty() {
        let rtt = std::mem::take(&mut conf.core.rtt_seconds);
        let loss = std::mem::take(&mut conf.core.reported_loss);
        events.send(WorkerEvent::RtcpSamples { rtt, loss });
    }
    if !conf.core.events.is_empty() {
        let list = std::mem::take(&mut conf.core.events);
        for e in &list {
            tracing::debug!(conference = %conf.conf_id, event = ?e, "conference event");
        }
        events.send(WorkerEvent::Conference {
            key: conf.key,
            events: list,
        });
    }
}
