use super::{Line, Media, Sdp};
use std::fmt::Write;
use std::net::IpAddr;

/// What chorus puts into one `m=` section of the SDP it hands on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamOut {
    /// chorus's RTP port; 0 disables the stream (RFC 3264 section 6).
    pub port: u16,
    /// chorus's RTCP port (equal to `port` when only multiplexed RTCP is possible).
    pub rtcp_port: u16,
    /// Whether the section states `a=rtcp-mux`.
    pub mux: MuxOut,
    /// The transport protocol to state instead of the input's.
    pub proto: Option<String>,
    /// Lines replacing the input's transport attributes (`a=crypto`, ICE,
    /// `a=fingerprint`, `a=setup`); `None` keeps them.
    pub transport: Option<Vec<String>>,
    /// State chorus's host candidate (address and port) after them.
    pub candidate: bool,
    /// The SDP is a browser's: its `c=0.0.0.0` is a placeholder (addresses
    /// come from ICE), not hold, and is replaced like any other.
    pub from_browser: bool,
    /// Codecs chorus adds for the receiver to choose (payload type, lines).
    pub add_codecs: Vec<(String, Vec<String>)>,
    /// Formats and codec lines replacing the input's (chorus transcodes).
    pub codecs: Option<(Vec<String>, Vec<String>)>,
    /// Lines added at the end of the section (`a=mid`, for ng `generate-mid`).
    pub extra: Vec<String>,
}

impl StreamOut {
    /// A section relayed as it is but for chorus's ports and `a=rtcp-mux`.
    pub fn new(port: u16, rtcp_port: u16, mux: MuxOut) -> StreamOut {
        StreamOut {
            port,
            rtcp_port,
            mux,
            proto: None,
            transport: None,
            candidate: false,
            from_browser: false,
            add_codecs: Vec::new(),
            codecs: None,
            extra: Vec::new(),
        }
    }
}

/// What to do with `a=rtcp-mux` in one section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MuxOut {
    /// State it (adding it when the input lacks it).
    Present,
    /// Remove it.
    Absent,
}

/// Everything that changes in a rewrite; everything else stays byte for byte.
#[derive(Debug, Clone)]
pub struct Rewrite<'a> {
    /// chorus's address on the interface facing the receiver of this SDP.
    pub address: IpAddr,
    /// One entry per `m=` section, in order.
    pub streams: &'a [StreamOut],
    /// Drop ICE attributes (chorus is not an ICE agent).
    pub remove_ice: bool,
    /// The `o=` session version to state; `None` keeps the input's.
    pub origin_version: Option<u64>,
    /// Put `address` into `o=` as well.
    pub replace_origin: bool,
    /// Codecs to remove: encoding names (any case) or payload type numbers.
    pub strip_codecs: &'a [String],
    /// Session-level lines replacing the input's ICE and DTLS attributes
    /// and BUNDLE groups (`None` keeps them).
    pub session_transport: Option<Vec<String>>,
}

/// What a transport chorus terminates replaces, at either level, beside
/// the ICE attributes.
const KEY_ATTRIBUTES: &[&str] = &["crypto", "fingerprint", "setup"];

const ICE_ATTRIBUTES: &[&str] = &[
    "ice-ufrag",
    "ice-pwd",
    "ice-options",
    "ice-lite",
    "ice-mismatch",
    "ice-pacing",
    "candidate",
    "remote-candidates",
    "end-of-candidates",
];

