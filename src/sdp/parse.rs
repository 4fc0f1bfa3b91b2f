use super::SdpError;
use std::net::IpAddr;

/// One SDP line: its text without the line ending, and the ending it had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub text: String,
    /// `"\r\n"`, `"\n"`, or `""` for a last line without one.
    pub eol: &'static str,
    /// 1-based line number in the input, for error messages.
    pub number: usize,
}

impl Line {
    /// The line's type letter and value: `a=rtcp-mux` is `('a', "rtcp-mux")`.
    pub fn kind(&self) -> char {
        self.text.as_bytes()[0] as char // parse() guarantees `x=`
    }
    pub fn value(&self) -> &str {
        &self.text[2..]
    }
    /// For `a=name:value` or `a=name`, the name and optional value.
    pub fn attribute(&self) -> Option<(&str, Option<&str>)> {
        if self.kind() != 'a' {
            return None;
        }
        Some(match self.value().split_once(':') {
            Some((n, v)) => (n, Some(v)),
            None => (self.value(), None),
        })
    }
}

/// A `c=` line's address. Hostnames are refused at parse time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connection {
    pub addr: IpAddr,
}

/// One `m=` section: the `m=` line first, then its own lines.
#[derive(Debug, Clone)]
pub struct Media {
    pub lines: Vec<Line>,
    pub kind: String,
    pub port: u16,
    pub proto: String,
    pub formats: Vec<String>,
}

/// A parsed SDP: session-level lines, then media sections.
#[derive(Debug, Clone)]
pub struct Sdp {
    pub session: Vec<Line>,
    pub media: Vec<Media>,
}

/// Longest SDP accepted; real ones are a few KB (a video offer with many codecs ~8 KB).
pub const MAX_SDP_BYTES: usize = 64 * 1024;

impl Sdp {
    pub fn parse(input: &str) -> Result<Sdp, SdpError> {
        if input.len() > MAX_SDP_BYTES {
            return Err(SdpError::new(
                0,
                "",
                format!("SDP is {} bytes, more than {MAX_SDP_BYTES}", input.len()),
            ));
        }
        let mut lines = Vec::new();
        let mut rest = input;
        let mut number = 0;
        while !rest.is_empty() {
            number += 1;
            let (raw, eol, next) = match rest.find('\n') {
                Some(i) if i > 0 && rest.as_bytes()[i - 1] == b'\r' => (&rest[..i - 1], "\r\n", &rest[i + 1..]),
                Some(i) => (&rest[..i], "\n", &rest[i + 1..]),
                None => (rest, "", ""),
            };
            rest = next;
            let b = raw.as_bytes();
            if b.len() < 2 || !b[0].is_ascii_lowercase() || b[1] != b'=' {
                if raw.trim().is_empty() && rest.trim().is_empty() {
                    break; // trailing blank lines
                }
                return Err(SdpError::new(number, raw, "not a `<letter>=<value>` line"));
            }
            lines.push(Line {
                text: raw.to_string(),
                eol,
                number,
            });
        }
        let first = lines.first().ok_or_else(|| SdpError::new(0, "", "SDP is empty"))?;
        if first.text != "v=0" {
            return Err(SdpError::new(first.number, &first.text, "SDP must start with `v=0`"));
        }
        let mut sdp = Sdp {
            session: Vec::new(),
            media: Vec::new(),
        };
        for line in lines {
            if line.kind() == 'm' {
                sdp.media.push(parse_media_line(line)?);
            } else if let Some(m) = sdp.media.last_mut() {
                m.lines.push(line);
            } else {
                sdp.session.push(line);
            }
        }
        sdp.validate()?;
        Ok(sdp)
    }

    fn validate(&self) -> Result<(), SdpError> {
        let origin = self
            .session
            .iter()
            .find(|l| l.kind() == 'o')
            .ok_or_else(|| SdpError::new(0, "", "no `o=` line"))?;
        if origin.value().split(' ').count() != 6 {
            return Err(SdpError::new(origin.number, &origin.text, "`o=` needs 6 fields"));
        }
        for line in self.session.iter().chain(self.media.iter().flat_map(|m| &m.lines)) {
            if line.kind() == 'c' {
                parse_connection(line)?;
            }
            if let Some(("rtcp", Some(v))) = line.attribute() {
                parse_rtcp(v).ok_or_else(|| SdpError::new(line.number, &line.text, "invalid `a=rtcp` port"))?;
            }
        }
        let session_c = self.session_connection();
        for m in &self.media {
            if m.port != 0 && session_c.is_none() && m.connection().is_none() {
                let l = &m.lines[0];
                return Err(SdpError::new(
                    l.number,
                    &l.text,
                    "no `c=` line for this stream or the session",
                ));
            }
        }
        Ok(())
    }

