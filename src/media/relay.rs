//! One relayed media stream between two legs: source checks ("latching"),
//! statistics and where each packet goes. Pure: the worker passes `now`,
//! the source address and the bytes, and performs the send it is told to.
//!
//! Learning is where relays get hijacked ("RTP Bleed"): a third host sprays
//! a fresh port and receives the other party's audio. So a side learns its
//! peer only from an allowed IP address (the SDP connection address or the
//! signalling source), latches the first valid packet's exact address, and
//! drops everything else until signalling re-opens learning.

use super::stats::{RtpStats, StatsReport};
use crate::wire::{self, rtcp, rtp::RtpView};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// Whether a stream carries RTP (validated, sequence-tracked) or opaque UDP
/// (`m=image ... udptl`, `m=application ... UDP/BFCP`: forwarded as is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamKind {
    Rtp,
    Raw,
}

/// RTP clock rates by payload type, from `a=rtpmap` and RFC 3551's static table.
/// Serialized as the `[payload type, rate]` pairs that are set.
#[derive(Clone, Serialize, Deserialize)]
#[serde(into = "Vec<(u8, u32)>", try_from = "Vec<(u8, u32)>")]
pub struct ClockRates(pub [u32; 128]);

impl ClockRates {
    /// The payload types whose clock is `rate` Hz, as a mask (bit n: type n).
    pub fn payload_types_at(&self, rate: u32) -> u128 {
        (0..128).filter(|&pt| self.0[pt] == rate).fold(0, |m, pt| m | 1 << pt)
    }
}

impl From<ClockRates> for Vec<(u8, u32)> {
    fn from(c: ClockRates) -> Self {
        (0u8..128).zip(c.0).filter(|(_, r)| *r != 0).collect()
    }
}

impl TryFrom<Vec<(u8, u32)>> for ClockRates {
    type Error = String;
    fn try_from(pairs: Vec<(u8, u32)>) -> Result<Self, String> {
        let mut r = [0u32; 128];
        for (pt, rate) in pairs {
            *r.get_mut(usize::from(pt))
                .ok_or(format!("payload type {pt} is not 0..=127"))? = rate;
        }
        Ok(ClockRates(r))
    }
}

impl Default for ClockRates {
    fn default() -> Self {
        let mut r = [0u32; 128];
        // RFC 3551 static audio payload types (G.722 keeps 8000 for history's sake).
        for pt in [0, 3, 4, 5, 7, 8, 9, 12, 13, 15, 18] {
            r[pt] = 8000;
        }
        r[6] = 16000;
        r[16] = 11025;
        r[17] = 22050;
        r[10] = 44100;
        r[11] = 44100;
        r[14] = 90000;
        for pt in [25, 26, 28, 31, 32, 33, 34] {
            r[pt] = 90000;
        }
        ClockRates(r)
    }
}

impl std::fmt::Debug for ClockRates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.iter().enumerate().filter(|(_, r)| **r != 0))
            .finish()
    }
}

/// What signalling says about one leg of one stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerSpec {
    pub kind: StreamKind,
    /// Where the leg wants RTP, from its SDP; `None` for `0.0.0.0` (hold) or unknown.
    pub rtp: Option<SocketAddr>,
    /// Where the leg wants RTCP when it does not multiplex it.
    pub rtcp: Option<SocketAddr>,
    /// The leg multiplexes RTCP on the RTP port (RFC 5761).
    pub mux: bool,
    /// Source IPs the leg may send from before it is latched.
    pub sdp_ip: Option<IpAddr>,
    pub signal_ip: Option<IpAddr>,
    /// Latch to the first packet from any IP (peers whose media leaves from
    /// another address than their SDP says). Opt-in: it re-opens RTP Bleed.
    pub any_source: bool,
    pub clock_rates: ClockRates,
    /// The payload types of its RFC 4733 telephone events (bit n: type n).
    #[serde(default)]
    pub dtmf_pts: u128,
}

/// Why a packet was not forwarded. The discriminant indexes counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum DropReason {
    /// Not a valid RTP or RTCP packet on an RTP stream.
    Malformed = 0,
    /// Before latching, from an IP address signalling did not announce.
    UnknownSource = 1,
    /// After latching, from an address other than the latched one.
    ForeignSource = 2,
    /// The other leg has no address yet (no answer, or on hold at 0.0.0.0).
    NoDestination = 3,
    /// The kernel refused the send (buffer full, unreachable).
    SendFailed = 4,
    /// SRTP or SRTCP that did not authenticate (wrong key, tampered,
    /// replayed), or a new SSRC beyond the side's limit.
    Srtp = 5,
    /// Read by another worker for a conference whose worker had a full
    /// inbound lane (it fell behind; see `worker::recv_pool`).
    QueueFull = 6,
    /// More than a participant's share of datagrams in 20 ms on a port read
    /// by another worker (see `worker::runner::forward`).
    Flood = 7,
}

