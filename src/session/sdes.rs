//! SDES-SRTP between legs that differ (RFC 4568): a leg on RTP/SAVP facing
//! one on RTP/AVP. chorus then holds keys towards the secure leg: the leg's
//! own (from its `a=crypto`, to decrypt what it sends) and chorus's (stated
//! to it, to encrypt what it receives). Legs on the same kind of transport
//! are left alone: SRTP between them passes through untouched.
//!
//! Who offers decides the exchange. An SRTP offerer turned into plain RTP:
//! chorus picks one of its `a=crypto` lines and answers it with its own key
//! under the same tag. A plain offerer turned into SRTP: chorus offers one
//! key per suite, and the answerer's line picks one by tag.

use super::{Resources, SideState};
use crate::error::Error;
use crate::media::srtp::Key;
use crate::sdp::crypto::{Crypto, Suite};
use crate::sdp::Media;
use serde::{Deserialize, Serialize};

/// How an RTP profile protects media.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// RTP/AVP, RTP/AVPF.
    Plain,
    /// RTP/SAVP, RTP/SAVPF: keyed by SDES.
    Sdes,
    /// UDP/TLS/RTP/SAVP(F): keyed by DTLS.
    Dtls,
}

impl Transport {
    /// `None` for protocols that are not RTP profiles chorus knows.
    pub fn of(proto: &str) -> Option<Transport> {
        Some(match proto {
            "RTP/AVP" | "RTP/AVPF" => Transport::Plain,
            "RTP/SAVP" | "RTP/SAVPF" => Transport::Sdes,
            "UDP/TLS/RTP/SAVP" | "UDP/TLS/RTP/SAVPF" => Transport::Dtls,
            _ => return None,
        })
    }
}

/// The proxy's say on SDES (ng `SDES-...` flags).
#[derive(Debug, Clone, Default)]
pub struct SdesOptions {
    /// Offer no `a=crypto` (and so no SDES-SRTP at all).
    pub off: bool,
    /// Only these suites, when not empty.
    pub only: Vec<Suite>,
    /// Never these suites.
    pub no: Vec<Suite>,
}

impl SdesOptions {
    fn allows(&self, s: Suite) -> bool {
        !self.no.contains(&s) && (self.only.is_empty() || self.only.contains(&s))
    }
}

/// A crypto suite named by the proxy.
pub fn suite(name: &str) -> Result<Suite, Error> {
    Suite::from_name(name).ok_or_else(|| {
        Error::BadRequest(format!(
            "unknown crypto suite `{name}` (chorus knows {})",
            Suite::ALL.map(Suite::name).join(", ")
        ))
    })
}

pub fn suites(names: &[String]) -> Result<Vec<Suite>, Error> {
    names.iter().map(|n| suite(n)).collect()
}

/// A `transport-protocol` the proxy asked for, checked before any state changes.
pub fn checked_transport(proto: String) -> Result<String, Error> {
    match Transport::of(&proto) {
        Some(_) => Ok(proto),
        None => Err(Error::BadRequest(format!(
            "transport-protocol `{proto}` is not one of RTP/AVP, RTP/AVPF, RTP/SAVP, RTP/SAVPF, UDP/TLS/RTP/SAVP, UDP/TLS/RTP/SAVPF"
        ))),
    }
}

/// chorus's end of SDES-SRTP towards one leg.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SdesSide {
    /// chorus's keys stated to the leg: one per suite in an offer, the one
    /// in force after the answer.
    #[serde(with = "crypto_text")]
    pub ours: Vec<Crypto>,
    /// The leg's key, once its SDP named it.
    #[serde(with = "crypto_text")]
    pub theirs: Vec<Crypto>,
}

impl SdesSide {
    /// (the leg's key, chorus's key) once both are agreed.
    pub fn keys(&self) -> Option<(Key, Key)> {
        let theirs = self.theirs.first()?;
        let ours = self
            .ours
            .iter()
            .find(|c| c.tag == theirs.tag && c.suite == theirs.suite)?;
        Some((Key::from(theirs), Key::from(ours)))
    }

    /// The `a=crypto` lines chorus states to the leg.
    pub fn lines(&self) -> Vec<String> {
        self.ours.iter().map(|c| format!("a=crypto:{c}")).collect()
    }
}

