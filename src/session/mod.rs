//! Offer/answer for one relayed call (RFC 3264), without I/O.
//!
//! A call has two legs (by SIP tag) and one stream per `m=` line. Each stream
//! has two *sides*: `sides[i]` is chorus's port pair facing leg `i` (leg `i`
//! sends there and receives from there) plus what leg `i`'s SDP said. An SDP
//! from leg `o` updates `sides[o]`'s peer and is rewritten to point at
//! `sides[1 - o]`'s ports, which the other leg will send to.
//!
//! Ports come from a [`Resources`], so the shell binds sockets and tests can
//! count. A failed offer or answer leaves the session unchanged: the caller
//! restores the clone it took (see `control::calls`).

use crate::error::Error;
use crate::media::relay::{ClockRates, PeerSpec, StreamKind};
use crate::sdp::{self, MuxOut, Sdp, StreamOut};
pub use codecs::Transcode;
pub use sdes::{checked_transport, suite, suites, SdesOptions, SdesSide, Transport};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
pub use transport::{terminate_offer, Terminated};
pub use webrtc::WebRtcSide;

/// chorus's ports for one side of one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalPorts {
    pub rtp: u16,
    /// `None` when the side only multiplexes RTCP (one port).
    pub rtcp: Option<u16>,
}

/// What the shell provides to offer/answer: ports, and randomness for keys.
pub trait Resources {
    /// `pair`: an even RTP port and the odd RTCP port above it; else one port.
    fn allocate(&mut self, iface: usize, pair: bool) -> Result<LocalPorts, Error>;
    fn release(&mut self, iface: usize, ports: LocalPorts);
    /// Fills `out` with key material (a CSPRNG in the shell).
    fn key_material(&mut self, out: &mut [u8]) -> Result<(), Error>;
    /// chorus's DTLS certificate fingerprint, as `a=fingerprint` states it.
    fn fingerprint(&self) -> String;
}

/// rtcp-mux handling asked for by the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MuxOption {
    /// Offer rtcp-mux to the answerer even if the offerer did not.
    Offer,
    /// Do not offer rtcp-mux to the answerer; chorus demultiplexes.
    Demux,
    /// Accept the offerer's rtcp-mux whatever the answerer said (the default).
    Accept,
    /// Refuse the offerer's rtcp-mux in the answer.
    Reject,
}

/// Options on one offer or answer.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Source address of the SIP message that carried this SDP: media from
    /// this IP may latch (NATed phones whose SDP shows a private address).
    pub received_from: Option<IpAddr>,
    pub remove_ice: bool,
    pub rtcp_mux: Option<MuxOption>,
    /// Interface facing the sender of this SDP / its receiver.
    pub from_interface: Option<usize>,
    pub to_interface: Option<usize>,
    /// Latch to the first packet from any IP (opt-in; see `media::relay`).
    pub any_source: bool,
    /// Send media to `received_from` instead of the SDP's address (ng's
    /// `SIP-source-address`, for phones that put private addresses in SDP).
    pub sip_source_address: bool,
    /// Put chorus's address into `o=` too (ng's `replace: origin`).
    pub replace_origin: bool,
    /// Address to write into the SDP instead of the interface's.
    pub media_address: Option<IpAddr>,
    /// Codecs (encoding names, case-insensitive, or payload type numbers)
    /// removed from the SDP handed on.
    pub strip_codecs: Vec<String>,
    /// A name for the leg that sent this SDP, shown in queries.
    pub label: Option<String>,
    /// The RTP profile to state to the receiver of this offer (ng
    /// `transport-protocol`): RTP/SAVP towards a plain leg makes chorus
    /// encrypt, RTP/AVP towards an SRTP leg makes it decrypt.
    pub transport_protocol: Option<String>,
    pub sdes: SdesOptions,
    /// Give every offered `m=` section without `a=mid` one (its index; ng
    /// `generate-mid`), as WebRTC peers expect.
    pub generate_mid: bool,
    /// chorus's DTLS role towards a browser this offer goes to (ng
    /// `DTLS=passive|active`); `None` offers `actpass`.
    pub dtls: Option<crate::media::dtls::Role>,
    /// Codecs added to an offer for the answerer to choose; chorus
    /// transcodes when it picks one the offerer did not offer (ng
    /// `codec-transcode`).
    pub transcode: Vec<String>,
    /// Codecs removed from the offer handed on but still accepted from the
    /// offerer: chorus transcodes (ng `codec-mask`).
    pub mask_codecs: Vec<String>,
}