/// Rewrites `sdp` so that media flows through chorus. `plan.streams` must
/// have one entry per `m=` section.
pub fn rewrite(sdp: &Sdp, plan: &Rewrite<'_>) -> String {
    debug_assert_eq!(sdp.media.len(), plan.streams.len());
    let mut out = String::with_capacity(sdp.session.iter().map(|l| l.text.len() + 2).sum::<usize>() * 2);
    let family = match plan.address {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    };
    let conn = format!("c=IN {family} {}", plan.address);
    for line in &sdp.session {
        match line.kind() {
            'o' => {
                let replace = plan.replace_origin.then_some((family, plan.address));
                push(&mut out, &origin(line, plan.origin_version, replace), line.eol)
            }
            'c' if !is_hold(line) => push(&mut out, &conn, line.eol),
            'a' if plan.remove_ice && is_ice(line) => {}
            // chorus's transport replaces the input's, BUNDLE groups included.
            'a' if plan.session_transport.is_some() && (is_transport(line) || is_bundle_group(line)) => {}
            _ => push(&mut out, &line.text, line.eol),
        }
    }
    if let Some(lines) = &plan.session_transport {
        let eol = sdp.session.last().map_or("\r\n", |l| l.eol);
        for l in lines {
            push(&mut out, l, eol);
        }
    }
    for (m, s) in sdp.media.iter().zip(plan.streams) {
        let mline = &m.lines[0];
        if s.port == 0 {
            // Disabled: carry the section through with port 0.
            let rest = mline.value().splitn(3, ' ').nth(2).unwrap_or_default();
            push(&mut out, &format!("m={} 0 {rest}", m.kind), mline.eol);
            for line in &m.lines[1..] {
                push(&mut out, &line.text, line.eol);
            }
            continue;
        }
        let stripped: Vec<&str> = match &s.codecs {
            Some(_) => m.formats.iter().map(String::as_str).collect(),
            None => stripped_payload_types(m, plan.strip_codecs),
        };
        push(&mut out, &m_line(m, s, &stripped), mline.eol);
        section(&mut out, m, s, plan, &stripped, (family, &conn));
    }
    out
}

/// The `m=` line: chorus's port, and the protocol and formats as changed.
fn m_line(m: &Media, s: &StreamOut, stripped: &[&str]) -> String {
    let mline = &m.lines[0];
    let unchanged = stripped.is_empty() && s.proto.is_none() && s.add_codecs.is_empty();
    let proto_and_formats = if unchanged {
        mline.value().splitn(3, ' ').nth(2).unwrap_or_default().to_string()
    } else {
        let mut kept: Vec<&str> = m
            .formats
            .iter()
            .map(String::as_str)
            .filter(|f| !stripped.contains(f))
            .collect();
        kept.extend(s.add_codecs.iter().map(|(pt, _)| pt.as_str()));
        kept.extend(s.codecs.iter().flat_map(|(f, _)| f.iter().map(String::as_str)));
        format!("{} {}", s.proto.as_deref().unwrap_or(&m.proto), kept.join(" "))
    };
    format!("m={} {} {proto_and_formats}", m.kind, s.port)
}

/// The lines of one enabled `m=` section after its `m=` line.
fn section(
    out: &mut String,
    m: &Media,
    s: &StreamOut,
    plan: &Rewrite<'_>,
    stripped: &[&str],
    (family, conn): (&str, &str),
) {
    let eol = m.lines[0].eol;
    let mut has_mux = false;
    let mut transport = s.transport.as_deref();
    for line in &m.lines[1..] {
        if !stripped.is_empty() && describes_payload_type(line, stripped) {
            continue;
        }
        if s.codecs.is_some() && matches!(line.attribute(), Some(("ptime" | "maxptime", _))) {
            continue;
        }
        match line.attribute() {
            Some((name, _)) if plan.remove_ice && ICE_ATTRIBUTES.contains(&name) => continue,
            // chorus's lines go where the first of the input's was.
            Some(("bundle-only", None)) if s.transport.is_some() => continue,
            Some((name, _)) if s.transport.is_some() && is_transport_attribute(name) => {
                for c in transport.take().unwrap_or_default() {
                    push(out, c, line.eol);
                }
                continue;
            }
            Some(("rtcp", _)) => {
                let rtcp = format!("a=rtcp:{} IN {family} {}", s.rtcp_port, plan.address);
                push(out, &rtcp, line.eol);
                continue;
            }
            Some(("rtcp-mux", None)) => {
                if s.mux == MuxOut::Present && !has_mux {
                    push(out, &line.text, line.eol);
                }
                has_mux = true;
                continue;
            }
            _ => {}
        }
        if line.kind() == 'c' && (s.from_browser || !is_hold(line)) {
            push(out, conn, line.eol);
        } else {
            push(out, &line.text, line.eol);
        }
    }
    if s.mux == MuxOut::Present && !has_mux {
        push(out, "a=rtcp-mux", eol);
    }
    let added = transport.unwrap_or_default().iter();
    let codec_lines = s
        .add_codecs
        .iter()
        .flat_map(|(_, l)| l)
        .chain(s.codecs.iter().flat_map(|(_, l)| l));
    for l in added.chain(codec_lines).chain(&s.extra) {
        push(out, l, eol);
    }
    if s.candidate {
        let c = format!("a=candidate:1 1 udp 2130706431 {} {} typ host", plan.address, s.port);
        push(out, &c, eol);
        push(out, "a=end-of-candidates", eol);
    }
}

