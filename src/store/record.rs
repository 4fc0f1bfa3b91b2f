//! A call's record as Redis keeps it: everything needed to recreate the call
//! on the same addresses and ports. Pure data; the shell reads and writes it.

use crate::config::Interface;
use crate::session::Session;
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime};

/// Bumped when a record written by an older chorus cannot be read as is.
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallRecord {
    pub version: u32,
    pub call_id: String,
    /// The instance that holds the call's sockets.
    pub owner: String,
    /// Unix time in seconds.
    pub created: f64,
    /// The owner's interfaces, by the index the session's legs use: a taker
    /// must bind the same addresses.
    pub interfaces: Vec<Interface>,
    /// Both legs' SDP state, streams, chorus's ports and the peers' addresses.
    pub session: Session,
    /// Its audio streams and recordings, started again by a taker.
    #[serde(default)]
    pub taps: Vec<TapRecord>,
}

/// A record written straight from the call's state, without copying it.
#[derive(Serialize)]
pub struct CallRecordRef<'a> {
    pub version: u32,
    pub call_id: &'a str,
    pub owner: &'a str,
    pub created: f64,
    pub interfaces: &'a [Interface],
    pub session: &'a Session,
    pub taps: &'a [TapRecord],
}

/// A stream or recording, as a taker starts it again: the options it was
/// started with (checked again when read) under the same id.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TapRecord {
    pub id: String,
    pub kind: TapKind,
    pub options: serde_json::Value,
    /// A recording's files so far: one started again writes the next
    /// (`<id>-<part>.wav`), never over what was written before.
    #[serde(default)]
    pub part: u32,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TapKind {
    Stream,
    Recording,
    /// Started again from its beginning (a loop plays on).
    Playback,
}

impl CallRecordRef<'_> {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a record always serializes")
    }
}

impl CallRecord {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a record always serializes")
    }

    /// Reads a record, checking it is one this version understands.
    pub fn from_json(text: &str) -> Result<CallRecord, String> {
        let r: CallRecord = serde_json::from_str(text).map_err(|e| format!("unreadable call record: {e}"))?;
        if r.version != VERSION {
            return Err(format!(
                "call record version {} (this chorus reads {VERSION})",
                r.version
            ));
        }
        let legs_ok = r.session.legs.iter().all(|l| l.iface < r.interfaces.len());
        if !legs_ok {
            return Err(format!(
                "call record `{}` names an interface it does not list",
                r.call_id
            ));
        }
        Ok(r)
    }

    pub fn created_at(&self) -> SystemTime {
        time_of(self.created)
    }
}

/// The time `unix` seconds say, within 1970 and year 5138 whatever a
/// record holds.
pub fn time_of(unix: f64) -> SystemTime {
    let secs = if unix.is_finite() { unix.clamp(0.0, 1e11) } else { 0.0 };
    SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs)
}

pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::session::{LocalPorts, Options, Resources};

    struct Counter(u16);
    impl Resources for Counter {
        fn fingerprint(&self) -> String {
            "sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF"
                .into()
        }

        fn key_material(&mut self, out: &mut [u8]) -> Result<(), Error> {
            // Deterministic: tests compare rewritten SDP.
            for (i, b) in out.iter_mut().enumerate() {
                *b = i as u8;
            }
            Ok(())
        }

        fn allocate(&mut self, _: usize, pair: bool) -> Result<LocalPorts, Error> {
            self.0 += 2;
            Ok(LocalPorts {
                rtp: self.0,
                rtcp: pair.then_some(self.0 + 1),
            })
        }
        fn release(&mut self, _: usize, _: LocalPorts) {}
    }

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";
    const ANSWER: &str = "v=0\r\no=- 2 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\na=rtcp-mux\r\n";

    fn interfaces() -> Vec<Interface> {
        vec![Interface {
            name: "default".into(),
            bind: "127.0.0.1".parse().unwrap(),
            advertise: None,
        }]
    }

    fn answered() -> Session {
        let adv = ["127.0.0.1".parse().unwrap()];
        let mut s = Session::default();
        let mut ports = Counter(30000);
        let offer = crate::sdp::Sdp::parse(OFFER).unwrap();
        s.offer("a", &offer, &Options::default(), &adv, &mut ports).unwrap();
        let answer = crate::sdp::Sdp::parse(ANSWER).unwrap();
        s.answer("a", "b", &answer, &Options::default(), &adv, &mut ports)
            .unwrap();
        s
    }

    fn record() -> CallRecord {
        CallRecord {
            version: VERSION,
            call_id: "c1".into(),
            owner: "i1".into(),
            created: 1.8e9,
            interfaces: interfaces(),
            session: answered(),
            taps: vec![TapRecord {
                id: "RE01".into(),
                kind: TapKind::Recording,
                options: serde_json::json!({"format": "ogg"}),
                part: 2,
            }],
        }
    }

    #[test]
    fn a_record_without_taps_reads_as_one_with_none() {
        // As an older chorus wrote it: taps is the last field.
        let text = record().to_json();
        let cut = text.rfind(",\"taps\":").unwrap();
        let old = format!("{}}}", &text[..cut]);
        let back = CallRecord::from_json(&old).unwrap();
        assert!(back.taps.is_empty());
        assert_eq!(CallRecord::from_json(&record().to_json()).unwrap().taps, record().taps);
    }

    #[test]
    fn a_record_round_trips_and_the_restored_session_answers_alike() {
        let rec = record();
        let back = CallRecord::from_json(&rec.to_json()).unwrap();
        assert_eq!(back.to_json(), rec.to_json());
        let ports: Vec<_> = back.session.all_ports().collect();
        assert_eq!(ports, rec.session.all_ports().collect::<Vec<_>>());
        assert_eq!(back.session.legs[0].sdp.as_ref().unwrap().text(), OFFER);
        // A re-INVITE after the restore gets the same ports in its answer.
        let adv = ["127.0.0.1".parse().unwrap()];
        let offer = crate::sdp::Sdp::parse(OFFER).unwrap();
        let (mut a, mut b) = (rec.session.clone(), back.session.clone());
        let ta = a
            .offer("a", &offer, &Options::default(), &adv, &mut Counter(40000))
            .unwrap()
            .0;
        let tb = b
            .offer("a", &offer, &Options::default(), &adv, &mut Counter(40000))
            .unwrap()
            .0;
        assert_eq!(ta, tb);
    }

    #[test]
    fn foreign_or_damaged_records_are_refused_with_a_reason() {
        let mut rec = record();
        rec.version = 99;
        assert!(CallRecord::from_json(&rec.to_json())
            .unwrap_err()
            .contains("version 99"));
        rec.version = VERSION;
        rec.session.legs[1].iface = 3;
        assert!(CallRecord::from_json(&rec.to_json()).unwrap_err().contains("interface"));
        assert!(CallRecord::from_json("{\"version\":1}").is_err());
        rec.session.legs[1].iface = 0;
        // The SDP inside is parsed again, with the same checks as a request's.
        let json = rec.to_json().replace("m=audio 4000", "m=audio 99999");
        assert!(CallRecord::from_json(&json).unwrap_err().contains("99999"));
    }
}
