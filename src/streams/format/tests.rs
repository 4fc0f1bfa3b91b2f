use super::*;
use std::time::Instant;

fn meta(stereo: bool, rate: u32) -> Meta {
    Meta {
        stream_id: "MZ1".into(),
        call_id: "call".into(),
        party: Some("a".into()),
        tracks: vec![Track::Inbound, Track::Outbound],
        custom: Map::new(),
        rate,
        stereo,
    }
}

fn frame(track: Track, rate: u32, value: i16) -> Frame {
    Frame {
        track,
        rate,
        len: (rate / 50) as usize,
        pcm: [value; crate::media::tap::FRAME_MAX],
        at: Instant::now(),
    }
}

fn text(w: &Wire) -> Value {
    match w {
        Wire::Text(t) => serde_json::from_str(t).expect("JSON"),
        Wire::Binary(_) => panic!("expected text"),
    }
}

#[test]
fn twilio_counters_are_strings_shared_across_tracks_with_a_clock_per_track() {
    let mut o = Outgoing::new(Format::Twilio, meta(false, 8000));
    let open = o.opening();
    assert_eq!(text(&open[0])["event"], "connected");
    assert!(text(&open[0]).get("sequenceNumber").is_none());
    assert_eq!(text(&open[1])["sequenceNumber"], "1");
    assert_eq!(text(&open[1])["start"]["mediaFormat"]["sampleRate"], 8000);
    let a = text(&o.audio(&frame(Track::Inbound, 8000, 1000))[0]);
    let b = text(&o.audio(&frame(Track::Outbound, 8000, 1000))[0]);
    let c = text(&o.audio(&frame(Track::Inbound, 8000, 1000))[0]);
    assert_eq!(
        (a["sequenceNumber"].as_str(), a["media"]["chunk"].as_str()),
        (Some("2"), Some("1"))
    );
    assert_eq!(b["media"]["track"], "outbound");
    assert_eq!(b["media"]["timestamp"], "0", "each track has its own clock");
    assert_eq!(c["media"]["timestamp"], "20");
    assert_eq!(c["media"]["chunk"], "3");
    let payload = base64::engine::general_purpose::STANDARD
        .decode(c["media"]["payload"].as_str().unwrap())
        .unwrap();
    assert_eq!(payload.len(), 160, "20 ms of μ-law at 8 kHz");
    assert_eq!(text(&o.dtmf('5'))["dtmf"]["track"], "inbound_track");
    assert_eq!(text(&o.stop())["event"], "stop");
}

#[test]
fn a_48k_frame_goes_out_as_8k_mulaw() {
    let mut o = Outgoing::new(Format::Twilio, meta(false, 8000));
    let m = text(&o.audio(&frame(Track::Inbound, 48000, 0))[0]);
    let payload = base64::engine::general_purpose::STANDARD
        .decode(m["media"]["payload"].as_str().unwrap())
        .unwrap();
    assert_eq!(payload.len(), 160);
}

#[test]
fn raw_stereo_pairs_tracks_and_does_not_wait_forever_for_a_silent_one() {
    let mut o = Outgoing::new(Format::Raw, meta(true, 16000));
    assert!(o.audio(&frame(Track::Inbound, 16000, 7)).is_empty());
    let pair = o.audio(&frame(Track::Outbound, 16000, -7));
    let Wire::Binary(b) = &pair[0] else { panic!() };
    assert_eq!(b.len(), 320 * 4);
    assert_eq!(&b[..4], &[7, 0, 0xf9, 0xff], "left inbound, right outbound");
    // The outbound track stops (hold): inbound goes on with silence beside it.
    let mut sent = 0;
    for _ in 0..10 {
        sent += o.audio(&frame(Track::Inbound, 16000, 7)).len();
    }
    assert_eq!(sent, 10 - STEREO_LAG);
}

#[test]
fn what_applications_send_is_checked() {
    let media = r#"{"event":"media","streamSid":"MZ1","media":{"payload":"//8="}}"#;
    assert_eq!(
        parse(Format::Twilio, &Wire::Text(media.into())),
        Ok(Incoming::Audio(vec![0, 0]))
    );
    let mark = r#"{"event":"mark","streamSid":"MZ1","mark":{"name":"end"}}"#;
    assert_eq!(
        parse(Format::Twilio, &Wire::Text(mark.into())),
        Ok(Incoming::Mark("end".into()))
    );
    assert_eq!(
        parse(Format::Raw, &Wire::Text(r#"{"event":"clear"}"#.into())),
        Ok(Incoming::Clear)
    );
    for bad in [r#"{"event":"media","media":{"payload":"%%"}}"#, "nope", r#"{"no":1}"#] {
        let e = parse(Format::Twilio, &Wire::Text(bad.into())).unwrap_err();
        assert!(!e.is_empty());
    }
    assert!(parse(Format::Raw, &Wire::Binary(vec![1, 2, 3])).is_err());
    let long = format!(r#"{{"event":"mark","mark":{{"name":"{}"}}}}"#, "x".repeat(300));
    assert!(parse(Format::Twilio, &Wire::Text(long)).unwrap_err().contains("256"));
}

proptest::proptest! {
    /// Any message an application sends gets an answer, never a panic.
    #[test]
    fn any_message_is_read_or_refused(text in ".{0,300}", bytes in proptest::collection::vec(0u8.., 0..300)) {
        for f in [Format::Twilio, Format::Raw] {
            let _ = parse(f, &Wire::Text(text.clone()));
            let _ = parse(f, &Wire::Binary(bytes.clone()));
        }
    }

    /// Well-formed JSON of any shape under the events applications send.
    #[test]
    fn json_of_any_shape(event in proptest::sample::select(vec!["media", "mark", "clear", "stop", "x"]),
                         inner in proptest::option::of(".{0,40}"), num in proptest::num::i64::ANY) {
        let shapes = [
            json!({"event": event, "media": {"payload": inner}, "mark": {"name": num}}),
            json!({"event": event, "media": num, "mark": inner, "name": inner}),
            json!({"event": event, "media": {"payload": num}, "mark": {"name": inner}}),
        ];
        for v in shapes {
            for f in [Format::Twilio, Format::Raw] {
                let _ = parse(f, &Wire::Text(v.to_string()));
            }
        }
    }
}

#[test]
fn raw_mono_with_both_tracks_mixes_them() {
    let mut o = Outgoing::new(Format::Raw, meta(false, 8000));
    assert!(
        o.audio(&frame(Track::Inbound, 8000, 100)).is_empty(),
        "waits for the other track"
    );
    let out = o.audio(&frame(Track::Outbound, 8000, 20));
    let Wire::Binary(b) = &out[0] else { panic!() };
    assert_eq!(b.len(), 320, "one mono frame");
    assert_eq!(i16::from_le_bytes([b[0], b[1]]), 120);
}