impl DropReason {
    pub const COUNT: usize = 8;
    pub const ALL: [DropReason; Self::COUNT] = [
        DropReason::Malformed,
        DropReason::UnknownSource,
        DropReason::ForeignSource,
        DropReason::NoDestination,
        DropReason::SendFailed,
        DropReason::Srtp,
        DropReason::QueueFull,
        DropReason::Flood,
    ];
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::UnknownSource => "unknown_source",
            DropReason::ForeignSource => "foreign_source",
            DropReason::NoDestination => "no_destination",
            DropReason::SendFailed => "send_failed",
            DropReason::Srtp => "srtp",
            DropReason::QueueFull => "queue_full",
            DropReason::Flood => "flood",
        }
    }
}

/// What kind of packet arrived, once validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    Rtp,
    Rtcp,
    Raw,
}

/// Where to send a packet: from the other side's RTP or RTCP socket, to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    pub from_rtcp_socket: bool,
    pub to: SocketAddr,
    pub kind: PacketKind,
}

/// chorus's view of one leg of one stream: the leg sends to this side's ports
/// and receives from them.
#[derive(Debug)]
pub struct Side {
    pub peer: PeerSpec,
    latched_rtp: Option<SocketAddr>,
    latched_rtcp: Option<SocketAddr>,
    pub rtp: RtpStats,
    pub rtcp: RtpStats,
    pub drops: [u64; DropReason::COUNT],
    dtmf: crate::media::dtmf::Detector,
}

/// What the API shows of a [`Side`].
#[derive(Debug, Clone, Serialize)]
pub struct SideReport {
    pub latched: bool,
    pub peer_rtp: Option<SocketAddr>,
    pub peer_rtcp: Option<SocketAddr>,
    pub rtp: StatsReport,
    pub rtcp_packets: u64,
    pub rtcp_bytes: u64,
    pub dropped: u64,
}

impl Side {
    /// A key press this side's RTP ends (RFC 4733, on one of the side's
    /// telephone-event types), once each: its key and how long it was held
    /// (ms, when the type's clock rate is known).
    pub fn dtmf_end(&mut self, now: Instant, packet: &[u8]) -> Option<(char, Option<u32>)> {
        // Every relayed packet comes here: its type byte decides before any parse.
        let pt = packet.get(1)? & 0x7f;
        if self.peer.dtmf_pts & (1u128 << pt) == 0 {
            return None;
        }
        let v = crate::wire::rtp::RtpView::parse(packet).ok()?;
        let d = self.dtmf.end(now, v.timestamp(), v.payload())?;
        let rate = self.peer.clock_rates.0[usize::from(pt)];
        let ms = (rate > 0).then(|| u32::from(d.duration) * 1000 / rate);
        Some((d.digit, ms))
    }

    pub fn new(peer: PeerSpec) -> Self {
        Side {
            peer,
            latched_rtp: None,
            latched_rtcp: None,
            rtp: RtpStats::default(),
            rtcp: RtpStats::default(),
            drops: [0; DropReason::COUNT],
            dtmf: Default::default(),
        }
    }

    /// New signalling for this leg: take its new addresses and learn again.
    pub fn update(&mut self, peer: PeerSpec) {
        self.peer = peer;
        self.latched_rtp = None;
        self.latched_rtcp = None;
    }

    pub fn latched(&self) -> Option<SocketAddr> {
        self.latched_rtp
    }

    /// Keeps a latch learnt elsewhere (a leg moved from a call to a conference).
    pub fn set_latched(&mut self, rtp: Option<SocketAddr>) {
        self.latched_rtp = rtp;
    }

    /// Whether a packet from `from` would pass the source checks of
    /// `receive` (RTCP on `on_rtcp_port`), without latching anything.
    pub fn would_accept(&self, from: SocketAddr, on_rtcp_port: bool) -> bool {
        let latched = if on_rtcp_port {
            self.latched_rtcp
        } else {
            self.latched_rtp
        };
        match latched {
            Some(l) => l == from,
            None => self.ip_allowed(from.ip()) || self.latched_rtp.map(|a| a.ip()) == Some(from.ip()),
        }
    }

