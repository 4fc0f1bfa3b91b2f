//! Moving a call's leg into a conference that another instance holds. The
//! call's owner re-points the leg's media with a re-offer: the leg offers
//! again (its own last SDP, kept to the codec the call agreed on), that
//! rewritten offer joins the conference as a participant whose address is
//! the call's other side on the call's owner, and the conference's answer
//! becomes the call's answer. The phone keeps its ports and codec; its
//! media reaches the conference through the call's owner (one more hop).
//! As with a move on one instance, the call's other party hears nothing
//! from then on. Both halves are ordinary state (a call here, a participant
//! there), so both fail over like any other.

use super::calls::{self, Sdpop};
use super::forward;
use super::{lock, State};
use crate::error::Error;
use crate::media::codec;
use crate::session::Options;
use serde_json::{json, Value};

/// On the conference's owner: the call lives at `call_url`; its owner
/// bridges the leg and joins this conference over HTTP.
pub async fn via_call_owner(
    state: &State,
    conf_id: &str,
    call_id: &str,
    from_tag: &str,
    call_url: &str,
) -> Result<Value, Error> {
    let body = json!({ "call_id": call_id, "from_tag": from_tag }).to_string();
    post(
        state,
        call_url,
        &format!("/v1/conferences/{conf_id}/participants"),
        body,
    )
    .await
}

/// On the call's owner: re-points leg `from_tag` of `call_id` at conference
/// `conf_id`, which the instance at `conf_url` holds.
pub async fn leg_to_remote(
    state: &State,
    conf_id: &str,
    call_id: &str,
    from_tag: &str,
    conf_url: &str,
) -> Result<Value, Error> {
    let plan = plan(state, call_id, from_tag).await?;
    let offer = calls::negotiate(state, call_id, from_tag, Sdpop::Offer, &plan.offer, &plan.options).await?;
    let path = format!("/v1/conferences/{conf_id}/participants");
    let joined = match post(state, conf_url, &path, json!({ "sdp": offer }).to_string()).await {
        Ok(j) => j,
        Err(e) => {
            // Back to the call as it was: the other party's last answer.
            let back = Sdpop::Answer {
                to_tag: &plan.other_tag,
            };
            if let Err(r) = calls::negotiate(state, call_id, from_tag, back, &plan.other_sdp, &plan.other_options).await
            {
                tracing::error!(call_id, error = %r, "call not restored after a failed move into a remote conference");
            }
            return Err(e);
        }
    };
    let answer = joined["sdp"]
        .as_str()
        .ok_or_else(|| Error::Unavailable(format!("the conference's owner at {conf_url} answered without an SDP")))?;
    let to = Sdpop::Answer {
        to_tag: &plan.other_tag,
    };
    calls::negotiate(state, call_id, from_tag, to, answer, &plan.answer_options).await?;
    tracing::info!(
        conference = conf_id,
        call_id,
        from_tag,
        "call leg bridged into a conference on another instance"
    );
    Ok(json!({
        "participant_id": joined["participant_id"],
        "codec": joined["codec"],
        "moved": { "call_id": call_id, "from_tag": from_tag },
        "bridged_by": state.store.as_ref().map(|s| s.instance.clone()),
    }))
}

/// The conference and the call on different instances: the call's owner
/// bridges the leg (`bridge`). Requests for a conference reach its owner
/// first; it hands the move to the call's owner. `None`: both are here (or
/// neither is anywhere).
pub async fn move_across_instances(
    state: &State,
    conf_id: &str,
    call_id: &str,
    from_tag: &str,
) -> Option<Result<Value, Error>> {
    use super::forward::{route, route_conference, Route};
    let conf_here = lock(&state.conferences).contains_key(conf_id);
    let call_here = lock(&state.calls).contains_key(call_id);
    match (conf_here, call_here) {
        (true, false) => match route(state, call_id, false).await {
            Route::Owner { url, .. } => Some(via_call_owner(state, conf_id, call_id, from_tag, &url).await),
            Route::Here => None,
        },
        (false, true) => match route_conference(state, conf_id, false).await {
            Route::Owner { url, .. } => Some(leg_to_remote(state, conf_id, call_id, from_tag, &url).await),
            Route::Here => None,
        },
        _ => None,
    }
}

/// A call's leg as a conference would take it: which leg, its first active
/// audio stream, and the codec it keeps (what the call agreed on).
pub struct LegAudio<'s> {
    pub leg: usize,
    pub stream: usize,
    pub spec: codec::CodecSpec,
    /// The leg's own media section.
    pub media: &'s crate::sdp::Media,
}

