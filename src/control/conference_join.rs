//! Joining a conference: a participant from its own SDP offer, or a
//! relayed call's leg moved in on the ports it already has. Both check the
//! conference's room and its worker's load first. A participant's own offer
//! is answered with the conference's codec and, for browsers and SDES
//! phones, the keys and fingerprint they need.

use super::alloc::{free_ports, Alloc};
use super::bridge::{leg_audio, LegAudio};
use super::conference_commands::{ask_worker, attach, handle, push_event, ConfEntry, JoinOptions, Member};
use super::{lock, State};
use crate::error::Error;
use crate::media::codec;
use crate::media::conference::Controls;
use crate::media::relay::{ClockRates, PeerSpec, StreamKind};
use crate::sdp::Sdp;
use crate::session::{LocalPorts, Resources};
use crate::worker::{CallKey, Command, MemberTransport, WebRtcSpec, WorkerError};
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// Joins a participant from its SDP offer; returns chorus's SDP answer.
pub async fn join(state: &State, conf_id: &str, sdp: &str, opts: JoinOptions) -> Result<Value, Error> {
    let offer = state.parse_sdp(sdp)?;
    let handle = handle(state, conf_id)?;
    let mut e = handle.lock().await;
    if !e.alive() {
        return Err(Error::NotFound(format!("no conference `{conf_id}`")));
    }
    let (mi, m) = offer
        .media
        .iter()
        .enumerate()
        .find(|(_, m)| m.kind == "audio" && m.port != 0)
        .ok_or_else(|| Error::BadRequest("the offer has no active audio stream".into()))?;
    let spec = codec::negotiate(m).map_err(Error::BadRequest)?;
    refuse_if_overloaded(state, &e)?;
    refuse_if_full(state, &e)?;
    let iface = match &opts.interface {
        Some(n) => e
            .home
            .interfaces
            .iter()
            .position(|i| i.name == *n)
            .ok_or_else(|| Error::BadRequest(format!("no interface named `{n}`")))?,
        None => 0,
    };
    let home = e.home.clone();
    let mut alloc = Alloc::new(state, &home);
    let secured = crate::session::terminate_offer(&offer, mi, &mut alloc)?;
    let (transport, browser) = member_transport(&secured)?;
    // A browser multiplexes RTCP and is reached where ICE proves it is.
    let mux = browser || m.has_attribute("rtcp-mux");
    let ports = alloc.allocate(iface, !mux)?;
    let ip = offer.media_address(mi).filter(|a| !a.is_unspecified() && !browser);
    let peer = PeerSpec {
        kind: StreamKind::Rtp,
        rtp: ip.map(|ip| SocketAddr::new(ip, m.port)),
        rtcp: ip.map(|ip| SocketAddr::new(ip, m.rtcp().map(|r| r.0).unwrap_or(m.port.wrapping_add(1)))),
        mux,
        sdp_ip: ip,
        signal_ip: opts.received_from,
        any_source: false,
        clock_rates: ClockRates::default(),
        dtmf_pts: 0,
    };
    let pid = e.next_pid;
    let sockets = alloc.fresh.iter_mut().flat_map(|(_, _, s)| s.drain(..)).collect();
    let member = Member {
        iface,
        ports,
        spec,
        peer,
        controls: Controls::default(),
        transport,
    };
    if let Err(err) = attach(state, &mut e, pid, member, sockets, None).await {
        alloc.rollback();
        return Err(err);
    }
    super::replicate::conference_changed(state, &e);
    let mut answer = answer_sdp(&offer, mi, &spec, e.home.advertise[iface], ports, mux, e.key, pid);
    secure_answer(
        &mut answer,
        &secured,
        &state.dtls.fingerprint,
        e.home.advertise[iface],
        ports.rtp,
    );
    tracing::info!(
        conference = conf_id,
        participant = pid,
        codec = spec.name(),
        "participant joined"
    );
    push_event(
        state,
        &mut e,
        json!({ "event": "joined", "participant": pid, "codec": spec.name() }),
    );
    Ok(json!({ "participant_id": pid, "codec": spec.name(), "sdp": answer }))
}