    fn ip_allowed(&self, ip: IpAddr) -> bool {
        self.peer.any_source || Some(ip) == self.peer.sdp_ip || Some(ip) == self.peer.signal_ip
    }

    /// Validates a packet from this leg and checks its source. Latches on the
    /// first valid RTP (or raw) packet from an allowed IP.
    pub fn receive(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
        on_rtcp_port: bool,
    ) -> Result<PacketKind, DropReason> {
        let kind = classify(self.peer.kind, bytes, on_rtcp_port)?;
        match kind {
            PacketKind::Rtp | PacketKind::Raw => match self.latched_rtp {
                Some(l) if l != from => return Err(DropReason::ForeignSource),
                Some(_) => {}
                None if self.ip_allowed(from.ip()) => self.latched_rtp = Some(from),
                None => return Err(DropReason::UnknownSource),
            },
            PacketKind::Rtcp => {
                let latched = if on_rtcp_port {
                    self.latched_rtcp
                } else {
                    self.latched_rtp
                };
                match latched {
                    Some(l) if l != from => return Err(DropReason::ForeignSource),
                    Some(_) => {}
                    // RTCP may come first; it is accepted from an allowed IP
                    // (or the latched RTP IP) and latches only the RTCP port.
                    None => {
                        let rtp_ip = self.latched_rtp.map(|a| a.ip());
                        if !(self.ip_allowed(from.ip()) || rtp_ip == Some(from.ip())) {
                            return Err(DropReason::UnknownSource);
                        }
                        if on_rtcp_port {
                            self.latched_rtcp = Some(from);
                        }
                    }
                }
            }
        }
        match kind {
            PacketKind::Rtp => {
                // classify() validated it; parse again is 3 bounds checks.
                if let Ok(v) = RtpView::parse(bytes) {
                    let rate = self.peer.clock_rates.0[v.payload_type() as usize];
                    self.rtp
                        .on_rtp(now, bytes.len(), v.ssrc(), v.sequence(), v.timestamp(), rate);
                }
            }
            PacketKind::Raw => self.rtp.on_other(now, bytes.len()),
            PacketKind::Rtcp => self.rtcp.on_other(now, bytes.len()),
        }
        Ok(kind)
    }

    /// Where RTP (or raw datagrams) for this leg go.
    pub fn rtp_destination(&self) -> Option<SocketAddr> {
        self.latched_rtp.or(self.peer.rtp)
    }

    /// Where RTCP for this leg goes, and whether it leaves from the RTCP socket.
    pub fn rtcp_destination(&self) -> Option<(bool, SocketAddr)> {
        if self.peer.mux {
            return self.rtp_destination().map(|a| (false, a));
        }
        let to = self.latched_rtcp.or(self.peer.rtcp).or_else(|| {
            self.latched_rtp
                .map(|a| SocketAddr::new(a.ip(), a.port().wrapping_add(1)))
        })?;
        Some((true, to))
    }

    pub fn count_drop(&mut self, reason: DropReason) {
        self.drops[reason as usize] += 1;
    }

    pub fn report(&self, now: Instant) -> SideReport {
        SideReport {
            latched: self.latched_rtp.is_some(),
            peer_rtp: self.rtp_destination(),
            peer_rtcp: self.rtcp_destination().map(|(_, a)| a),
            rtp: self.rtp.report(now),
            rtcp_packets: self.rtcp.packets,
            rtcp_bytes: self.rtcp.bytes,
            dropped: self.drops.iter().sum(),
        }
    }
}

fn classify(kind: StreamKind, bytes: &[u8], on_rtcp_port: bool) -> Result<PacketKind, DropReason> {
    if kind == StreamKind::Raw {
        return Ok(PacketKind::Raw);
    }
    if on_rtcp_port || wire::is_rtcp(bytes) {
        rtcp::validate_compound(bytes).map_err(|_| DropReason::Malformed)?;
        return Ok(PacketKind::Rtcp);
    }
    RtpView::parse(bytes).map_err(|_| DropReason::Malformed)?;
    Ok(PacketKind::Rtp)
}

/// A stream between leg 0 and leg 1. `sides[i]` faces leg `i`.
#[derive(Debug)]
pub struct RelayStream {
    pub sides: [Side; 2],
}

