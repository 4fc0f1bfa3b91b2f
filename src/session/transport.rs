//! Which transport each leg of a stream gets, decided per offer and answer:
//! the same on both legs passes through untouched; SDES-SRTP against plain
//! RTP and WebRTC against plain RTP are terminated by chorus on the secure
//! leg (`sdes`, `webrtc`). The result says what the rewritten SDP states.

use super::sdes::{self, SdesOptions, SdesSide, Transport};
use super::webrtc::WebRtcSide;
use super::{webrtc, Options, Resources, SideState, StreamState};
use crate::error::Error;
use crate::sdp::Sdp;

/// How one stream's transport lines are rewritten for the SDP's receiver.
#[derive(Debug, Default)]
pub(super) struct TransportOut {
    /// The profile to state instead of the input's.
    pub proto: Option<String>,
    /// Lines replacing the input's transport attributes (keys, ICE, DTLS);
    /// `None` keeps them.
    pub lines: Option<Vec<String>>,
    /// chorus is the receiver's ICE-lite peer: state a host candidate and
    /// rtcp-mux.
    pub ice: bool,
    /// The SDP came from a browser (its `c=0.0.0.0` is no hold).
    pub from_browser: bool,
}

/// Stream `i` of an offer from leg `o`.
pub(super) fn on_offer(
    sdp: &Sdp,
    i: usize,
    st: &mut StreamState,
    o: usize,
    opts: &Options,
    res: &mut dyn Resources,
) -> Result<TransportOut, Error> {
    let m = &sdp.media[i];
    let Some(from) = Transport::of(&m.proto) else {
        // Not an RTP profile (or one chorus does not know): left as it is.
        return Ok(TransportOut::default());
    };
    let to_proto = opts.transport_protocol.as_deref().unwrap_or(&m.proto);
    let to = Transport::of(to_proto).ok_or_else(|| {
        Error::BadRequest(format!(
            "transport-protocol `{to_proto}` is not an RTP profile chorus knows"
        ))
    })?;
    let proto = (to_proto != m.proto).then(|| to_proto.to_string());
    let r = 1 - o;
    let out = |lines, ice| TransportOut {
        proto: proto.clone(),
        lines,
        ice,
        from_browser: from == Transport::Dtls,
    };
    match (from, to) {
        (Transport::Sdes, Transport::Plain) => {
            sdes::offer_from_secure(m, i + 1, &mut st.sides[o], &opts.sdes, res)?;
            st.sides[r].clear();
            Ok(out(Some(Vec::new()), false))
        }
        (Transport::Plain, Transport::Sdes) => {
            sdes::offer_to_secure(&mut st.sides[r], &opts.sdes, res)?;
            st.sides[o].clear();
            Ok(out(st.sides[r].sdes.as_ref().map(sdes::SdesSide::lines), false))
        }
        (Transport::Dtls, Transport::Plain) => {
            webrtc::offer_from_browser(sdp, i, &mut st.sides[o], res)?;
            st.sides[r].clear();
            Ok(out(Some(Vec::new()), false))
        }
        (Transport::Plain, Transport::Dtls) => {
            webrtc::offer_to_browser(&mut st.sides[r], opts.dtls, res)?;
            st.sides[o].clear();
            let w = st.sides[r].webrtc.as_ref().map(|w| w.lines(&res.fingerprint(), webrtc::offer_setup(opts.dtls), None));
            Ok(out(w, true))
        }
        // Asked for explicitly (without the flag, two browsers' SDP passes
        // through as it is, as two SDES legs' does).
        (Transport::Dtls, Transport::Dtls) if opts.transport_protocol.is_some() => {
            // Two browsers: chorus is each one's ICE peer and DTLS server,
            // so media flows through it (decrypted, encrypted again).
            webrtc::offer_from_browser(sdp, i, &mut st.sides[o], res)?;
            webrtc::offer_to_browser(&mut st.sides[r], opts.dtls, res)?;
            let w = st.sides[r].webrtc.as_ref().map(|w| w.lines(&res.fingerprint(), webrtc::offer_setup(opts.dtls), None));
            Ok(out(w, true))
        }
        // An SDES phone and a browser: chorus holds keys on both legs.
        (Transport::Sdes, Transport::Dtls) => {
            sdes::offer_from_secure(m, i + 1, &mut st.sides[o], &opts.sdes, res)?;
            webrtc::offer_to_browser(&mut st.sides[r], opts.dtls, res)?;
            let w = st.sides[r].webrtc.as_ref().map(|w| w.lines(&res.fingerprint(), webrtc::offer_setup(opts.dtls), None));
            Ok(out(w, true))
        }
        (Transport::Dtls, Transport::Sdes) => {
            webrtc::offer_from_browser(sdp, i, &mut st.sides[o], res)?;
            sdes::offer_to_secure(&mut st.sides[r], &opts.sdes, res)?;
            Ok(out(st.sides[r].sdes.as_ref().map(sdes::SdesSide::lines), false))
        }
        (a, b) if a != b => Err(Error::NotImplemented(format!(
            "stream {} ({}): bridging {} to {to_proto} is not supported yet (chorus bridges RTP/SAVP and UDP/TLS/RTP/SAVPF to plain RTP)",
            i + 1,
            m.kind,
            m.proto
        ))),
        _ => {
            st.sides[o].clear();
            st.sides[r].clear();
            Ok(out(None, false))
        }
    }
}