/// Offer from an SRTP leg to a plain one: the offerer's side decrypts with
/// the first usable offered key, and states chorus's key under its tag.
pub(super) fn offer_from_secure(
    m: &Media,
    stream: usize,
    side: &mut SideState,
    opts: &SdesOptions,
    res: &mut dyn Resources,
) -> Result<(), Error> {
    let theirs = pick_offered(m, opts).map_err(|why| {
        Error::BadRequest(format!(
            "stream {stream} ({}): chorus cannot decrypt this leg's SRTP: {why}",
            m.kind
        ))
    })?;
    let kept = side.sdes.as_ref().and_then(|s| {
        s.ours
            .iter()
            .find(|c| c.tag == theirs.tag && c.suite == theirs.suite)
            .cloned()
    });
    let ours = match kept {
        Some(c) => c,
        None => fresh(theirs.tag, theirs.suite, res)?,
    };
    side.sdes = Some(SdesSide {
        ours: vec![ours],
        theirs: vec![theirs],
    });
    Ok(())
}

/// Offer from a plain leg to an SRTP one: one key of chorus's per allowed
/// suite (the same keys again on a re-offer). The answer picks one.
pub(super) fn offer_to_secure(side: &mut SideState, opts: &SdesOptions, res: &mut dyn Resources) -> Result<(), Error> {
    if opts.off {
        return Err(Error::BadRequest(
            "SDES is off, so an RTP/SAVP leg would get no keys: for DTLS-SRTP ask for transport-protocol UDP/TLS/RTP/SAVPF".into(),
        ));
    }
    let suites: Vec<Suite> = Suite::ALL.into_iter().filter(|s| opts.allows(*s)).collect();
    if suites.is_empty() {
        return Err(Error::BadRequest("the SDES flags allow no crypto suite".into()));
    }
    let old = side.sdes.take().map(|s| s.ours).unwrap_or_default();
    let mut ours = Vec::with_capacity(suites.len());
    for (tag, suite) in (1u32..).zip(suites) {
        match old.iter().find(|c| c.suite == suite) {
            Some(c) => ours.push(Crypto { tag, ..c.clone() }),
            None => ours.push(fresh(tag, suite, res)?),
        }
    }
    side.sdes = Some(SdesSide {
        ours,
        theirs: Vec::new(),
    });
    Ok(())
}

/// The answer of an SRTP leg to chorus's SDES offer: its `a=crypto` must
/// name one of chorus's tags with the same suite.
pub(super) fn answer_from_secure(m: &Media, stream: usize, side: &mut SideState) -> Result<(), Error> {
    let Some(sdes) = side.sdes.as_mut() else {
        return Ok(());
    };
    let mut why = Vec::new();
    for value in m.attributes().filter(|(n, _)| *n == "crypto").filter_map(|(_, v)| v) {
        match Crypto::parse(value).and_then(usable) {
            Ok(c) => match sdes.ours.iter().find(|o| o.tag == c.tag && o.suite == c.suite) {
                Some(o) => {
                    sdes.ours = vec![o.clone()];
                    sdes.theirs = vec![c];
                    return Ok(());
                }
                None => why.push(format!("tag {} {} was not offered", c.tag, c.suite.name())),
            },
            Err(e) => why.push(e),
        }
    }
    if why.is_empty() {
        why.push("it has no a=crypto".into());
    }
    Err(Error::BadRequest(format!(
        "stream {stream} ({}): the answer's SRTP keys do not match chorus's offer: {}",
        m.kind,
        why.join("; ")
    )))
}

fn pick_offered(m: &Media, opts: &SdesOptions) -> Result<Crypto, String> {
    let mut why = Vec::new();
    for value in m.attributes().filter(|(n, _)| *n == "crypto").filter_map(|(_, v)| v) {
        match Crypto::parse(value).and_then(usable) {
            Ok(c) if opts.allows(c.suite) => return Ok(c),
            Ok(c) => why.push(format!("{} is excluded by the SDES flags", c.suite.name())),
            Err(e) => why.push(e),
        }
    }
    if why.is_empty() {
        return Err("the offer has no a=crypto".into());
    }
    Err(why.join("; "))
}

/// A key chorus can terminate: libsrtp is driven without MKIs, and the
/// session parameters that weaken or change SRTP are refused, not ignored.
fn usable(c: Crypto) -> Result<Crypto, String> {
    if c.mki.is_some() {
        return Err(format!("tag {}: keys with an MKI are not supported", c.tag));
    }
    if let Some(p) = c.session_params.first() {
        return Err(format!("tag {}: session parameter {p} is not supported", c.tag));
    }
    Ok(c)
}

fn fresh(tag: u32, suite: Suite, res: &mut dyn Resources) -> Result<Crypto, Error> {
    let mut master = vec![0u8; suite.master_len()];
    res.key_material(&mut master)?;
    Ok(Crypto::ours(tag, suite, master))
}

/// Keys in a record: as their `a=crypto` values.
mod crypto_text {
    use crate::sdp::crypto::Crypto;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[Crypto], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|c| c.to_string()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Crypto>, D::Error> {
        let texts: Vec<String> = Vec::deserialize(d)?;
        texts
            .iter()
            .map(|t| Crypto::parse(t).map_err(serde::de::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests;