/// Moves leg `from_tag` of relayed call `call_id` into the conference: its
/// sockets (so its ports), its codec and its latched address go along, so
/// the phone needs no re-INVITE. The rest of the call stays as it was.
pub async fn join_call_leg(state: &State, conf_id: &str, call_id: &str, from_tag: &str) -> Result<Value, Error> {
    if let Some(moved) = super::bridge::move_across_instances(state, conf_id, call_id, from_tag).await {
        return moved;
    }
    let conf = handle(state, conf_id)?;
    let mut e = conf.lock().await;
    if !e.alive() {
        return Err(Error::NotFound(format!("no conference `{conf_id}`")));
    }
    let call = lock(&state.calls)
        .get(call_id)
        .map(|(_, h)| h.clone())
        .ok_or_else(|| Error::NotFound(format!("no call `{call_id}`")))?;
    let mut c = call.lock().await;
    if !c.alive {
        return Err(Error::NotFound(format!("no call `{call_id}`")));
    }
    if !Arc::ptr_eq(&c.home, &e.home) {
        let from = c.home.adopted_from.as_ref().or(e.home.adopted_from.as_ref());
        return Err(Error::NotImplemented(format!(
            "call `{call_id}` and conference `{conf_id}` live on different addresses (one was taken over from instance `{}`); moving a leg between them is not supported yet",
            from.map_or("?", |f| f.as_str())
        )));
    }
    let LegAudio {
        leg, stream: si, spec, ..
    } = leg_audio(&c.session, call_id, from_tag)?;
    refuse_if_overloaded(state, &e)?;
    refuse_if_full(state, &e)?;
    let ports = c.session.streams[si].sides[leg].local.expect("checked above");
    let iface = c.session.legs[leg].iface;
    let detached = ask_worker(state, c.worker, |reply| Command::Detach {
        key: c.key,
        stream: si,
        side: leg,
        reply,
    })
    .await?
    .ok_or(WorkerError::NoLeg)?;
    // From here the ports belong to the conference.
    c.session.streams[si].sides[leg].local = None;
    if detached.call_emptied {
        // Every leg is in the conference now: the relayed call is over.
        let report = crate::worker::CallReport { streams: Vec::new() };
        super::calls::finish(state, &mut c, report, Vec::new(), "moved_to_conference");
    } else {
        super::replicate::call_changed(state, &c);
    }
    let pid = e.next_pid;
    let member = Member {
        iface,
        ports,
        spec,
        peer: *detached.peer,
        controls: Controls::default(),
        // leg_audio admits plain legs only.
        transport: MemberTransport::Plain,
    };
    if let Err(err) = attach(state, &mut e, pid, member, detached.sockets, detached.latched).await {
        free_ports(&e.home, iface, ports);
        return Err(err);
    }
    super::replicate::conference_changed(state, &e);
    push_event(
        state,
        &mut e,
        json!({ "event": "joined", "participant": pid, "codec": spec.name(), "call_id": call_id, "from_tag": from_tag }),
    );
    tracing::info!(
        conference = conf_id,
        participant = pid,
        call_id,
        from_tag,
        "call leg moved into conference"
    );
    Ok(json!({ "participant_id": pid, "codec": spec.name(), "moved": { "call_id": call_id, "from_tag": from_tag } }))
}

/// New participants are refused while the conference's worker is degraded
/// for overload, or when its measured tick cost leaves no room for one more
/// (`media::overload::admits`), so that the ones already in keep their audio.
fn refuse_if_overloaded(state: &State, e: &ConfEntry) -> Result<(), Error> {
    let c = &state.workers[e.worker].counters;
    if c.overloaded.load(Relaxed) != 0 {
        return Err(Error::Overloaded(format!(
            "conference `{}` is on an overloaded media worker; try again later or use another chorus instance",
            e.id
        )));
    }
    let (tick_us, participants) = (c.tick_us.load(Relaxed), c.participants.load(Relaxed));
    crate::media::overload::admits(tick_us, participants).map_err(|why| {
        Error::Overloaded(format!(
            "conference `{}` is full for this instance: {why}; use another chorus instance",
            e.id
        ))
    })
}