/// Stream `i` of an answer from leg `1 - o` to an offer whose stream had
/// profile `offered`.
pub(super) fn on_answer(
    sdp: &Sdp,
    i: usize,
    st: &mut StreamState,
    o: usize,
    offered: Option<&str>,
    res: &dyn Resources,
) -> Result<TransportOut, Error> {
    let m = &sdp.media[i];
    let a = 1 - o;
    let back = offered.filter(|p| *p != m.proto).map(str::to_string);
    let out = |lines, ice| TransportOut {
        proto: back.clone(),
        lines,
        ice,
        from_browser: Transport::of(&m.proto) == Some(Transport::Dtls),
    };
    // First what the answerer's SDP settles for its own side...
    if st.sides[a].webrtc.is_some() {
        webrtc::answer_from_browser(sdp, i, &mut st.sides[a])?;
    } else if st.sides[a].sdes.is_some() {
        if Transport::of(&m.proto) == Some(Transport::Plain) {
            // The answerer declined SRTP but kept the stream: it goes plain.
            st.sides[a].sdes = None;
        } else {
            sdes::answer_from_secure(m, i + 1, &mut st.sides[a])?;
        }
    }
    // ...then what the offerer is told.
    if let Some(s) = &st.sides[o].sdes {
        // chorus decrypts the offerer: it answers with its own key.
        return Ok(out(Some(s.lines()), false));
    }
    if let Some(w) = &st.sides[o].webrtc {
        // chorus is the offering browser's ICE-lite peer and DTLS end.
        let mid_missing = w.mid.as_deref().filter(|_| !m.has_attribute("mid"));
        let setup = webrtc::answer_setup(w.role);
        return Ok(out(Some(w.lines(&res.fingerprint(), setup, mid_missing)), true));
    }
    let answerer_terminated = st.sides[a].webrtc.is_some() || st.sides[a].sdes.is_some();
    Ok(out(answerer_terminated.then(Vec::new), false))
}

/// What chorus holds towards a conference participant: the mixer needs its
/// audio in the clear, so a secured offer is always terminated.
#[derive(Debug, Clone)]
pub enum Terminated {
    Plain,
    Sdes(SdesSide),
    WebRtc(WebRtcSide),
}

impl Terminated {
    /// Session-level and media-level lines for chorus's answer (a host
    /// candidate, for a browser, is the caller's to add).
    pub fn answer_lines(&self, fingerprint: &str) -> (Vec<String>, Vec<String>) {
        match self {
            Terminated::Plain => (Vec::new(), Vec::new()),
            Terminated::Sdes(s) => (Vec::new(), s.lines()),
            Terminated::WebRtc(w) => (
                vec!["a=ice-lite".into()],
                w.lines(fingerprint, webrtc::answer_setup(w.role), w.mid.as_deref()),
            ),
        }
    }
}

/// Stream `i` of a conference participant's offer.
pub fn terminate_offer(sdp: &Sdp, i: usize, res: &mut dyn Resources) -> Result<Terminated, Error> {
    let m = &sdp.media[i];
    let mut side = SideState::default();
    let internal = || Error::Internal("terminated transport without state".into());
    match Transport::of(&m.proto) {
        Some(Transport::Plain) => Ok(Terminated::Plain),
        Some(Transport::Sdes) => {
            sdes::offer_from_secure(m, i + 1, &mut side, &SdesOptions::default(), res)?;
            Ok(Terminated::Sdes(side.sdes.ok_or_else(internal)?))
        }
        Some(Transport::Dtls) => {
            webrtc::offer_from_browser(sdp, i, &mut side, res)?;
            Ok(Terminated::WebRtc(side.webrtc.ok_or_else(internal)?))
        }
        None => Err(Error::NotImplemented(format!(
            "transport {} is not supported in conferences (RTP/AVP, RTP/SAVP and UDP/TLS/RTP/SAVPF are)",
            m.proto
        ))),
    }
}