// Session and its parts are serialized into the call's record in Redis.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Leg {
    pub tag: Option<String>,
    pub label: Option<String>,
    pub iface: usize,
    pub signal_ip: Option<IpAddr>,
    pub any_source: bool,
    /// Media goes to `signal_ip`, not to the SDP's address.
    pub sip_source: bool,
    /// The leg's last SDP, as it sent it (its codecs, for moving it into a conference).
    #[serde(with = "sdp::as_text")]
    pub sdp: Option<Sdp>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SideState {
    pub local: Option<LocalPorts>,
    /// What this side's leg said in its last SDP; `None` before it spoke.
    pub peer: Option<PeerSpec>,
    /// The leg's SDP offered or stated rtcp-mux.
    pub mux_stated: bool,
    /// chorus offered rtcp-mux to this leg.
    pub mux_offered: bool,
    /// chorus's SDES-SRTP towards this leg, when it differs from the other.
    #[serde(default)]
    pub sdes: Option<SdesSide>,
    /// chorus's ICE-lite and DTLS-SRTP towards this leg (a browser).
    #[serde(default)]
    pub webrtc: Option<WebRtcSide>,
    /// This side rides stream N's transport (BUNDLE): no ports of its own.
    #[serde(default)]
    pub bundle: Option<usize>,
}