impl RelayStream {
    /// A packet from leg `from_leg` arrived on that leg's side. Decides whether
    /// and where to forward it; counts it either way.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        from_leg: usize,
        from: SocketAddr,
        bytes: &[u8],
        on_rtcp_port: bool,
    ) -> Result<Forward, DropReason> {
        let (rx, tx) = split(&mut self.sides, from_leg);
        let kind = match rx.receive(now, from, bytes, on_rtcp_port) {
            Ok(k) => k,
            Err(reason) => {
                rx.count_drop(reason);
                return Err(reason);
            }
        };
        let dest = match kind {
            PacketKind::Rtp | PacketKind::Raw => tx.rtp_destination().map(|a| (false, a)),
            PacketKind::Rtcp => tx.rtcp_destination(),
        };
        match dest {
            Some((from_rtcp_socket, to)) => Ok(Forward {
                from_rtcp_socket,
                to,
                kind,
            }),
            None => {
                rx.count_drop(DropReason::NoDestination);
                Err(DropReason::NoDestination)
            }
        }
    }
}

fn split(sides: &mut [Side; 2], rx: usize) -> (&mut Side, &mut Side) {
    let [a, b] = sides;
    if rx == 0 {
        (a, b)
    } else {
        (b, a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_types_of_one_clock_make_a_mask() {
        let mut r = ClockRates([0; 128]);
        (r.0[0], r.0[8], r.0[101], r.0[111]) = (8000, 8000, 8000, 48000);
        assert_eq!(r.payload_types_at(8000), 1 | 1 << 8 | 1 << 101);
        assert_eq!(r.payload_types_at(48000), 1 << 111);
    }
    use crate::wire::rtp::write_header;

    fn peer(ip: &str, port: u16) -> PeerSpec {
        let ip: IpAddr = ip.parse().unwrap();
        PeerSpec {
            kind: StreamKind::Rtp,
            rtp: Some(SocketAddr::new(ip, port)),
            rtcp: Some(SocketAddr::new(ip, port + 1)),
            mux: false,
            sdp_ip: Some(ip),
            signal_ip: None,
            any_source: false,
            clock_rates: ClockRates::default(),
            dtmf_pts: 0,
        }
    }

    fn rtp(seq: u16) -> [u8; 172] {
        let mut b = [0u8; 172];
        write_header(&mut b, 0, seq, seq as u32 * 160, 42).unwrap();
        b
    }

    fn stream() -> RelayStream {
        RelayStream {
            sides: [Side::new(peer("10.0.0.1", 4000)), Side::new(peer("10.0.0.2", 5000))],
        }
    }

    #[test]
    fn forwards_to_sdp_address_then_latched_address() {
        let now = Instant::now();
        let mut s = stream();
        let a_nat: SocketAddr = "10.0.0.1:61000".parse().unwrap();
        let b_nat: SocketAddr = "10.0.0.2:62000".parse().unwrap();
        let f = s.handle_packet(now, 0, a_nat, &rtp(1), false).unwrap();
        assert_eq!(f.to, "10.0.0.2:5000".parse().unwrap());
        s.handle_packet(now, 1, b_nat, &rtp(1), false).unwrap();
        let f = s.handle_packet(now, 0, a_nat, &rtp(2), false).unwrap();
        assert_eq!(f.to, b_nat);
        assert_eq!(s.sides[0].latched(), Some(a_nat));
    }

    /// `would_accept` answers as `receive` would, and latches nothing.
    #[test]
    fn would_accept_agrees_with_the_source_checks() {
        let now = Instant::now();
        let mut s = stream();
        let (phone, stranger): (SocketAddr, SocketAddr) =
            ("10.0.0.1:61000".parse().unwrap(), "10.9.9.9:4000".parse().unwrap());
        let side = &s.sides[0];
        assert!(side.would_accept(phone, false) && side.would_accept(phone, true));
        assert!(!side.would_accept(stranger, false));
        assert_eq!(s.sides[0].latched(), None, "asking latches nothing");
        s.handle_packet(now, 0, phone, &rtp(1), false).unwrap();
        let same_ip: SocketAddr = "10.0.0.1:4444".parse().unwrap();
        assert!(s.sides[0].would_accept(phone, false));
        assert!(!s.sides[0].would_accept(same_ip, false), "foreign once latched");
        assert!(
            s.sides[0].would_accept(same_ip, true),
            "RTCP port not latched yet: the latched IP"
        );
    }

    proptest::proptest! {
        /// Over any sequence of packets from the phone, its IP on other
        /// ports and a stranger (and latches carried over from elsewhere),
        /// with or without `any_source`, `would_accept` predicts `receive`'s
        /// verdict on the source, for what each port carries: RTP and
        /// multiplexed RTCP on the RTP port, RTCP on the RTCP port.
        #[test]
        fn would_accept_predicts_the_source_verdict(
            any_source: bool,
            steps in proptest::collection::vec((0usize..4, 0u8..4), 1..40),
        ) {
            let now = Instant::now();
            let from = ["10.0.0.1:4000", "10.0.0.1:4001", "10.0.0.1:5555", "10.9.9.9:4000"]
                .map(|a| a.parse::<SocketAddr>().unwrap());
            let mut p = peer("10.0.0.1", 4000);
            p.any_source = any_source;
            let mut side = Side::new(p);
            let rr = [0x80, 201, 0, 1, 0, 0, 0, 42];
            for (i, (who, what)) in steps.into_iter().enumerate() {
                let (bytes, on_rtcp_port) = match what {
                    0 => (&rtp(i as u16)[..], false),
                    1 => (&rr[..], false),
                    2 => (&rr[..], true),
                    _ => {
                        side.set_latched(Some(from[who]));
                        continue;
                    }
                };
                let predicted = side.would_accept(from[who], on_rtcp_port);
                let verdict = side.receive(now, from[who], bytes, on_rtcp_port);
                let source_ok = !matches!(verdict, Err(DropReason::UnknownSource | DropReason::ForeignSource));
                proptest::prop_assert_eq!(predicted, source_ok, "step {} from {}: {:?}", i, from[who], verdict);
            }
        }
    }

    #[test]
    fn third_party_is_dropped_before_and_after_latching() {
        let now = Instant::now();
        let mut s = stream();
        let attacker: SocketAddr = "10.9.9.9:4000".parse().unwrap();
        assert_eq!(
            s.handle_packet(now, 0, attacker, &rtp(1), false),
            Err(DropReason::UnknownSource)
        );
        s.handle_packet(now, 0, "10.0.0.1:4000".parse().unwrap(), &rtp(2), false)
            .unwrap();
        // Same IP, other port: still foreign once latched.
        let same_ip: SocketAddr = "10.0.0.1:4444".parse().unwrap();
        assert_eq!(
            s.handle_packet(now, 0, same_ip, &rtp(3), false),
            Err(DropReason::ForeignSource)
        );
        assert_eq!(s.sides[0].drops.iter().sum::<u64>(), 2);
        assert_eq!(s.sides[0].rtp.packets, 1);
    }

    #[test]
    fn signalling_source_is_allowed_and_relearn_reopens() {
        let now = Instant::now();
        let mut s = stream();
        s.sides[0].peer.signal_ip = Some("192.0.2.7".parse().unwrap());
        let nat: SocketAddr = "192.0.2.7:30000".parse().unwrap();
        s.handle_packet(now, 0, nat, &rtp(1), false).unwrap();
        let moved: SocketAddr = "10.0.0.1:4100".parse().unwrap();
        assert_eq!(
            s.handle_packet(now, 0, moved, &rtp(2), false),
            Err(DropReason::ForeignSource)
        );
        let p = s.sides[0].peer.clone();
        s.sides[0].update(p);
        assert!(s.handle_packet(now, 0, moved, &rtp(3), false).is_ok());
    }

    #[test]
    fn junk_is_dropped_and_rtcp_goes_to_rtcp_port() {
        let now = Instant::now();
        let mut s = stream();
        let a: SocketAddr = "10.0.0.1:4001".parse().unwrap();
        assert_eq!(s.handle_packet(now, 0, a, b"hello", false), Err(DropReason::Malformed));
        let rr = [0x80, 201, 0, 1, 0, 0, 0, 42];
        let f = s.handle_packet(now, 0, a, &rr, true).unwrap();
        assert_eq!((f.kind, f.from_rtcp_socket), (PacketKind::Rtcp, true));
        assert_eq!(f.to, "10.0.0.2:5001".parse().unwrap());
        // The other leg multiplexes: RTCP goes to its RTP port from the RTP socket.
        s.sides[1].peer.mux = true;
        let f = s.handle_packet(now, 0, a, &rr, true).unwrap();
        assert_eq!((f.from_rtcp_socket, f.to), (false, "10.0.0.2:5000".parse().unwrap()));
    }

    #[test]
    fn hold_address_means_no_destination() {
        let now = Instant::now();
        let mut s = stream();
        s.sides[1].peer.rtp = None;
        let a: SocketAddr = "10.0.0.1:4000".parse().unwrap();
        assert_eq!(
            s.handle_packet(now, 0, a, &rtp(1), false),
            Err(DropReason::NoDestination)
        );
    }

    /// RTCP latches its own port: afterwards RTCP from any other source,
    /// even the peer's IP on another port, is dropped and never forwarded.
    #[test]
    fn rtcp_from_a_foreign_source_is_dropped_after_the_rtcp_port_latched() {
        let now = Instant::now();
        let mut s = stream();
        let rr = [0x80, 201, 0, 1, 0, 0, 0, 42];
        let a_rtcp: SocketAddr = "10.0.0.1:4001".parse().unwrap();
        assert!(s.handle_packet(now, 0, a_rtcp, &rr, true).is_ok());
        for foreign in ["10.0.0.1:4999", "10.9.9.9:4001"] {
            let from: SocketAddr = foreign.parse().unwrap();
            assert_eq!(
                s.handle_packet(now, 0, from, &rr, true),
                Err(DropReason::ForeignSource),
                "{foreign}"
            );
        }
        assert!(s.handle_packet(now, 0, a_rtcp, &rr, true).is_ok());
        // Multiplexed RTCP is held to the latched RTP address the same way.
        let a_rtp: SocketAddr = "10.0.0.1:4000".parse().unwrap();
        s.handle_packet(now, 0, a_rtp, &rtp(1), false).unwrap();
        let other: SocketAddr = "10.0.0.1:4002".parse().unwrap();
        assert_eq!(
            s.handle_packet(now, 0, other, &rr, false),
            Err(DropReason::ForeignSource)
        );
    }

    /// The first RTCP packet must come from an allowed IP (the SDP's, the
    /// signalling source's, or the latched RTP IP); a stranger's RTCP does
    /// not latch the RTCP port and is not forwarded.
    #[test]
    fn the_first_rtcp_packet_must_come_from_an_allowed_ip() {
        let now = Instant::now();
        let mut s = stream();
        let rr = [0x80, 201, 0, 1, 0, 0, 0, 42];
        let stranger: SocketAddr = "10.9.9.9:4001".parse().unwrap();
        assert_eq!(
            s.handle_packet(now, 0, stranger, &rr, true),
            Err(DropReason::UnknownSource)
        );
        // The stranger did not latch it: the real peer still can.
        let a_rtcp: SocketAddr = "10.0.0.1:4001".parse().unwrap();
        assert!(s.handle_packet(now, 0, a_rtcp, &rr, true).is_ok());
        // An IP that is neither the SDP's nor signalling's, but where RTP latched.
        let mut s = stream();
        s.sides[0].peer.any_source = true;
        let nat: SocketAddr = "198.51.100.9:7000".parse().unwrap();
        s.handle_packet(now, 0, nat, &rtp(1), false).unwrap();
        s.sides[0].peer.any_source = false;
        let nat_rtcp: SocketAddr = "198.51.100.9:7001".parse().unwrap();
        assert!(s.handle_packet(now, 0, nat_rtcp, &rr, true).is_ok());
    }

    /// Metric labels are part of the interface (dashboards, alerts).
    #[test]
    fn drop_reasons_have_their_documented_labels() {
        let labels: Vec<&str> = DropReason::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(
            labels,
            [
                "malformed",
                "unknown_source",
                "foreign_source",
                "no_destination",
                "send_failed",
                "srtp",
                "queue_full",
                "flood"
            ]
        );
    }

    /// A leg moved into a conference keeps its latch: media goes back to
    /// the learnt address, and only that address may send.
    #[test]
    fn a_latch_carried_over_is_kept() {
        let now = Instant::now();
        let nat: SocketAddr = "10.0.0.1:61000".parse().unwrap();
        let mut side = Side::new(peer("10.0.0.1", 4000));
        side.set_latched(Some(nat));
        assert_eq!(side.rtp_destination(), Some(nat));
        let other: SocketAddr = "10.0.0.1:4000".parse().unwrap();
        assert_eq!(side.receive(now, other, &rtp(1), false), Err(DropReason::ForeignSource));
        assert_eq!(side.receive(now, nat, &rtp(2), false), Ok(PacketKind::Rtp));
    }
}
