//! A conference's record as Redis keeps it: its settings and, per
//! participant, the ports, codec and peer needed to recreate it on the same
//! addresses. Pure data; read back with the checks a join gets.

use super::record::VERSION;
use crate::config::Interface;
use crate::media::conference::{Conference, Controls};
use crate::media::relay::PeerSpec;
use crate::session::LocalPorts;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConferenceRecord {
    pub version: u32,
    pub id: String,
    /// The instance that holds the conference; also read alone to forward
    /// commands (`control::forward`).
    pub owner: String,
    /// Unix time in seconds.
    pub created: f64,
    /// The owner's interfaces, by the index the participants use.
    pub interfaces: Vec<Interface>,
    pub sample_rate: u32,
    pub max_speakers: usize,
    pub max_participants: usize,
    /// The id the next participant gets (ids are never reused).
    pub next_pid: u32,
    pub participants: Vec<ParticipantRecord>,
    /// Its audio streams and recordings, started again by a taker.
    #[serde(default)]
    pub taps: Vec<super::record::TapRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ParticipantRecord {
    pub pid: u32,
    pub iface: usize,
    pub ports: LocalPorts,
    pub codec: CodecRecord,
    pub peer: PeerSpec,
    /// Mute, deafen and gain as the API last set them.
    #[serde(default)]
    pub controls: Controls,
    /// SDES keys, or a browser's ICE and DTLS parameters.
    #[serde(default)]
    pub transport: crate::worker::MemberTransport,
}

pub use crate::media::codec::CodecRecord;

impl ConferenceRecord {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a record always serializes")
    }

    /// Reads a record, with the checks `POST /v1/conferences` and a join
    /// make, so a damaged record cannot build what a request could not.
    pub fn from_json(text: &str) -> Result<ConferenceRecord, String> {
        let r: ConferenceRecord =
            serde_json::from_str(text).map_err(|e| format!("unreadable conference record: {e}"))?;
        if r.version != VERSION {
            return Err(format!(
                "conference record version {} (this chorus reads {VERSION})",
                r.version
            ));
        }
        let bad = |what: &str| Err(format!("conference record `{}`: {what}", r.id));
        if !Conference::RATES.contains(&r.sample_rate) || !(1..=16).contains(&r.max_speakers) {
            return bad("sample_rate or max_speakers out of range");
        }
        if r.participants.len() > r.max_participants {
            return bad("more participants than max_participants");
        }
        let mut pids = HashSet::new();
        for p in &r.participants {
            if p.iface >= r.interfaces.len() {
                return bad("a participant names an interface it does not list");
            }
            if p.pid >= r.next_pid || !pids.insert(p.pid) {
                return bad("participant ids repeat or pass next_pid");
            }
            if let Err(e) = p.codec.spec() {
                return Err(format!("conference record `{}`: {e}", r.id));
            }
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec::{CodecKind, CodecSpec};
    use crate::media::relay::{ClockRates, StreamKind};

    fn record() -> ConferenceRecord {
        let spec = CodecSpec::new(CodecKind::Pcmu, 0, 1, 20, Some(101), None).unwrap();
        ConferenceRecord {
            version: VERSION,
            id: "room".into(),
            owner: "i1".into(),
            created: 1.8e9,
            interfaces: vec![Interface {
                name: "default".into(),
                bind: "127.0.0.1".parse().unwrap(),
                advertise: None,
            }],
            sample_rate: 48000,
            max_speakers: 3,
            max_participants: 10,
            next_pid: 3,
            participants: [1, 2]
                .map(|pid| ParticipantRecord {
                    pid,
                    iface: 0,
                    ports: LocalPorts {
                        rtp: 30000 + 2 * pid as u16,
                        rtcp: None,
                    },
                    codec: CodecRecord::from(&spec),
                    peer: PeerSpec {
                        kind: StreamKind::Rtp,
                        rtp: Some("10.0.0.1:4000".parse().unwrap()),
                        rtcp: None,
                        mux: true,
                        sdp_ip: Some("10.0.0.1".parse().unwrap()),
                        signal_ip: None,
                        any_source: false,
                        clock_rates: ClockRates::default(),
                        dtmf_pts: 0,
                    },
                    controls: Controls {
                        muted: Some(pid == 2),
                        ..Controls::default()
                    },
                    transport: Default::default(),
                })
                .into(),
            taps: Vec::new(),
        }
    }

    #[test]
    fn a_record_round_trips_with_the_codecs_rates() {
        let rec = record();
        let back = ConferenceRecord::from_json(&rec.to_json()).unwrap();
        assert_eq!(back.to_json(), rec.to_json());
        let spec = back.participants[1].codec.spec().unwrap();
        assert_eq!((spec.rate, spec.clock_rate, spec.dtmf_pt), (8000, 8000, Some(101)));
    }

    #[test]
    fn damaged_records_are_refused_with_a_reason() {
        let refused = |f: &dyn Fn(&mut ConferenceRecord)| {
            let mut r = record();
            f(&mut r);
            ConferenceRecord::from_json(&r.to_json()).unwrap_err()
        };
        assert!(refused(&|r| r.version = 9).contains("version 9"));
        assert!(refused(&|r| r.sample_rate = 44100).contains("sample_rate"));
        assert!(refused(&|r| r.max_speakers = 0).contains("max_speakers"));
        assert!(refused(&|r| r.max_participants = 1).contains("max_participants"));
        assert!(refused(&|r| r.participants[0].iface = 1).contains("interface"));
        assert!(refused(&|r| r.participants[0].pid = 2).contains("repeat"));
        assert!(refused(&|r| r.next_pid = 2).contains("next_pid"));
        assert!(refused(&|r| r.participants[0].codec.ptime_ms = 25).contains("ptime:25"));
        assert!(refused(&|r| r.participants[0].codec.pt = 200).contains("payload types"));
        assert!(refused(&|r| r.participants[0].codec.audio_level_id = Some(15)).contains("extension ids"));
        assert!(ConferenceRecord::from_json("{\"version\":1}").is_err());
    }
}