pub fn leg_audio<'s>(s: &'s crate::session::Session, call_id: &str, from_tag: &str) -> Result<LegAudio<'s>, Error> {
    let leg = s
        .leg_by_tag(from_tag)
        .ok_or_else(|| Error::NotFound(format!("call `{call_id}` has no leg with tag `{from_tag}`")))?;
    let stream = s
        .streams
        .iter()
        .position(|st| st.enabled && st.media == "audio" && st.sides[leg].local.is_some())
        .ok_or_else(|| {
            Error::Conflict(format!(
                "leg `{from_tag}` of call `{call_id}` has no active audio stream"
            ))
        })?;
    let media_of = |l: usize| s.legs[l].sdp.as_ref().and_then(|sdp| sdp.media.get(stream));
    let (Some(media), Some(answer)) = (media_of(leg), media_of(1 - s.offerer)) else {
        return Err(Error::Conflict(format!("call `{call_id}` is not answered yet")));
    };
    if crate::session::Transport::of(&media.proto) != Some(crate::session::Transport::Plain) {
        return Err(Error::NotImplemented(format!(
            "leg `{from_tag}` uses {}: SRTP participants in conferences are not supported yet",
            media.proto
        )));
    }
    let agreed = codec::negotiate(answer).map_err(|m| Error::BadRequest(format!("the call's codec: {m}")))?;
    let spec = codec::negotiate_preferring(media, Some(agreed.kind)).map_err(Error::BadRequest)?;
    Ok(LegAudio {
        leg,
        stream,
        spec,
        media,
    })
}

/// What the re-offer and a rollback need.
struct Plan {
    offer: String,
    options: Options,
    other_tag: String,
    other_sdp: String,
    other_options: Options,
    /// For the conference's answer, which arrives as the other leg's.
    answer_options: Options,
}

async fn plan(state: &State, call_id: &str, from_tag: &str) -> Result<Plan, Error> {
    let handle = lock(&state.calls)
        .get(call_id)
        .map(|(_, h)| h.clone())
        .ok_or_else(|| state.not_found("call", call_id))?;
    let c = handle.lock().await;
    let s = &c.session;
    let LegAudio { leg, spec, media, .. } = leg_audio(s, call_id, from_tag)?;
    let other = 1 - leg;
    let (Some(mine), Some(theirs), Some(other_tag)) = (&s.legs[leg].sdp, &s.legs[other].sdp, &s.legs[other].tag) else {
        return Err(Error::Conflict(format!("call `{call_id}` is not answered yet")));
    };
    let keep = [Some(spec.pt.to_string()), spec.dtmf_pt.map(|p| p.to_string())];
    let strip = media
        .formats
        .iter()
        .filter(|f| !keep.iter().flatten().any(|k| k == *f))
        .cloned()
        .collect();
    let options_of = |l: usize, strip_codecs: Vec<String>| Options {
        received_from: s.legs[l].signal_ip,
        any_source: s.legs[l].any_source,
        sip_source_address: s.legs[l].sip_source,
        from_interface: Some(s.legs[l].iface),
        to_interface: Some(s.legs[1 - l].iface),
        label: s.legs[l].label.clone(),
        strip_codecs,
        ..Options::default()
    };
    Ok(Plan {
        offer: mine.text(),
        options: options_of(leg, strip),
        other_tag: other_tag.clone(),
        other_sdp: theirs.text(),
        other_options: options_of(other, Vec::new()),
        answer_options: Options {
            from_interface: Some(s.legs[other].iface),
            to_interface: Some(s.legs[leg].iface),
            label: s.legs[other].label.clone(),
            ..Options::default()
        },
    })
}

/// POSTs JSON to another instance; its error comes back as the same error.
async fn post(state: &State, url: &str, path: &str, body: String) -> Result<Value, Error> {
    let ct = Some("application/json");
    let (status, _, bytes) = forward::send(state, url, reqwest::Method::POST, path, ct, body.into_bytes()).await?;
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if status == 200 {
        return Ok(v);
    }
    let message = v["error"]["message"]
        .as_str()
        .map(|m| format!("instance at {url}: {m}"))
        .unwrap_or_else(|| format!("instance at {url} answered HTTP {status}"));
    Err(match status {
        400 => Error::BadRequest(message),
        404 => Error::NotFound(message),
        409 => Error::Conflict(message),
        429 => Error::Limit(message),
        501 => Error::NotImplemented(message),
        503 => Error::Overloaded(message),
        _ => Error::Unavailable(message),
    })
}