/// `c=IN IP4 0.0.0.0` is RFC 2543 hold: "do not send to me". Kept as is, so
/// the other party stops sending instead of sending to chorus for nothing.
fn is_hold(line: &Line) -> bool {
    line.value()
        .split(' ')
        .nth(2)
        .and_then(|a| a.parse::<IpAddr>().ok())
        .is_some_and(|a| a.is_unspecified())
}

/// RFC 3551 static payload types, for stripping by name without `a=rtpmap`.
const STATIC_NAMES: &[(&str, &str)] = &[
    ("0", "PCMU"),
    ("3", "GSM"),
    ("4", "G723"),
    ("8", "PCMA"),
    ("9", "G722"),
    ("13", "CN"),
    ("18", "G729"),
];

/// The formats of `m` that `strip` names (by encoding name or number).
pub(crate) fn stripped_payload_types<'m>(m: &'m super::Media, strip: &[String]) -> Vec<&'m str> {
    if strip.is_empty() {
        return Vec::new();
    }
    let name_of = |pt: &str| -> Option<String> {
        m.attributes()
            .find_map(|(n, v)| {
                let (p, enc) = v?.split_once(' ')?;
                (n == "rtpmap" && p == pt).then(|| enc.split('/').next().unwrap_or(enc).to_string())
            })
            .or_else(|| STATIC_NAMES.iter().find(|(p, _)| *p == pt).map(|(_, n)| n.to_string()))
    };
    m.formats
        .iter()
        .map(String::as_str)
        .filter(|pt| {
            let name = name_of(pt);
            strip.iter().any(|c| {
                c == pt || c.eq_ignore_ascii_case("all") || name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(c))
            })
        })
        .collect()
}

/// `a=rtpmap:`, `a=fmtp:` and `a=rtcp-fb:` lines of a stripped payload type.
fn describes_payload_type(line: &Line, stripped: &[&str]) -> bool {
    match line.attribute() {
        Some(("rtpmap" | "fmtp" | "rtcp-fb", Some(v))) => {
            let pt = v.split(' ').next().unwrap_or_default();
            stripped.contains(&pt)
        }
        _ => false,
    }
}

fn is_ice(line: &Line) -> bool {
    matches!(line.attribute(), Some((n, _)) if ICE_ATTRIBUTES.contains(&n))
}

fn is_transport(line: &Line) -> bool {
    matches!(line.attribute(), Some((n, _)) if is_transport_attribute(n))
}

fn is_bundle_group(line: &Line) -> bool {
    matches!(line.attribute(), Some(("group", Some(v))) if v.starts_with("BUNDLE"))
}

fn is_transport_attribute(name: &str) -> bool {
    KEY_ATTRIBUTES.contains(&name) || ICE_ATTRIBUTES.contains(&name)
}

