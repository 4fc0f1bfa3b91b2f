//! Transcoding in offer/answer: codecs chorus adds to an offer for the
//! answerer to choose from (ng `codec-transcode`), and, when the answer
//! picks one the offerer did not offer, the pair of codecs the worker
//! converts between. A call whose answer picks an offered codec is relayed
//! as it is, at the plain relay's cost.

use crate::error::Error;
use crate::media::codec::{self, CodecKind, CodecSpec};
use crate::sdp::Media;
use serde::{Deserialize, Serialize};

/// The codec each leg sends and receives, when they differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transcode {
    /// `codecs[leg]`: what leg `leg` uses.
    pub codecs: [CodecSpec; 2],
}

/// A codec named by the proxy.
fn kind(name: &str) -> Result<CodecKind, Error> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "pcmu" => CodecKind::Pcmu,
        "pcma" => CodecKind::Pcma,
        "g722" => CodecKind::G722,
        "opus" => CodecKind::Opus,
        _ => {
            return Err(Error::BadRequest(format!(
                "codec `{name}` cannot be transcoded: chorus transcodes PCMU, PCMA, G722 and opus"
            )))
        }
    })
}

/// Refuses a codec chorus cannot transcode wherever it is named: on an
/// answer, or an offer with no audio, it would otherwise pass unnoticed.
pub(super) fn check_names(names: &[String]) -> Result<(), Error> {
    names.iter().try_for_each(|n| kind(n).map(drop))
}

/// Whether the stream offers `k` (by rtpmap name, or the static type).
fn offers(m: &Media, k: CodecKind) -> bool {
    let mut one = m.clone();
    m.formats.iter().any(|f| {
        one.formats = vec![f.clone()];
        codec::negotiate(&one).is_ok_and(|c| c.kind == k)
    })
}

/// Payload type numbers and SDP lines to add to an offer's stream so the
/// answerer may pick any of `names` (those already offered are skipped).
pub(super) fn added(m: &Media, names: &[String]) -> Result<Vec<(String, Vec<String>)>, Error> {
    let mut used: Vec<u8> = m.formats.iter().filter_map(|f| f.parse().ok()).collect();
    let mut free = || (96u8..=127).find(|pt| !used.contains(pt)).inspect(|pt| used.push(*pt));
    let te_clocks: Vec<u32> = m
        .attributes()
        .filter(|(n, _)| *n == "rtpmap")
        .filter_map(|(_, v)| {
            v?.split_once(' ')?
                .1
                .to_ascii_lowercase()
                .strip_prefix("telephone-event/")?
                .parse()
                .ok()
        })
        .collect();
    let mut out = Vec::new();
    for name in names {
        let k = kind(name)?;
        if offers(m, k)
            || out
                .iter()
                .any(|(_, l): &(String, Vec<String>)| l[0].contains(rtpmap_name(k)))
        {
            continue;
        }
        let pt = match k {
            CodecKind::Pcmu => 0,
            CodecKind::Pcma => 8,
            CodecKind::G722 => 9,
            CodecKind::Opus => free().ok_or_else(|| Error::BadRequest("no free payload type for opus".into()))?,
        };
        let mut lines = vec![format!("a=rtpmap:{pt} {}", rtpmap_name(k))];
        if k == CodecKind::Opus {
            lines.push(format!("a=fmtp:{pt} minptime=10;useinbandfec=1"));
        }
        out.push((pt.to_string(), lines));
        // DTMF on the added codec's clock, when the offer has it on another.
        let clock = k.clock_rate();
        if !te_clocks.is_empty()
            && !te_clocks.contains(&clock)
            && !out
                .iter()
                .any(|(_, l)| l[0].ends_with(&format!("telephone-event/{clock}")))
        {
            if let Some(te) = free() {
                out.push((
                    te.to_string(),
                    vec![
                        format!("a=rtpmap:{te} telephone-event/{clock}"),
                        format!("a=fmtp:{te} 0-15"),
                    ],
                ));
            }
        }
    }
    Ok(out)
}

fn rtpmap_name(k: CodecKind) -> &'static str {
    match k {
        CodecKind::Pcmu => "PCMU/8000",
        CodecKind::Pcma => "PCMA/8000",
        CodecKind::G722 => "G722/8000",
        CodecKind::Opus => "opus/48000/2",
    }
}

/// The codecs to convert between when the answer picked one the offer did
/// not have; `None` when the legs share the answer's codec (or chorus does
/// not know it: then it relays as it is).
pub(super) fn transcoding(offer: &Media, answer: &Media, offerer: usize) -> Result<Option<Transcode>, Error> {
    let Ok(answered) = codec::negotiate(answer) else {
        return Ok(None);
    };
    if offers(offer, answered.kind) {
        return Ok(None);
    }
    let offered = codec::negotiate(offer)
        .map_err(|e| Error::BadRequest(format!("the answer's {} needs transcoding, but {e}", answered.name())))?;
    // Audio levels are not forwarded across a transcoder.
    let plain = |c: CodecSpec| CodecSpec {
        audio_level_id: None,
        ..c
    };
    let mut codecs = [plain(answered), plain(answered)];
    codecs[offerer] = plain(offered);
    Ok(Some(Transcode { codecs }))
}

impl Transcode {
    /// The formats and lines of leg `leg`'s codec, for the SDP it receives.
    pub fn sdp_for(&self, leg: usize) -> (Vec<String>, Vec<String>) {
        let c = &self.codecs[leg];
        let mut formats = vec![c.pt.to_string()];
        formats.extend(c.dtmf_pt.map(|t| t.to_string()));
        let mut lines: Vec<String> = c.sdp_lines().lines().map(str::to_string).collect();
        lines.push(format!("a=ptime:{}", c.ptime_ms));
        (formats, lines)
    }
}
