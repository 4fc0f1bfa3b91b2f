//! A WebRTC leg (UDP/TLS/RTP/SAVPF) facing a plain one: chorus is the
//! browser's ICE-lite peer and DTLS server, and states to it its own ICE
//! credentials, certificate fingerprint and one host candidate. The
//! browser's credentials and fingerprint are kept for the worker.

use super::{Resources, SideState};
use crate::error::Error;
use crate::media::dtls::{Fingerprint, Role};
use crate::sdp::{Media, Sdp};
use serde::{Deserialize, Serialize};

/// chorus's end of a WebRTC transport towards one leg.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebRtcSide {
    /// chorus's ICE credentials, stated to the browser.
    pub ufrag: String,
    pub pwd: String,
    /// The browser's, once its SDP named them.
    pub remote_ufrag: Option<String>,
    pub remote_fingerprint: Option<Fingerprint>,
    /// The browser's `a=mid`, echoed in chorus's answer.
    pub mid: Option<String>,
    /// chorus's end of the DTLS handshake.
    #[serde(default = "server")]
    pub role: Role,
    /// The role chorus offered outright (not `actpass`), if it did.
    #[serde(default)]
    pub offered: Option<Role>,
}

fn server() -> Role {
    Role::Server
}

/// `a=setup` for chorus's answer in `role`.
pub fn answer_setup(role: Role) -> &'static str {
    match role {
        Role::Server => "passive",
        Role::Client => "active",
    }
}

/// `a=setup` of chorus's offer to a browser.
pub fn offer_setup(role: Option<Role>) -> &'static str {
    role.map_or("actpass", answer_setup)
}

impl WebRtcSide {
    fn fresh(res: &mut dyn Resources) -> Result<WebRtcSide, Error> {
        let mut r = [0u8; 16];
        res.key_material(&mut r)?;
        let hex: String = r.iter().map(|b| format!("{b:02x}")).collect();
        // ufrag 8 characters, password 24 (RFC 8445 asks at least 4 and 22).
        Ok(WebRtcSide {
            ufrag: hex[..8].to_string(),
            pwd: hex[8..].to_string(),
            remote_ufrag: None,
            remote_fingerprint: None,
            mid: None,
            role: Role::Server,
            offered: None,
        })
    }

    /// The media-level lines chorus states (its candidate is added by the
    /// rewrite, which knows the address and port).
    pub fn lines(&self, fingerprint: &str, setup: &str, mid_missing: Option<&str>) -> Vec<String> {
        let mut l = vec![
            format!("a=ice-ufrag:{}", self.ufrag),
            format!("a=ice-pwd:{}", self.pwd),
            format!("a=fingerprint:{fingerprint}"),
            format!("a=setup:{setup}"),
        ];
        if let Some(mid) = mid_missing {
            l.push(format!("a=mid:{mid}"));
        }
        l
    }
}

/// What the browser's SDP says for stream `i`: media level first, then
/// session level (Firefox states the fingerprint once for all).
fn attribute<'a>(sdp: &'a Sdp, m: &'a Media, name: &str) -> Option<&'a str> {
    m.attributes()
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v)
        .or_else(|| {
            sdp.session
                .iter()
                .filter_map(|l| l.attribute())
                .find(|(n, _)| *n == name)?
                .1
        })
}

/// Reads the browser's ICE credentials, fingerprint and mid into `side`.
fn learn_browser(sdp: &Sdp, i: usize, side: &mut WebRtcSide) -> Result<(), Error> {
    let m = &sdp.media[i];
    let bad = |what: String| Error::BadRequest(format!("stream {} ({}): {what}", i + 1, m.kind));
    let fp = attribute(sdp, m, "fingerprint").ok_or_else(|| bad("a WebRTC leg must state a=fingerprint".into()))?;
    side.remote_fingerprint = Some(Fingerprint::parse(fp).map_err(bad)?);
    let ufrag = attribute(sdp, m, "ice-ufrag").ok_or_else(|| bad("a WebRTC leg must state a=ice-ufrag".into()))?;
    if ufrag.is_empty() || ufrag.len() > 256 {
        return Err(bad("a=ice-ufrag must be 1 to 256 characters".into()));
    }
    side.remote_ufrag = Some(ufrag.to_string());
    side.mid = m
        .attributes()
        .find(|(n, _)| *n == "mid")
        .and_then(|(_, v)| v)
        .map(str::to_string);
    Ok(())
}

/// An offer from a browser to a plain leg: the browser's side gets chorus's
/// credentials (kept on a re-offer) and learns the browser's. chorus is the
/// DTLS server unless the browser insists on being it (`a=setup:passive`).
pub(super) fn offer_from_browser(
    sdp: &Sdp,
    i: usize,
    side: &mut SideState,
    res: &mut dyn Resources,
) -> Result<(), Error> {
    let mut w = match side.webrtc.take() {
        Some(w) => w,
        None => WebRtcSide::fresh(res)?,
    };
    learn_browser(sdp, i, &mut w)?;
    w.role = match attribute(sdp, &sdp.media[i], "setup") {
        Some("passive") => Role::Client,
        _ => Role::Server,
    };
    side.webrtc = Some(w);
    side.sdes = None;
    Ok(())
}

/// An offer from a plain leg to a browser: chorus's credentials now, the
/// browser's with its answer. `role` is what the proxy asked chorus to be
/// (ng `DTLS=passive|active`); without it chorus offers `actpass`.
pub(super) fn offer_to_browser(side: &mut SideState, role: Option<Role>, res: &mut dyn Resources) -> Result<(), Error> {
    if side.webrtc.is_none() {
        side.webrtc = Some(WebRtcSide::fresh(res)?);
    }
    if let Some(w) = side.webrtc.as_mut() {
        w.offered = role;
    }
    side.sdes = None;
    Ok(())
}

/// The browser's answer to chorus's offer: its `a=setup` settles who
/// starts the handshake (RFC 4145), unless chorus offered a fixed role.
pub(super) fn answer_from_browser(sdp: &Sdp, i: usize, side: &mut SideState) -> Result<(), Error> {
    let Some(w) = side.webrtc.as_mut() else {
        return Ok(());
    };
    let m = &sdp.media[i];
    w.role = match (w.offered, attribute(sdp, m, "setup")) {
        (Some(r), _) => r,
        (None, Some("passive")) => Role::Client,
        (None, Some("active") | None) => Role::Server,
        (None, Some(other)) => {
            return Err(Error::BadRequest(format!(
                "stream {} ({}): a=setup:{other} is not an answer to actpass (RFC 4145)",
                i + 1,
                m.kind
            )))
        }
    };
    learn_browser(sdp, i, w)
}
