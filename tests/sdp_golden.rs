//! Golden tests of SDP rewriting with SDP from real device types. Each case
//! under tests/sdp/<case>/ holds `input.sdp` (an offer), optional
//! `options.json`, and `expected.sdp`: the offer as chorus hands it on, with
//! chorus's ports drawn from 40000 upwards and its addresses 203.0.113.1
//! (interface 0) and 2001:db8::1 (interface 1). `CHORUS_BLESS=1` rewrites the
//! expected files; review the diff before committing.

use chorus::error::Error;
use chorus::sdp::Sdp;
use chorus::session::{LocalPorts, MuxOption, Options, Resources, Session};
use std::net::IpAddr;
use std::path::Path;

struct CountingPorts(u16);

impl Resources for CountingPorts {
    fn fingerprint(&self) -> String {
        "sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF".into()
    }

    fn key_material(&mut self, out: &mut [u8]) -> Result<(), Error> {
        // Deterministic: tests compare rewritten SDP.
        for (i, b) in out.iter_mut().enumerate() {
            *b = i as u8;
        }
        Ok(())
    }

    fn allocate(&mut self, _iface: usize, pair: bool) -> Result<LocalPorts, Error> {
        let p = self.0;
        self.0 += 2;
        Ok(LocalPorts {
            rtp: p,
            rtcp: pair.then_some(p + 1),
        })
    }
    fn release(&mut self, _iface: usize, _ports: LocalPorts) {}
}

fn options(dir: &Path) -> Options {
    let mut o = Options::default();
    let Ok(text) = std::fs::read_to_string(dir.join("options.json")) else {
        return o;
    };
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    o.remove_ice = v["ice"] == "remove";
    o.to_interface = v["to_interface"].as_u64().map(|i| i as usize);
    o.rtcp_mux = match v["rtcp_mux"].as_str() {
        Some("offer") => Some(MuxOption::Offer),
        Some("demux") => Some(MuxOption::Demux),
        _ => None,
    };
    o
}

/// Lines chorus may change; all others must survive in order.
fn touched(line: &str, remove_ice: bool) -> bool {
    let ice = ["a=ice-", "a=candidate", "a=end-of-candidates", "a=remote-candidates"];
    line.starts_with("o=")
        || line.starts_with("c=")
        || line.starts_with("m=")
        || line.starts_with("a=rtcp:")
        || line == "a=rtcp-mux"
        || (remove_ice && ice.iter().any(|p| line.starts_with(p)))
}

#[test]
fn rewritten_offers_match_their_golden_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdp");
    let advertise: [IpAddr; 2] = ["203.0.113.1".parse().unwrap(), "2001:db8::1".parse().unwrap()];
    let bless = std::env::var("CHORUS_BLESS").is_ok();
    let mut cases = 0;
    let mut dirs: Vec<_> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).collect();
    dirs.sort();
    for dir in dirs {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let input = std::fs::read_to_string(dir.join("input.sdp")).unwrap();
        let opts = options(&dir);
        let sdp = Sdp::parse(&input).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut session = Session::default();
        let (out, _) = session
            .offer("caller", &sdp, &opts, &advertise, &mut CountingPorts(40000))
            .unwrap();
        let expected_path = dir.join("expected.sdp");
        if bless {
            std::fs::write(&expected_path, &out).unwrap();
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|_| panic!("{name}: no expected.sdp"));
        assert_eq!(out, expected, "{name}: rewrite differs from its golden file");

        // Faithfulness, checked independently of the golden file.
        // An input whose last line has no line ending gets one when chorus
        // adds a line after it; nothing else about a kept line may change.
        let terminated = if input.ends_with('\n') || !out.ends_with('\n') {
            input.clone()
        } else {
            format!("{input}\r\n")
        };
        let kept_in: Vec<&str> = terminated
            .split_inclusive('\n')
            .filter(|l| !touched(l.trim_end(), opts.remove_ice))
            .collect();
        let kept_out: Vec<&str> = out
            .split_inclusive('\n')
            .filter(|l| !touched(l.trim_end(), opts.remove_ice))
            .collect();
        assert_eq!(
            kept_in, kept_out,
            "{name}: untouched lines must survive byte for byte, in order"
        );
        let reparsed = Sdp::parse(&out).unwrap();
        assert_eq!(reparsed.media.len(), sdp.media.len(), "{name}");
        for (i, m) in reparsed.media.iter().enumerate() {
            if sdp.media[i].port == 0 {
                assert_eq!(m.port, 0, "{name}: disabled stream stays disabled");
            } else {
                assert!(m.port >= 40000, "{name}: stream {i} points at chorus");
                let addr = reparsed.media_address(i).unwrap();
                if sdp.media_address(i).unwrap().is_unspecified() {
                    assert!(addr.is_unspecified(), "{name}: hold (0.0.0.0) is kept");
                } else {
                    assert!(advertise.contains(&addr), "{name}: stream {i} address");
                }
            }
        }
        cases += 1;
    }
    assert!(cases >= 10, "only {cases} golden cases");
}