    /// The SDP as it was parsed, byte for byte.
    pub fn text(&self) -> String {
        let lines = self.session.iter().chain(self.media.iter().flat_map(|m| &m.lines));
        lines.fold(String::new(), |mut out, l| {
            out.push_str(&l.text);
            out.push_str(l.eol);
            out
        })
    }

    pub fn origin_line(&self) -> Option<&Line> {
        self.session.iter().find(|l| l.kind() == 'o')
    }

    pub fn session_connection(&self) -> Option<Connection> {
        connection_of(&self.session)
    }

    /// The address a stream's media goes to: its own `c=`, else the session's.
    pub fn media_address(&self, index: usize) -> Option<IpAddr> {
        let m = self.media.get(index)?;
        m.connection().or(self.session_connection()).map(|c| c.addr)
    }
}

impl Media {
    pub fn connection(&self) -> Option<Connection> {
        connection_of(&self.lines)
    }

    pub fn attributes(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.lines.iter().filter_map(|l| l.attribute())
    }

    pub fn has_attribute(&self, name: &str) -> bool {
        self.attributes().any(|(n, _)| n == name)
    }

    /// `a=rtcp:<port> [IN IP4 <addr>]` (RFC 3605).
    pub fn rtcp(&self) -> Option<(u16, Option<IpAddr>)> {
        self.attributes()
            .find(|(n, _)| *n == "rtcp")
            .and_then(|(_, v)| parse_rtcp(v?))
    }

    /// Whether the stream carries RTP (`RTP/AVP`, `RTP/SAVPF`, `UDP/TLS/RTP/SAVPF`...).
    pub fn is_rtp(&self) -> bool {
        self.proto.split('/').any(|p| p == "RTP")
    }

    /// Clock rates from `a=rtpmap:<pt> <name>/<rate>`.
    pub fn rtpmap_rates(&self) -> impl Iterator<Item = (u8, u32)> + '_ {
        self.attributes().filter_map(|(n, v)| {
            if n != "rtpmap" {
                return None;
            }
            let (pt, enc) = v?.split_once(' ')?;
            let rate = enc.split('/').nth(1)?.trim().parse().ok()?;
            let pt: u8 = pt.trim().parse().ok()?;
            (pt < 128).then_some((pt, rate))
        })
    }
}

fn parse_media_line(line: Line) -> Result<Media, SdpError> {
    let mut f = line.value().split(' ').filter(|s| !s.is_empty());
    let err = |r: &str| SdpError::new(line.number, &line.text, r);
    let kind = f.next().ok_or_else(|| err("`m=` has no media type"))?.to_string();
    let port_field = f.next().ok_or_else(|| err("`m=` has no port"))?;
    let port_str = port_field.split('/').next().unwrap_or(port_field);
    let port = port_str
        .parse::<u16>()
        .map_err(|_| err("`m=` port is not a number 0..65535"))?;
    let proto = f
        .next()
        .ok_or_else(|| err("`m=` has no transport protocol"))?
        .to_string();
    let formats: Vec<String> = f.map(str::to_string).collect();
    if formats.is_empty() {
        return Err(err("`m=` lists no formats"));
    }
    Ok(Media {
        lines: vec![line],
        kind,
        port,
        proto,
        formats,
    })
}

fn parse_connection(line: &Line) -> Result<Connection, SdpError> {
    let err = |r: &str| SdpError::new(line.number, &line.text, r);
    let mut f = line.value().split(' ');
    if f.next() != Some("IN") {
        return Err(err("`c=` network type must be IN"));
    }
    let family = f.next().ok_or_else(|| err("`c=` has no address type"))?;
    let addr = f.next().ok_or_else(|| err("`c=` has no address"))?;
    // Multicast suffixes (`/ttl/count`) are dropped: chorus relays unicast.
    let addr = addr.split('/').next().unwrap_or(addr);
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| err("`c=` address is not an IP address (hostnames are not supported)"))?;
    match (family, ip) {
        ("IP4", IpAddr::V4(_)) | ("IP6", IpAddr::V6(_)) => Ok(Connection { addr: ip }),
        ("IP4" | "IP6", _) => Err(err("`c=` address does not match its address type")),
        _ => Err(err("`c=` address type must be IP4 or IP6")),
    }
}

fn connection_of(lines: &[Line]) -> Option<Connection> {
    // validate() has checked every c= line.
    lines
        .iter()
        .find(|l| l.kind() == 'c')
        .and_then(|l| parse_connection(l).ok())
}

