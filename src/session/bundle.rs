//! BUNDLE (RFC 8843) towards browsers: several `m=` sections on one ICE
//! and DTLS transport, one port. chorus terminates a browser's transport,
//! so it bundles the sections it terminates; the other leg keeps one port
//! per section. A section riding another's transport (a *follower*) holds
//! no ports: `SideState::bundle` names the stream whose transport it uses
//! (the *owner*, the group's first section), and the worker tells the
//! sections apart by payload type.
//!
//! - A browser offers a group: chorus answers it with the same group, the
//!   owner's port in every section, and one set of ICE and DTLS lines.
//! - chorus offers to a browser: each section gets its own port, as RFC
//!   8843 asks of an offer, plus a group; when the answer keeps the group
//!   the followers' ports are released and they ride the owner's.

use super::{webrtc::WebRtcSide, LocalPorts, Resources, StreamState};
use crate::sdp::{Media, Sdp};

/// The mids of each `a=group:BUNDLE` line at session level.
fn groups(sdp: &Sdp) -> Vec<Vec<&str>> {
    sdp.session
        .iter()
        .filter_map(|l| l.attribute())
        .filter(|(n, _)| *n == "group")
        .filter_map(|(_, v)| v?.strip_prefix("BUNDLE "))
        .map(|mids| mids.split(' ').filter(|m| !m.is_empty()).collect())
        .collect()
}

pub(super) fn mid(m: &Media) -> Option<&str> {
    m.attributes().find(|(n, _)| *n == "mid").and_then(|(_, v)| v)
}

/// A section in a group still carries media: a live port, or
/// `a=bundle-only` (port 0 by design, RFC 8843 section 6).
pub(super) fn bundle_only(m: &Media) -> bool {
    m.port == 0 && m.has_attribute("bundle-only")
}

/// The streams of `sdp`'s groups that chorus terminates as WebRTC on
/// `side`, by group, owner first. A section counts once, in the first
/// group that names it (a crafted SDP may repeat mids or share them).
fn terminated_groups(sdp: &Sdp, streams: &[StreamState], side: usize) -> Vec<Vec<usize>> {
    let mut seen = vec![false; sdp.media.len()];
    groups(sdp)
        .into_iter()
        .map(|mids| {
            mids.into_iter()
                .filter_map(|want| sdp.media.iter().position(|m| mid(m) == Some(want)))
                .filter(|&i| {
                    streams
                        .get(i)
                        .is_some_and(|st| st.enabled && st.sides[side].webrtc.is_some())
                })
                .filter(|&i| !std::mem::replace(&mut seen[i], true))
                .collect::<Vec<_>>()
        })
        .filter(|g| g.len() > 1)
        .collect()
}

/// Makes `followers` ride `owner`'s transport on `side`: one set of ICE
/// credentials and DTLS state, each keeping its own mid.
fn join(streams: &mut [StreamState], side: usize, owner: usize, followers: &[usize]) {
    let Some(w) = streams[owner].sides[side].webrtc.clone() else {
        return;
    };
    for &f in followers {
        let s = &mut streams[f].sides[side];
        let mid = s.webrtc.as_ref().and_then(|x| x.mid.clone());
        s.webrtc = Some(WebRtcSide { mid, ..w.clone() });
        s.bundle = Some(owner);
    }
}

/// A browser's SDP on `side` (its offer, or its answer keeping a group
/// chorus offered): the groups in it that chorus terminates are bundled,
/// and their followers give back any ports of their own.
pub(super) fn take_groups(sdp: &Sdp, streams: &mut [StreamState], side: usize, iface: usize, res: &mut dyn Resources) {
    for st in streams.iter_mut() {
        st.sides[side].bundle = None;
    }
    for g in terminated_groups(sdp, streams, side) {
        join(streams, side, g[0], &g[1..]);
        for &f in &g[1..] {
            if let Some(l) = streams[f].sides[side].local.take() {
                res.release(iface, l);
            }
        }
    }
}

/// The streams chorus offers bundled to a browser on side `r`: every live
/// one it terminates as WebRTC, when there are two or more. Followers take
/// the owner's ICE credentials; those already bundled keep riding the
/// owner's port, new ones keep their own until the answer takes the group.
/// Returns the group line and its members.
pub(super) fn offer_to_browser(sdp: &Sdp, streams: &mut [StreamState], r: usize) -> Option<(String, Vec<usize>)> {
    let members: Vec<usize> = (0..streams.len().min(sdp.media.len()))
        .filter(|&i| streams[i].enabled && streams[i].sides[r].webrtc.is_some())
        .collect();
    if members.len() < 2 {
        return None;
    }
    let bundled: Vec<bool> = members.iter().map(|&i| streams[i].sides[r].bundle.is_some()).collect();
    join(streams, r, members[0], &members[1..]);
    for (&i, was) in members.iter().zip(bundled) {
        if !was {
            streams[i].sides[r].bundle = None;
        }
    }
    let mids: Vec<String> = members.iter().map(|&i| offered_mid(&sdp.media[i], i)).collect();
    Some((format!("a=group:BUNDLE {}", mids.join(" ")), members))
}

/// The group lines of chorus's answer to a browser on side `o` that
/// offered them: each owner's mid, then its followers'.
pub(super) fn answer_lines(streams: &[StreamState], o: usize) -> Vec<String> {
    let mid = |i: usize| streams[i].sides[o].webrtc.as_ref().and_then(|w| w.mid.clone());
    (0..streams.len())
        .filter(|&i| streams[i].sides[o].bundle.is_none())
        .filter_map(|owner| {
            let followers = (0..streams.len()).filter(|&f| streams[f].sides[o].bundle == Some(owner));
            let mids: Vec<String> = std::iter::once(owner).chain(followers).filter_map(mid).collect();
            (mids.len() > 1).then(|| format!("a=group:BUNDLE {}", mids.join(" ")))
        })
        .collect()
}

/// The mid chorus states for stream `i` in an offer.
pub(super) fn offered_mid(m: &Media, i: usize) -> String {
    mid(m).map_or_else(|| i.to_string(), str::to_string)
}

/// chorus's ports for stream `i` on `side`: its own, or its owner's.
pub(super) fn ports(streams: &[StreamState], i: usize, side: usize) -> Option<LocalPorts> {
    let s = &streams.get(i)?.sides[side];
    match s.bundle {
        Some(owner) => streams.get(owner)?.sides[side].local,
        None => s.local,
    }
}

#[cfg(test)]
mod tests;
