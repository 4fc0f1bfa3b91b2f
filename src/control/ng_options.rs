//! The ng dictionary's keys and flags, read into offer/answer [`Options`]:
//! what chorus honours, what it refuses with a reason, and what it ignores
//! with a warning (as rtpengine does).

use super::State;
use crate::error::Error;
use crate::session::{MuxOption, Options};
use crate::wire::bencode::Value;
use std::net::IpAddr;

/// Keys chorus reads; anything else gets a `warning`, as rtpengine does.
const KNOWN_KEYS: &[&str] = &[
    "command",
    "call-id",
    "from-tag",
    "to-tag",
    "via-branch",
    "sdp",
    "flags",
    "replace",
    "ICE",
    "rtcp-mux",
    "direction",
    "received-from",
    "media-address",
    "address-family",
    "label",
    "transport-protocol",
    "SDES",
    "DTLS",
    "codec",
    "record-call",
    "limit",
];

/// Translates ng keys and flags into offer/answer options.
pub(super) fn options(state: &State, d: &Value, warnings: &mut Vec<String>) -> Result<Options, Error> {
    let mut o = Options::default();
    behaviour_options(d, &mut o, warnings)?;
    address_options(state, d, &mut o)?;
    o.label = str_of(d, "label")?.map(str::to_string);
    media_options(d, &mut o, warnings)?;
    Ok(o)
}

/// `direction`, `received-from`, `media-address`, `address-family`.
fn address_options(state: &State, d: &Value, o: &mut Options) -> Result<(), Error> {
    let dir = strings(d, "direction")?;
    let iface = |name: &str| {
        state
            .interface_index(name)
            .ok_or_else(|| Error::BadRequest(format!("no interface named `{name}` in direction")))
    };
    if let Some(n) = dir.first() {
        o.from_interface = Some(iface(n)?);
    }
    if let Some(n) = dir.get(1) {
        o.to_interface = Some(iface(n)?);
    }
    o.received_from = match d.get("received-from") {
        None => None,
        Some(v) => {
            let parts = list_of_strings(v, "received-from")?;
            let addr = parts
                .last()
                .ok_or_else(|| Error::BadRequest("empty received-from".into()))?;
            Some(
                addr.parse()
                    .map_err(|_| Error::BadRequest(format!("received-from `{addr}` is not an IP")))?,
            )
        }
    };
    if let Some(a) = str_of(d, "media-address")? {
        let ip: IpAddr = a
            .parse()
            .map_err(|_| Error::BadRequest(format!("media-address `{a}` is not an IP")))?;
        o.media_address = Some(ip);
    }
    if let Some(family) = str_of(d, "address-family")? {
        let want_v6 = match family {
            "IP4" => false,
            "IP6" => true,
            other => {
                return Err(Error::BadRequest(format!(
                    "address-family `{other}` is neither IP4 nor IP6"
                )))
            }
        };
        let idx = o.to_interface.unwrap_or(0);
        if state.home.advertise[idx].is_ipv6() != want_v6 {
            return Err(Error::BadRequest(format!(
                "address-family {family} asked, but interface `{}` is {}",
                state.home.interfaces[idx].name,
                if want_v6 { "IPv4" } else { "IPv6" }
            )));
        }
    }
    Ok(())
}

pub(super) fn unknown_keys(d: &Value) -> Option<String> {
    let Value::Dict(items) = d else { return None };
    let unknown: Vec<String> = items
        .iter()
        .map(|(k, _)| String::from_utf8_lossy(k).to_string())
        .filter(|k| !KNOWN_KEYS.contains(&k.as_str()) && !super::ng_streams::KEYS.contains(&k.as_str()))
        .collect();
    (!unknown.is_empty()).then(|| format!("unknown keys ignored: {}", unknown.join(", ")))
}

pub(super) fn str_of<'a>(d: &'a Value, key: &str) -> Result<Option<&'a str>, Error> {
    match d.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_str()
            .map(Some)
            .ok_or_else(|| Error::BadRequest(format!("`{key}` must be a UTF-8 string"))),
    }
}