fn origin(line: &Line, version: Option<u64>, address: Option<(&str, IpAddr)>) -> String {
    if version.is_none() && address.is_none() {
        return line.text.clone();
    }
    // o=<username> <sess-id> <sess-version> <nettype> <addrtype> <address>
    let f: Vec<&str> = line.value().split(' ').collect();
    let mut s = String::from("o=");
    for (i, field) in f.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        match (i, version, address) {
            (2, Some(v), _) => {
                let _ = write!(s, "{v}");
            }
            (4, _, Some((family, _))) => s.push_str(family),
            (5, _, Some((_, addr))) => {
                let _ = write!(s, "{addr}");
            }
            _ => s.push_str(field),
        }
    }
    s
}

fn push(out: &mut String, text: &str, eol: &str) {
    // Only the input's last line may lack a line ending; a line chorus adds
    // after it (`a=rtcp-mux`) must not run on into it.
    if !out.is_empty() && !out.ends_with('\n') {
        out.push_str("\r\n");
    }
    out.push_str(text);
    out.push_str(eol);
}

impl Sdp {
    /// The `o=` session version, when it is a number.
    pub fn origin_version(&self) -> Option<u64> {
        self.origin_line()?.value().split(' ').nth(2)?.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
        m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
        a=fmtp:101 0-15\r\na=ptime:20\r\n";

    fn stripped(strip: &[&str]) -> String {
        rewritten(strip, None, false, "192.0.2.1")
    }

    fn rewritten(strip: &[&str], origin_version: Option<u64>, replace_origin: bool, address: &str) -> String {
        let sdp = Sdp::parse(OFFER).unwrap();
        let strip: Vec<String> = strip.iter().map(|s| s.to_string()).collect();
        let streams = [StreamOut::new(30000, 30001, MuxOut::Absent)];
        rewrite(
            &sdp,
            &Rewrite {
                address: address.parse().unwrap(),
                streams: &streams,
                remove_ice: false,
                origin_version,
                replace_origin,
                strip_codecs: &strip,
                session_transport: None,
            },
        )
    }

    #[test]
    fn stripped_codecs_go_with_their_lines_and_the_rest_stays() {
        let out = stripped(&["pcma", "101"]);
        assert!(out.contains("m=audio 30000 RTP/AVP 0\r\n"), "{out}");
        for gone in ["rtpmap:8", "rtpmap:101", "fmtp:101"] {
            assert!(!out.contains(gone), "{gone} in {out}");
        }
        assert!(out.contains("a=ptime:20\r\n"), "{out}");
        // Nothing stripped: every line stays, the formats as offered.
        let out = stripped(&[]);
        assert!(out.contains("m=audio 30000 RTP/AVP 0 8 101\r\n"), "{out}");
        assert!(out.contains("a=rtpmap:8 PCMA/8000\r\na=rtpmap:101"), "{out}");
        // By name, the name its rtpmap gives (not another attribute's value).
        let out = stripped(&["telephone-event"]);
        assert!(out.contains("RTP/AVP 0 8\r\n") && !out.contains("fmtp:101"), "{out}");
        // Stripping only a static codec keeps the others' lines.
        let out = stripped(&["PCMU"]);
        assert!(out.contains("RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n"), "{out}");
    }

    #[test]
    fn the_origin_gets_chorus_address_and_version_when_asked() {
        let o = |version, replace, address| rewritten(&[], version, replace, address);
        assert!(o(None, false, "192.0.2.1").contains("o=- 1 1 IN IP4 10.0.0.1\r\n"));
        assert!(o(Some(7), false, "192.0.2.1").contains("o=- 1 7 IN IP4 10.0.0.1\r\n"));
        assert!(o(None, true, "192.0.2.1").contains("o=- 1 1 IN IP4 192.0.2.1\r\n"));
        let v6 = o(None, true, "2001:db8::1");
        assert!(
            v6.contains("o=- 1 1 IN IP6 2001:db8::1\r\ns=-\r\nc=IN IP6 2001:db8::1\r\n"),
            "{v6}"
        );
    }
}
