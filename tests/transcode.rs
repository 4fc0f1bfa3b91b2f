//! Transcoding on a relayed call: a PCMU phone calls an Opus-only endpoint
//! (a browser's codec), chorus adds Opus to the offer, and each side hears
//! the other's 1 kHz tone in its own codec; DTMF crosses with its clock
//! mapped. A call whose answer picks an offered codec stays untouched.

mod common;
use chorus::media::codec::{CodecKind, CodecSpec, Decoder};
use chorus::wire::rtp::{write_header, RtpView};
use common::{codec_tone, sdp_target, Daemon};
use serde_json::json;
use std::net::UdpSocket;
use std::time::Duration;

fn sdp(port: u16, formats: &str, lines: &str) -> String {
    format!(
        "v=0\r\no=p 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP {formats}\r\n{lines}a=ptime:20\r\n"
    )
}

fn socket() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    s
}

/// Sends `packets` 20 ms apart from `from` to `to`; collects what `at` receives.
fn exchange(from: &UdpSocket, to: std::net::SocketAddr, packets: &[Vec<u8>], at: &UdpSocket) -> Vec<Vec<u8>> {
    at.set_nonblocking(true).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    for p in packets {
        from.send_to(p, to).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        while let Ok((n, _)) = at.recv_from(&mut buf) {
            got.push(buf[..n].to_vec());
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    while let Ok((n, _)) = at.recv_from(&mut buf) {
        got.push(buf[..n].to_vec());
    }
    got
}

/// Zero crossings per second of the decoded audio's second half.
fn crossings(spec: CodecSpec, packets: &[Vec<u8>]) -> f64 {
    let mut dec = Decoder::new(&spec).unwrap();
    let (mut pcm, mut frame) = (Vec::new(), Vec::new());
    for p in packets {
        let v = RtpView::parse(p).unwrap();
        if v.payload_type() == spec.pt {
            let n = dec.decode(Some(v.payload()), spec.frame_samples(), &mut frame);
            pcm.extend_from_slice(&frame[..n]);
        }
    }
    let half = &pcm[pcm.len() / 2..];
    let c = half.windows(2).filter(|w| (w[0] < 0.0) != (w[1] < 0.0)).count();
    c as f64 / (half.len() as f64 / spec.rate as f64)
}

#[tokio::test]
async fn a_pcmu_phone_and_an_opus_endpoint_hear_each_other_through_chorus() {
    let d = Daemon::start(47, &[]).await;
    let (a, b) = (socket(), socket());
    let offer = sdp(
        a.local_addr().unwrap().port(),
        "0 101",
        "a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n",
    );
    let body = json!({"from_tag": "a", "sdp": offer, "options": {"transcode": ["opus"]}});
    let (s, r) = d.post("/v1/calls/tc/offer", body).await;
    assert_eq!(s, 200, "{r}");
    let to_b = r["sdp"].as_str().unwrap();
    assert!(
        to_b.contains("m=audio ") && to_b.contains(" RTP/AVP 0 101 96 97\r\n"),
        "{to_b}"
    );
    assert!(to_b.contains("a=rtpmap:96 opus/48000/2\r\n"), "{to_b}");
    assert!(to_b.contains("a=rtpmap:97 telephone-event/48000\r\n"), "{to_b}");
    // The Opus endpoint answers with Opus only (and DTMF on its clock).
    let answer = sdp(
        b.local_addr().unwrap().port(),
        "96 97",
        "a=rtpmap:96 opus/48000/2\r\na=rtpmap:97 telephone-event/48000\r\n",
    );
    let (s, r) = d
        .post(
            "/v1/calls/tc/answer",
            json!({"from_tag": "a", "to_tag": "b", "sdp": answer}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let to_a = r["sdp"].as_str().unwrap();
    assert!(
        to_a.contains(" RTP/AVP 0 101\r\n"),
        "the phone is answered in its own codec: {to_a}"
    );
    assert!(
        to_a.contains("a=rtpmap:0 PCMU/8000\r\n") && !to_a.contains("opus"),
        "{to_a}"
    );

    let pcmu = CodecSpec::new(CodecKind::Pcmu, 0, 1, 20, Some(101), None).unwrap();
    let opus = CodecSpec::new(CodecKind::Opus, 96, 2, 20, Some(97), None).unwrap();
    let (a_to, b_to) = (sdp_target(to_a), sdp_target(to_b));
    let at_b = exchange(&a, a_to, &codec_tone(pcmu, 60, 1), &b);
    assert!(at_b.len() >= 50, "the Opus side got {} packets", at_b.len());
    assert!(at_b.iter().all(|p| p[1] & 0x7f == 96), "all Opus");
    let rate = crossings(opus, &at_b);
    assert!(
        (1900.0..2100.0).contains(&rate),
        "the phone's 1 kHz at the Opus side: {rate:.0}"
    );
    let at_a = exchange(&b, b_to, &codec_tone(opus, 60, 1), &a);
    assert!(at_a.len() >= 50, "the phone got {} packets", at_a.len());
    assert!(at_a.iter().all(|p| p[1] & 0x7f == 0), "all PCMU");
    let rate = crossings(pcmu, &at_a);
    assert!(
        (1900.0..2100.0).contains(&rate),
        "the Opus side's 1 kHz at the phone: {rate:.0}"
    );

    // DTMF 5 from the phone: 400 units at 8 kHz arrive as 2400 at 48 kHz.
    let mut ev = vec![0u8; 16];
    write_header(&mut ev, 101, 100, 60 * 160, 4242).unwrap();
    ev[12..16].copy_from_slice(&[5, 0x0a, 0x01, 0x90]);
    let got = exchange(&a, a_to, &[ev], &b);
    let dtmf: Vec<&Vec<u8>> = got.iter().filter(|p| p[1] & 0x7f == 97).collect();
    assert_eq!(dtmf.len(), 1, "{got:?}");
    assert_eq!(&dtmf[0][12..16], &[5, 0x0a, 0x09, 0x60]);

    // Key 7 pressed by chorus into the Opus side, amid transcoded audio:
    // events on its type and clock (100 ms = 4800 units), one sequence.
    let body = json!({"from_tag": "a", "digits": "7", "duration_ms": 100});
    let (s, r) = d.post("/v1/calls/tc/dtmf", body).await;
    assert_eq!(s, 200, "{r}");
    let got = exchange(&a, a_to, &codec_tone(pcmu, 30, 200), &b);
    let seqs: Vec<u16> = got.iter().map(|p| u16::from_be_bytes([p[2], p[3]])).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)), "{seqs:?}");
    let ends: Vec<&Vec<u8>> = got.iter().filter(|p| p[1] & 0x7f == 97 && p[13] & 0x80 != 0).collect();
    assert_eq!(ends.len(), 3, "{got:?}");
    assert!(
        ends.iter().all(|p| p[12] == 7 && p[14..16] == 4800u16.to_be_bytes()),
        "{ends:?}"
    );
    assert!(
        got.iter().filter(|p| p[1] & 0x7f == 96).count() >= 25,
        "the audio goes on"
    );
}

#[tokio::test]
async fn an_answer_in_an_offered_codec_is_relayed_untouched() {
    let d = Daemon::start(48, &[]).await;
    let (a, b) = (socket(), socket());
    let offer = sdp(a.local_addr().unwrap().port(), "0", "a=rtpmap:0 PCMU/8000\r\n");
    let body = json!({"from_tag": "a", "sdp": offer, "options": {"transcode": ["opus"]}});
    let (_, r) = d.post("/v1/calls/plain/offer", body).await;
    assert!(
        r["sdp"].as_str().unwrap().contains("opus"),
        "offered for transcoding: {r}"
    );
    let answer = sdp(b.local_addr().unwrap().port(), "0", "a=rtpmap:0 PCMU/8000\r\n");
    let (_, r) = d
        .post(
            "/v1/calls/plain/answer",
            json!({"from_tag": "a", "to_tag": "b", "sdp": answer}),
        )
        .await;
    let to_a = sdp_target(r["sdp"].as_str().unwrap());
    let sent = codec_tone(CodecSpec::new(CodecKind::Pcmu, 0, 1, 20, None, None).unwrap(), 10, 7);
    let got = exchange(&a, to_a, &sent, &b);
    assert_eq!(got, sent, "byte for byte");
    // An unknown codec name is refused with the reason.
    let body = json!({"from_tag": "a", "sdp": offer_for(&a), "options": {"transcode": ["G729"]}});
    let (s, e) = d.post("/v1/calls/bad/offer", body).await;
    assert_eq!(s, 400, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("chorus transcodes PCMU, PCMA, G722 and opus"),
        "{e}"
    );
}

fn offer_for(s: &UdpSocket) -> String {
    sdp(s.local_addr().unwrap().port(), "0", "a=rtpmap:0 PCMU/8000\r\n")
}