/// `flags`, `replace`, `ICE` and `rtcp-mux`.
fn behaviour_options(d: &Value, o: &mut Options, warnings: &mut Vec<String>) -> Result<(), Error> {
    for flag in strings(d, "flags")? {
        match flag.to_ascii_lowercase().as_str() {
            // chorus's behaviour already: trusts SDP addresses, latches
            // symmetrically to the exact source, drops other sources.
            "trust-address" | "symmetric" | "strict-source" | "port-latching" => {}
            "sip-source-address" => o.sip_source_address = true,
            "generate-mid" => o.generate_mid = true,
            sdes if sdes.starts_with("sdes-") => sdes_option(&flag["SDES-".len()..], o, warnings)?,
            "asymmetric" => warnings.push("flag asymmetric is not supported: chorus always latches".into()),
            "loop-protect" => warnings.push("flag loop-protect is not implemented".into()),
            other => warnings.push(format!("unknown flag `{other}` ignored")),
        }
    }
    for r in strings(d, "replace")? {
        match r.as_str() {
            "origin" => o.replace_origin = true,
            "session-connection" | "session connection" => {} // always done
            other => warnings.push(format!("unknown replace `{other}` ignored")),
        }
    }
    match str_of(d, "ICE")? {
        None | Some("default") => {}
        Some("remove") => o.remove_ice = true,
        // Towards a browser chorus is an ICE-lite agent anyway.
        Some("force") if str_of(d, "transport-protocol")?.is_some_and(|p| p.starts_with("UDP/TLS/")) => {}
        Some(other) => {
            return Err(Error::NotImplemented(format!(
                "ICE={other} is not supported: chorus is an ICE-lite agent only towards WebRTC legs (transport-protocol UDP/TLS/RTP/SAVPF); elsewhere use ICE=remove"
            )))
        }
    }
    for m in strings(d, "rtcp-mux")? {
        o.rtcp_mux = Some(match m.as_str() {
            // `require`: offered, and chorus always takes it where offered.
            "offer" | "require" => MuxOption::Offer,
            "demux" => MuxOption::Demux,
            "accept" => MuxOption::Accept,
            "reject" => MuxOption::Reject,
            other => return Err(Error::BadRequest(format!("unknown rtcp-mux value `{other}`"))),
        });
    }
    Ok(())
}

/// `transport-protocol`, `codec` and `record-call`.
fn media_options(d: &Value, o: &mut Options, warnings: &mut Vec<String>) -> Result<(), Error> {
    if let Some(tp) = str_of(d, "transport-protocol")? {
        o.transport_protocol = Some(crate::session::checked_transport(tp.to_string())?);
    }
    for s in strings(d, "SDES")? {
        sdes_option(&s, o, warnings)?;
    }
    match str_of(d, "DTLS")? {
        None | Some("off" | "no" | "disable") => {}
        Some("passive") => o.dtls = Some(crate::media::dtls::Role::Server),
        Some("active") => o.dtls = Some(crate::media::dtls::Role::Client),
        Some(other) => warnings.push(format!("DTLS={other} ignored (chorus takes passive or active)")),
    }
    if let Some(codec) = d.get("codec") {
        if let Some(v) = codec.get("strip") {
            o.strip_codecs.extend(list_of_strings(v, "strip")?);
        }
        if let Some(v) = codec.get("mask") {
            o.mask_codecs.extend(list_of_strings(v, "mask")?);
        }
        for key in ["transcode", "offer"] {
            if let Some(v) = codec.get(key) {
                o.transcode.extend(list_of_strings(v, key)?);
            }
        }
        for key in ["accept", "consume"] {
            if codec.get(key).is_some() {
                return Err(Error::NotImplemented(format!(
                    "codec-{key} is not supported: chorus takes codec-offer, codec-transcode, codec-mask and codec-strip"
                )));
            }
        }
    }
    Ok(())
}

/// One SDES choice, from the `SDES` list or an `SDES-...` flag.
fn sdes_option(s: &str, o: &mut Options, warnings: &mut Vec<String>) -> Result<(), Error> {
    if let Some(name) = s.strip_prefix("no-") {
        o.sdes.no.push(crate::session::suite(name)?);
    } else if let Some(name) = s.strip_prefix("only-") {
        o.sdes.only.push(crate::session::suite(name)?);
    } else if matches!(s, "off" | "no" | "disable" | "disabled") {
        o.sdes.off = true;
    } else {
        warnings.push(format!("SDES option `{s}` ignored"));
    }
    Ok(())
}

pub(super) fn required<'a>(d: &'a Value, key: &str) -> Result<&'a str, Error> {
    str_of(d, key)?.ok_or_else(|| Error::BadRequest(format!("missing `{key}`")))
}

/// A key whose value is a list of strings (or one string).
fn strings(d: &Value, key: &str) -> Result<Vec<String>, Error> {
    match d.get(key) {
        None => Ok(Vec::new()),
        Some(v) => list_of_strings(v, key),
    }
}

fn list_of_strings(v: &Value, key: &str) -> Result<Vec<String>, Error> {
    let bad = || Error::BadRequest(format!("`{key}` must be a list of strings"));
    match v {
        Value::Bytes(_) => Ok(vec![v.as_str().ok_or_else(bad)?.to_string()]),
        Value::List(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string).ok_or_else(bad))
            .collect(),
        _ => Err(bad()),
    }
}