impl SideState {
    /// No transport of chorus's own towards this leg: relayed as it is.
    fn clear(&mut self) {
        self.sdes = None;
        self.webrtc = None;
        self.bundle = None;
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamState {
    pub media: String,
    pub kind: StreamKind,
    pub enabled: bool,
    pub sides: [SideState; 2],
    /// The codecs chorus converts between, when the legs share none.
    #[serde(default)]
    pub transcode: Option<Transcode>,
}

/// The `o=` versions chorus stated towards one leg (RFC 3264 section 8:
/// a changed SDP gets a higher version, an unchanged one the same).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct OriginTrack {
    last: Option<(String, u64)>,
}

impl OriginTrack {
    fn next(&mut self, input_version: Option<u64>, text: &str) -> Option<u64> {
        let v = input_version?;
        let out = match &self.last {
            Some((t, last)) if t == text => *last,
            Some((_, last)) => v.max(last + 1),
            None => v,
        };
        self.last = Some((text.to_string(), out));
        Some(out)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Session {
    pub legs: [Leg; 2],
    /// The leg whose offer is outstanding or was last answered.
    pub offerer: usize,
    pub offered: bool,
    pub answered: bool,
    pub streams: Vec<StreamState>,
    origins: [OriginTrack; 2],
}

/// Which sides' peers changed in the last offer/answer, for the worker.
#[derive(Debug, Clone, Copy)]
pub struct Change {
    /// The leg whose SDP was just applied: its side learns its source again.
    pub relearn_leg: usize,
}

impl Session {
    /// The leg that sends this offer: the first offer names leg 0; re-offers
    /// may come from either leg (re-INVITE from caller or callee).
    fn offering_leg(&mut self, from_tag: &str) -> Result<usize, Error> {
        match &self.legs {
            [Leg { tag: None, .. }, _] => {
                self.legs[0].tag = Some(from_tag.to_string());
                Ok(0)
            }
            [Leg { tag: Some(a), .. }, _] if a == from_tag => Ok(0),
            [_, Leg { tag: Some(b), .. }] if b == from_tag => Ok(1),
            [Leg { tag: Some(a), .. }, _] => Err(Error::Conflict(format!(
                "offer from tag `{from_tag}`, but the call's legs are `{a}`{}",
                match &self.legs[1].tag {
                    Some(b) => format!(" and `{b}`"),
                    None => " (not answered yet)".into(),
                }
            ))),
        }
    }

    fn apply_interfaces(&mut self, from: usize, opts: &Options) -> Result<(), Error> {
        for (leg, want) in [(from, opts.from_interface), (1 - from, opts.to_interface)] {
            let Some(iface) = want else { continue };
            let has_ports = self.streams.iter().any(|s| s.sides[leg].local.is_some());
            if has_ports && self.legs[leg].iface != iface {
                return Err(Error::BadRequest(
                    "a leg's interface cannot change once it has ports; delete the call first".into(),
                ));
            }
            self.legs[leg].iface = iface;
        }
        let leg = &mut self.legs[from];
        if let Some(ip) = opts.received_from {
            leg.signal_ip = Some(ip);
        }
        leg.any_source = opts.any_source;
        leg.sip_source = opts.sip_source_address;
        if opts.label.is_some() {
            leg.label = opts.label.clone();
        }
        Ok(())
    }

    /// Applies an offer from `from_tag`; returns the rewritten SDP for the
    /// other leg. `advertise[i]` is interface `i`'s address.
    pub fn offer(
        &mut self,
        from_tag: &str,
        sdp: &Sdp,
        opts: &Options,
        advertise: &[IpAddr],
        ports: &mut dyn Resources,
    ) -> Result<(String, Change), Error> {
        check_options(sdp, opts)?;
        let o = self.offering_leg(from_tag)?;
        let r = 1 - o;
        if sdp.media.len() < self.streams.len() {
            // Well-formed, but not against this call's state: a conflict.
            return Err(Error::Conflict(format!(
                "offer has {} m= lines but the call has {}; streams are disabled with port 0, never removed (RFC 3264 section 8.2)",
                sdp.media.len(),
                self.streams.len()
            )));
        }
        self.apply_interfaces(o, opts)?;
        self.legs[o].sdp = Some(sdp.clone());
        let mut outs = Vec::with_capacity(sdp.media.len());
        for (i, m) in sdp.media.iter().enumerate() {
            if i == self.streams.len() {
                self.streams.push(StreamState::new(&m.kind, m.is_rtp()));
            }
            let peer = peer_spec(sdp, i, &self.legs[o]);
            // Its own ports, or those of the stream whose transport it rides.
            let held = bundle::ports(&self.streams, i, r);
            let st = &mut self.streams[i];
            if st.media != m.kind {
                return Err(Error::BadRequest(format!(
                    "m= line {} changed media type from {} to {}",
                    i + 1,
                    st.media,
                    m.kind
                )));
            }
            st.sides[o].mux_stated = m.has_attribute("rtcp-mux");
            st.sides[o].peer = Some(peer);
            if m.port == 0 && !bundle::bundle_only(m) {
                st.disable(&self.legs, ports);
                outs.push(disabled());
                continue;
            }
            st.enabled = true;
            let offer_mux = st.kind == StreamKind::Rtp
                && match opts.rtcp_mux {
                    Some(MuxOption::Offer) => true,
                    Some(MuxOption::Demux) => false,
                    _ => st.sides[o].mux_stated,
                };
            let local = match held {
                Some(l) => l,
                None => {
                    // The answerer may refuse rtcp-mux, so an RTP stream gets a pair.
                    let l = ports.allocate(self.legs[r].iface, st.kind == StreamKind::Rtp)?;
                    st.sides[r].local = Some(l);
                    l
                }
            };
            // A lone port can only carry RTCP multiplexed; raw UDP has no RTCP.
            st.sides[r].mux_offered = st.kind == StreamKind::Rtp && (offer_mux || local.rtcp.is_none());
            outs.push(offered_stream(sdp, i, st, o, local, opts, ports)?);
        }
        bundle::take_groups(sdp, &mut self.streams, o, self.legs[o].iface, ports);
        let groups = self.bundle_offer(sdp, r, &mut outs, opts, ports);
        self.offerer = o;
        self.offered = true;
        let text = self.render(sdp, r, &outs, opts, advertise, groups);
        Ok((text, Change { relearn_leg: o }))
    }

    /// Applies the answer to the outstanding offer; returns the rewritten SDP
    /// for the offerer.
    pub fn answer(
        &mut self,
        from_tag: &str,
        to_tag: &str,
        sdp: &Sdp,
        opts: &Options,
        advertise: &[IpAddr],
        ports: &mut dyn Resources,
    ) -> Result<(String, Change), Error> {
        let o = self.offerer;
        if !self.offered || self.legs[o].tag.as_deref() != Some(from_tag) {
            return Err(Error::Conflict(format!(
                "answer to an offer from tag `{from_tag}`, but no such offer was made in this call"
            )));
        }
        let a = 1 - o;
        check_options(sdp, opts)?;
        if sdp.media.len() != self.streams.len() {
            return Err(Error::Conflict(format!(
                "answer has {} m= lines but the offer had {} (RFC 3264 section 6)",
                sdp.media.len(),
                self.streams.len()
            )));
        }
        // A second answer with another to-tag is another fork; the latest wins.
        self.legs[a].tag = Some(to_tag.to_string());
        self.apply_interfaces(a, opts)?;
        self.legs[a].sdp = Some(sdp.clone());
        self.allocate_bundle_owners(o, ports)?;
        let mut outs = Vec::with_capacity(sdp.media.len());
        for (i, m) in sdp.media.iter().enumerate() {
            let mut peer = peer_spec(sdp, i, &self.legs[a]);
            let held = bundle::ports(&self.streams, i, o);
            let st = &mut self.streams[i];
            if !st.enabled || m.port == 0 {
                st.sides[a].peer = Some(peer);
                st.disable(&self.legs, ports);
                outs.push(disabled());
                continue;
            }
            peer.mux = m.has_attribute("rtcp-mux") && st.sides[a].mux_offered;
            st.sides[a].mux_stated = peer.mux;
            st.sides[a].peer = Some(peer);
            let accept_mux = st.sides[o].mux_stated && opts.rtcp_mux != Some(MuxOption::Reject);
            if let Some(p) = &mut st.sides[o].peer {
                p.mux = accept_mux;
            }
            let local = match held {
                Some(l) => l,
                None => {
                    let l = ports.allocate(self.legs[o].iface, st.kind == StreamKind::Rtp && !accept_mux)?;
                    st.sides[o].local = Some(l);
                    l
                }
            };
            let mut out = stream_out(
                local,
                st.kind == StreamKind::Rtp && (accept_mux || local.rtcp.is_none()),
            );
            let offered = self.legs[o]
                .sdp
                .as_ref()
                .and_then(|s| s.media.get(i))
                .map(|m| m.proto.as_str());
            let t = transport::on_answer(sdp, i, st, o, offered, ports)?;
            if t.ice {
                out.mux = MuxOut::Present;
            }
            (out.proto, out.transport, out.candidate, out.from_browser) = (t.proto, t.lines, t.ice, t.from_browser);
            let offer_media = self.legs[o].sdp.as_ref().and_then(|s| s.media.get(i));
            st.transcode = match offer_media {
                Some(om) if m.kind == "audio" && st.kind == StreamKind::Rtp => codecs::transcoding(om, m, o)?,
                _ => None,
            };
            out.codecs = st.transcode.map(|t| t.sdp_for(o));
            outs.push(out);
        }
        bundle::take_groups(sdp, &mut self.streams, a, self.legs[a].iface, ports);
        self.answered = true;
        let groups = bundle::answer_lines(&self.streams, o);
        let text = self.render(sdp, o, &outs, opts, advertise, groups);
        Ok((text, Change { relearn_leg: a }))
    }

    /// Offers the streams chorus terminates towards a browser on side `r`
    /// as one BUNDLE group: the group line, and each member's mid and
    /// (shared) ICE and DTLS lines.
    fn bundle_offer(
        &mut self,
        sdp: &Sdp,
        r: usize,
        outs: &mut [StreamOut],
        opts: &Options,
        res: &dyn Resources,
    ) -> Vec<String> {
        let Some((group, members)) = bundle::offer_to_browser(sdp, &mut self.streams, r) else {
            return Vec::new();
        };
        let setup = webrtc::offer_setup(opts.dtls);
        for i in members {
            let (m, out) = (&sdp.media[i], &mut outs[i]);
            out.transport = self.streams[i].sides[r]
                .webrtc
                .as_ref()
                .map(|w| w.lines(&res.fingerprint(), setup, None));
            let mid = format!("a=mid:{}", bundle::offered_mid(m, i));
            if bundle::mid(m).is_none() && !out.extra.contains(&mid) {
                out.extra.push(mid);
            }
        }
        vec![group]
    }

    /// Before an answer: the port of each bundle chorus answers a browser
    /// with on side `o` (one port, rtcp-mux: RFC 8843 requires it).
    fn allocate_bundle_owners(&mut self, o: usize, res: &mut dyn Resources) -> Result<(), Error> {
        for i in 0..self.streams.len() {
            let Some(owner) = self.streams[i].sides[o].bundle else {
                continue;
            };
            if self.streams.get(owner).is_some_and(|s| s.sides[o].local.is_none()) {
                self.streams[owner].sides[o].local = Some(res.allocate(self.legs[o].iface, false)?);
            }
        }
        Ok(())
    }

    fn render(
        &mut self,
        sdp: &Sdp,
        to_leg: usize,
        outs: &[StreamOut],
        opts: &Options,
        advertise: &[IpAddr],
        groups: Vec<String>,
    ) -> String {
        // Masked codecs leave the offer handed on, not the answer.
        let masked = !opts.mask_codecs.is_empty() && to_leg != self.offerer;
        let strip: Vec<String> = match masked {
            true => opts.strip_codecs.iter().chain(&opts.mask_codecs).cloned().collect(),
            false => opts.strip_codecs.clone(),
        };
        let mut plan = sdp::Rewrite {
            address: opts.media_address.unwrap_or(advertise[self.legs[to_leg].iface]),
            streams: outs,
            remove_ice: opts.remove_ice,
            origin_version: None,
            replace_origin: opts.replace_origin,
            strip_codecs: &strip,
            session_transport: session_transport(outs, groups),
        };
        let text = sdp::rewrite(sdp, &plan);
        plan.origin_version = self.origins[to_leg].next(sdp.origin_version(), &text);
        match plan.origin_version {
            Some(v) if Some(v) != sdp.origin_version() => sdp::rewrite(sdp, &plan),
            _ => text,
        }
    }

    /// Every port the call holds, with its interface (for release on delete).
    pub fn all_ports(&self) -> impl Iterator<Item = (usize, LocalPorts)> + '_ {
        self.streams
            .iter()
            .flat_map(move |s| (0..2).filter_map(move |i| s.sides[i].local.map(|l| (self.legs[i].iface, l))))
    }

    /// chorus's ports for stream `i` on `side`: its own, or those of the
    /// stream whose transport it rides (BUNDLE).
    pub fn side_ports(&self, i: usize, side: usize) -> Option<LocalPorts> {
        bundle::ports(&self.streams, i, side)
    }

    /// The payload types either leg's SDP names for stream `i` (bit n for
    /// type n): what marks its RTP on a bundled transport.
    pub fn payload_types(&self, i: usize) -> u128 {
        let formats = self.legs.iter().filter_map(|l| l.sdp.as_ref()?.media.get(i));
        formats
            .flat_map(|m| &m.formats)
            .filter_map(|f| f.parse::<u8>().ok())
            .filter(|pt| *pt < 128)
            .fold(0, |mask, pt| mask | 1u128 << pt)
    }

    /// The leg with this tag, if any.
    pub fn leg_by_tag(&self, tag: &str) -> Option<usize> {
        self.legs.iter().position(|l| l.tag.as_deref() == Some(tag))
    }
}

impl StreamState {
    fn new(media: &str, rtp: bool) -> Self {
        let side = SideState::default();
        StreamState {
            media: media.to_string(),
            kind: if rtp { StreamKind::Rtp } else { StreamKind::Raw },
            enabled: false,
            sides: [side.clone(), side],
            transcode: None,
        }
    }