fn parse_rtcp(v: &str) -> Option<(u16, Option<IpAddr>)> {
    let mut f = v.split(' ');
    let port = f.next()?.trim().parse().ok()?;
    let addr = match (f.next(), f.next(), f.next()) {
        (Some("IN"), Some(_), Some(a)) => a.parse().ok(),
        _ => None,
    };
    Some((port, addr))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BASIC: &str = "v=0\r\no=- 1 2 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=rtcp:4001\r\n";

    #[test]
    fn parses_sections() {
        let s = Sdp::parse(BASIC).unwrap();
        assert_eq!(s.session.len(), 5);
        assert_eq!(s.media[0].port, 4000);
        assert_eq!(s.media[0].formats, ["0", "101"]);
        assert_eq!(s.media_address(0), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(s.media[0].rtcp(), Some((4001, None)));
        assert_eq!(s.media[0].rtpmap_rates().collect::<Vec<_>>(), [(101, 8000)]);
        // RTP payload types are 7 bits: 127 is one, 128 is not.
        let high = BASIC.replace("a=rtcp:4001", "a=rtpmap:127 x/9000\r\na=rtpmap:128 y/9000");
        let s = Sdp::parse(&high).unwrap();
        assert_eq!(
            s.media[0].rtpmap_rates().collect::<Vec<_>>(),
            [(101, 8000), (127, 9000)]
        );
    }

    #[test]
    fn errors_name_the_line() {
        let e = Sdp::parse(&BASIC.replace("m=audio 4000", "m=audio 99999")).unwrap_err();
        assert_eq!(e.line, 6);
        assert!(e.to_string().contains("m=audio 99999"), "{e}");
        let e = Sdp::parse(&BASIC.replace("c=IN IP4 10.0.0.1", "c=IN IP4 pbx.example.com")).unwrap_err();
        assert_eq!(e.line, 4);
        assert!(e.reason.contains("hostnames"));
        let e = Sdp::parse(&BASIC.replace("c=IN IP4 10.0.0.1\r\n", "")).unwrap_err();
        assert!(e.reason.contains("no `c=`"));
        let e = Sdp::parse("v=0\r\nhello\r\n").unwrap_err();
        assert_eq!((e.line, e.text.as_str()), (2, "hello"));
        assert!(Sdp::parse("").is_err());
        // Empty and one-letter lines inside are errors, not out-of-bounds reads.
        for (bad, line) in [("\n", 2), ("\r\n", 2), ("x\r\n", 2), ("\nx", 2)] {
            let e = Sdp::parse(&format!("v=0\r\n{bad}{}", &BASIC[5..])).unwrap_err();
            assert_eq!(e.line, line, "{bad:?}: {e}");
            assert!(e.reason.contains("not a `<letter>=<value>` line"), "{e}");
        }
        let e = Sdp::parse(&BASIC.replace("c=IN IP4 10.0.0.1", "c=IN IP4 ::1")).unwrap_err();
        assert!(e.reason.contains("does not match its address type"), "{e}");
        let e = Sdp::parse(&BASIC.replace("c=IN IP4 10.0.0.1", "c=IN IPX 10.0.0.1")).unwrap_err();
        assert!(e.reason.contains("must be IP4 or IP6"), "{e}");
        // `s=` with nothing after it is a line (some phones send it).
        assert!(Sdp::parse(&BASIC.replace("s=-", "s=")).is_ok());
    }

    #[test]
    fn size_limit_is_exact() {
        let pad = |total: usize| {
            let filler = total - BASIC.len() - "a=x:\r\n".len();
            format!("{BASIC}a=x:{}\r\n", "y".repeat(filler))
        };
        assert!(Sdp::parse(&pad(MAX_SDP_BYTES)).is_ok());
        let e = Sdp::parse(&pad(MAX_SDP_BYTES + 1)).unwrap_err();
        assert!(e.reason.contains("more than 65536"), "{e}");
    }

    #[test]
    fn rtp_profiles_are_told_from_other_transports() {
        let proto = |p: &str| Sdp::parse(&BASIC.replace("RTP/AVP", p)).unwrap().media[0].is_rtp();
        for p in ["RTP/AVP", "RTP/SAVPF", "UDP/TLS/RTP/SAVPF"] {
            assert!(proto(p), "{p}");
        }
        for p in ["udp", "UDP/BFCP", "TCP/MSRP"] {
            assert!(!proto(p), "{p}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,300}") {
            let _ = Sdp::parse(&s);
        }

        #[test]
        fn mutated_sdp_never_panics(cut in 0..BASIC.len(), junk in "[ -~]{0,12}") {
            if BASIC.is_char_boundary(cut) {
                let s = format!("{}{}{}", &BASIC[..cut], junk, &BASIC[cut..]);
                if let Ok(p) = Sdp::parse(&s) {
                    for i in 0..p.media.len() { let _ = (p.media_address(i), p.media[i].rtcp()); }
                    // What a record in Redis keeps: the text, byte for byte.
                    prop_assert_eq!(p.text(), s);
                }
            }
        }
    }
}