/// A conference at its `max_participants` takes no one else (409).
fn refuse_if_full(state: &State, e: &ConfEntry) -> Result<(), Error> {
    if e.participants.len() < e.settings.max_participants {
        return Ok(());
    }
    state.metrics.limited.with_label_values(&["participants"]).inc();
    Err(Error::Conflict(format!(
        "conference `{}` is full ({} participants)",
        e.id, e.settings.max_participants
    )))
}

#[allow(clippy::too_many_arguments)]
fn answer_sdp(
    offer: &Sdp,
    mi: usize,
    spec: &codec::CodecSpec,
    addr: IpAddr,
    ports: LocalPorts,
    mux: bool,
    key: CallKey,
    pid: u32,
) -> String {
    let fam = if addr.is_ipv6() { "IP6" } else { "IP4" };
    let mut s =
        format!("v=0\r\no=chorus {key} {pid} IN {fam} {addr}\r\ns=chorus conference\r\nc=IN {fam} {addr}\r\nt=0 0\r\n");
    for (i, m) in offer.media.iter().enumerate() {
        if i != mi {
            // RFC 3264: every offered stream gets an answer; these are refused.
            s += &format!("m={} 0 {} {}\r\n", m.kind, m.proto, m.formats.join(" "));
            continue;
        }
        let fmts = match spec.dtmf_pt {
            Some(te) => format!("{} {te}", spec.pt),
            None => spec.pt.to_string(),
        };
        s += &format!("m=audio {} {} {fmts}\r\n", ports.rtp, m.proto);
        s += &spec.sdp_lines();
        s += &format!("a=ptime:{}\r\na=sendrecv\r\n", spec.ptime_ms);
        let ssrc = crate::media::conference::participant_ssrc(key, pid);
        s += &format!("a=ssrc:{ssrc} cname:chorus-{key}\r\n");
        if mux {
            s += "a=rtcp-mux\r\n";
        } else if let Some(r) = ports.rtcp {
            s += &format!("a=rtcp:{r}\r\n");
        }
    }
    s
}

/// What the worker holds for a participant's secured offer; true for a browser.
fn member_transport(t: &crate::session::Terminated) -> Result<(MemberTransport, bool), Error> {
    use crate::session::Terminated;
    let missing = || Error::Internal("a secured offer without keys".into());
    Ok(match t {
        Terminated::Plain => (MemberTransport::Plain, false),
        Terminated::Sdes(s) => {
            let (theirs, ours) = s.keys().ok_or_else(missing)?;
            (MemberTransport::Sdes { theirs, ours }, false)
        }
        Terminated::WebRtc(w) => (MemberTransport::Webrtc(WebRtcSpec::of(w).ok_or_else(missing)?), true),
    })
}

/// Adds chorus's keys (SDES) or its ICE and DTLS lines and host candidate
/// (a browser) to the answer built for a plain participant.
fn secure_answer(answer: &mut String, t: &crate::session::Terminated, fingerprint: &str, addr: IpAddr, port: u16) {
    let (session, media) = t.answer_lines(fingerprint);
    if session.is_empty() && media.is_empty() {
        return;
    }
    let mut out = String::with_capacity(answer.len() + 512);
    for line in answer.split_inclusive("\r\n") {
        if line.starts_with("m=") && !out.contains("\r\nm=") {
            session.iter().for_each(|l| out.extend([l.as_str(), "\r\n"]));
        }
        out += line;
        if line.starts_with("m=audio ") && !line.starts_with("m=audio 0 ") {
            media.iter().for_each(|l| out.extend([l.as_str(), "\r\n"]));
            if matches!(t, crate::session::Terminated::WebRtc(_)) {
                out += &format!("a=candidate:1 1 udp 2130706431 {addr} {port} typ host\r\na=end-of-candidates\r\n");
            }
        }
    }
    *answer = out;
}