    fn disable(&mut self, legs: &[Leg; 2], ports: &mut dyn Resources) {
        self.enabled = false;
        for (i, side) in self.sides.iter_mut().enumerate() {
            side.clear();
            if let Some(l) = side.local.take() {
                ports.release(legs[i].iface, l);
            }
        }
    }
}

/// What chorus states for stream `i` of an offer from leg `o`: its
/// transport (SRTP, WebRTC), codecs to transcode to, a generated `a=mid`.
fn offered_stream(
    sdp: &Sdp,
    i: usize,
    st: &mut StreamState,
    o: usize,
    local: LocalPorts,
    opts: &Options,
    res: &mut dyn Resources,
) -> Result<StreamOut, Error> {
    let m = &sdp.media[i];
    let t = transport::on_offer(sdp, i, st, o, opts, res)?;
    // A browser needs rtcp-mux (RFC 8829), and chorus is its ICE peer.
    st.sides[1 - o].mux_offered |= t.ice;
    let mut out = stream_out(local, st.sides[1 - o].mux_offered);
    (out.proto, out.transport, out.candidate, out.from_browser) = (t.proto, t.lines, t.ice, t.from_browser);
    if m.kind == "audio" && st.kind == StreamKind::Rtp {
        out.add_codecs = codecs::added(m, &opts.transcode)?;
    }
    if opts.generate_mid && !m.has_attribute("mid") {
        out.extra.push(format!("a=mid:{i}"));
    }
    let masked: Vec<String> = opts.strip_codecs.iter().chain(&opts.mask_codecs).cloned().collect();
    if sdp::stripped_payload_types(m, &masked).len() == m.formats.len() && out.add_codecs.is_empty() {
        return Err(Error::BadRequest(format!(
            "masking codecs {:?} leaves stream {} ({}) with none; add one to transcode to",
            opts.mask_codecs,
            i + 1,
            m.kind
        )));
    }
    Ok(out)
}

/// Session-level transport lines: `a=ice-lite` when chorus is the
/// receiver's ICE peer; the input's ICE and DTLS lines go wherever chorus
/// terminates a transport.
/// A BUNDLE group chorus states (`groups`) goes with them.
fn session_transport(outs: &[StreamOut], groups: Vec<String>) -> Option<Vec<String>> {
    if outs.iter().any(|o| o.candidate) {
        return Some(std::iter::once("a=ice-lite".to_string()).chain(groups).collect());
    }
    outs.iter().any(|o| o.transport.is_some()).then_some(groups)
}

/// Stripping every codec of a live stream would leave an invalid `m=` line.
fn check_options(sdp: &Sdp, opts: &Options) -> Result<(), Error> {
    codecs::check_names(&opts.transcode)?;
    for (i, m) in sdp.media.iter().enumerate() {
        if m.port != 0 && sdp::stripped_payload_types(m, &opts.strip_codecs).len() == m.formats.len() {
            return Err(Error::BadRequest(format!(
                "stripping codecs {:?} would leave stream {} ({}) with none",
                opts.strip_codecs,
                i + 1,
                m.kind
            )));
        }
    }
    Ok(())
}

fn disabled() -> StreamOut {
    StreamOut::new(0, 0, MuxOut::Absent)
}

fn stream_out(local: LocalPorts, mux: bool) -> StreamOut {
    let mux = if mux { MuxOut::Present } else { MuxOut::Absent };
    StreamOut::new(local.rtp, local.rtcp.unwrap_or(local.rtp), mux)
}

/// What leg `leg`'s SDP says about stream `i`.
fn peer_spec(sdp: &Sdp, i: usize, leg: &Leg) -> PeerSpec {
    let m = &sdp.media[i];
    // 0.0.0.0 (RFC 2543 hold) or no address: nowhere to send.
    let sdp_ip = sdp.media_address(i).filter(|ip| !ip.is_unspecified());
    let ip = match (leg.sip_source, leg.signal_ip) {
        (true, Some(sig)) if sdp_ip.is_some() => Some(sig),
        _ => sdp_ip,
    };
    let rtp = ip.filter(|_| m.port != 0).map(|ip| SocketAddr::new(ip, m.port));
    let rtcp = match m.rtcp() {
        Some((port, addr)) => addr
            .filter(|_| !leg.sip_source)
            .or(ip)
            .map(|ip| SocketAddr::new(ip, port)),
        None => rtp.and_then(|a| a.port().checked_add(1).map(|p| SocketAddr::new(a.ip(), p))),
    };
    let mut clock_rates = ClockRates::default();
    for (pt, rate) in m.rtpmap_rates() {
        clock_rates.0[pt as usize] = rate;
    }
    let dtmf_pts = m
        .attributes()
        .filter_map(|(n, v)| {
            let (pt, enc) = v.filter(|_| n == "rtpmap")?.split_once(' ')?;
            let te = enc.to_ascii_lowercase().starts_with("telephone-event/");
            te.then(|| pt.parse::<u8>().ok()).flatten().filter(|pt| *pt < 128)
        })
        .fold(0u128, |mask, pt| mask | 1 << pt);
    PeerSpec {
        kind: if m.is_rtp() { StreamKind::Rtp } else { StreamKind::Raw },
        rtp,
        rtcp,
        mux: m.has_attribute("rtcp-mux"),
        sdp_ip: ip,
        signal_ip: leg.signal_ip,
        any_source: leg.any_source,
        clock_rates,
        dtmf_pts,
    }
}

impl PeerSpec {
    /// A leg that has not sent SDP yet: nothing may latch, nowhere to send.
    pub fn unknown(kind: StreamKind) -> Self {
        PeerSpec {
            kind,
            rtp: None,
            rtcp: None,
            mux: false,
            sdp_ip: None,
            signal_ip: None,
            any_source: false,
            clock_rates: ClockRates::default(),
            dtmf_pts: 0,
        }
    }
}

mod bundle;
mod codecs;
mod sdes;
#[cfg(test)]
mod tests;
mod transport;
mod webrtc;
