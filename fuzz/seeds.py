#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/: real SDP from
tests/sdp, RTP and RTCP as phones and chorus send them, ng messages as
Kamailio's rtpengine module sends them, HTTP bodies from the README.
Rerun after changing an input format; the files are committed."""
import os, struct, pathlib

root = pathlib.Path(__file__).resolve().parent
corpus = root / "corpus"

def put(target, name, data):
    d = corpus / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())

def rtp(pt=0, seq=1, ts=160, ssrc=0x1234, payload=b"\xff" * 160, csrc=(), ext=None, pad=0, marker=False):
    b0 = 0x80 | len(csrc) | (0x10 if ext else 0) | (0x20 if pad else 0)
    h = struct.pack("!BBHII", b0, pt | (0x80 if marker else 0), seq, ts, ssrc)
    h += b"".join(struct.pack("!I", c) for c in csrc)
    if ext:
        profile, data = ext
        data += b"\0" * (-len(data) % 4)
        h += struct.pack("!HH", profile, len(data) // 4) + data
    body = h + payload
    if pad:
        body += b"\0" * (pad - 1) + bytes([pad])
    return body

# RTP: plain, CSRCs, RFC 6464 level (one- and two-byte forms), padding, DTMF.
put("rtp", "pcmu", rtp())
put("rtp", "csrc", rtp(csrc=(1, 2, 3)))
put("rtp", "level_one_byte", rtp(ext=(0xBEDE, bytes([0x10, 0x85]))))
put("rtp", "level_two_byte", rtp(ext=(0x1000, bytes([1, 1, 0x85]))))
put("rtp", "padding", rtp(pad=4))
put("rtp", "dtmf", rtp(pt=101, payload=bytes([5, 0x8a, 0, 160]), marker=True))

def rtcp_pkt(pt, count, body, pad=0):
    if pad:
        body += b"\0" * (pad - 1) + bytes([pad])
    return struct.pack("!BBH", 0x80 | (0x20 if pad else 0) | count, pt, len(body) // 4) + body

block = struct.pack("!IIIIII", 0x1000, (25 << 24) | 3, 70000, 12, 0xDEADBEEF, 65536)
sr = rtcp_pkt(200, 1, struct.pack("!IQIII", 0x99, 0x0102030405060708, 160, 50, 8000) + block)
sdes = rtcp_pkt(202, 1, struct.pack("!I", 0x99) + b"\x01\x06chorus\x00\x00\x00\x00")
put("rtcp", "sr_sdes", sr + sdes)
put("rtcp", "rr", rtcp_pkt(201, 1, struct.pack("!I", 0x99) + block))
put("rtcp", "bye", rtcp_pkt(203, 1, struct.pack("!I", 0x99) + b"\x03bye"))
put("rtcp", "app", rtcp_pkt(204, 0, struct.pack("!I", 0x99) + b"name" + b"data"))
put("rtcp", "nack", rtcp_pkt(205, 1, struct.pack("!IIHH", 0x99, 0x1000, 7, 0)))
put("rtcp", "pli", rtcp_pkt(206, 1, struct.pack("!II", 0x99, 0x1000)))
put("rtcp", "xr", rtcp_pkt(207, 0, struct.pack("!I", 0x99) + struct.pack("!BBHII", 4, 0, 2, 1, 2)))
put("rtcp", "padded_rr", rtcp_pkt(201, 0, struct.pack("!I", 0x99), pad=4))

def benc(v):
    if isinstance(v, int):
        return b"i%de" % v
    if isinstance(v, str):
        v = v.encode()
    if isinstance(v, bytes):
        return b"%d:%s" % (len(v), v)
    if isinstance(v, list):
        return b"l" + b"".join(benc(x) for x in v) + b"e"
    return b"d" + b"".join(benc(k) + benc(v[k]) for k in sorted(v)) + b"e"

sdps = sorted((root.parent / "tests/sdp").glob("*/input.sdp"))
texts = [p.read_text() for p in sdps]

# SDP sessions: an offer from one real device answered by another, then a re-offer.
for i, p in enumerate(sdps):
    other = texts[(i + 1) % len(texts)]
    # Two option bytes each: the second picks transport-protocol (SRTP,
    # WebRTC), transcode, mask, generate-mid and the DTLS role.
    seq = [bytes([i % 32, i % 64]) + texts[i].encode(), bytes([0, 0]) + other.encode(),
           bytes([2, 3]) + texts[i].encode()]
    put("sdp_session", p.parent.name, b"\0".join(seq))

# BUNDLE: Chromium's audio and video offer terminated towards a video
# phone (RTP/AVP), the phone's answer, the browser's re-offer; then the
# phone offering to a browser (chorus offers the group).
chrome = (root.parent / "tests/sdp/webrtc_chrome/input.sdp").read_text().replace(
    "a=group:BUNDLE 0", "a=group:BUNDLE 0 1")
video = chrome[chrome.index("m=audio"):].replace("m=audio", "m=video").replace("a=mid:0", "a=mid:1")
video = video.replace("111 63 9 0 8 13 110 126", "96 97").replace("opus/48000/2", "VP8/90000")
chrome += video.replace("a=sendrecv", "a=bundle-only\r\na=sendrecv").replace("m=video 54555", "m=video 0")
bria = (root.parent / "tests/sdp/bria_audio_video/input.sdp").read_text()
put("sdp_session", "bundle_to_phone", b"\0".join(
    [bytes([0, 1]) + chrome.encode(), bytes([0, 0]) + bria.encode(), bytes([0, 1]) + chrome.encode()]))
put("sdp_session", "bundle_from_phone", b"\0".join(
    [bytes([0, 3]) + bria.encode(), bytes([0, 0]) + chrome.replace("actpass", "active").encode()]))

# ng: what Kamailio's rtpengine module sends.
offer = {"command": "offer", "call-id": "k1", "from-tag": "fa", "sdp": texts[0],
         "flags": ["trust-address"], "replace": ["origin", "session-connection"],
         "ICE": "remove", "rtcp-mux": ["demux"], "received-from": ["IP4", "127.0.0.1"]}
answer = {"command": "answer", "call-id": "k1", "from-tag": "fa", "to-tag": "tb", "sdp": texts[1]}
put("ng", "ping", b"c1 " + benc({"command": "ping"}))
put("ng", "offer_answer_query_delete", b"\0".join([
    b"c2 " + benc(offer), b"c3 " + benc(answer),
    b"c4 " + benc({"command": "query", "call-id": "k1"}),
    b"c5 " + benc({"command": "delete", "call-id": "k1", "from-tag": "fa"})]))
put("ng", "list_statistics", b"c6 " + benc({"command": "list"}) + b"\0c7 " + benc({"command": "statistics"}))
for name, v in [("offer", offer), ("answer", answer), ("list", [1, "x", {"a": -3}])]:
    put("bencode", name, benc(v))

# HTTP: endpoint byte, then the body (see src/fuzzing/control.rs).
import json
def req(endpoint, body):
    return bytes([endpoint]) + json.dumps(body).encode()
put("http", "offer_answer", b"\0".join([
    req(0, {"from_tag": "ta", "sdp": texts[0], "options": {"ice": "remove", "rtcp_mux": "offer"}}),
    req(1, {"from_tag": "ta", "to_tag": "tb", "sdp": texts[1]}),
    req(2, {"from_tag": "ta"})]))
put("http", "conference", b"\0".join([
    req(4, {"id": "r1", "sample_rate": 16000, "max_speakers": 2}),
    req(5, {"sdp": texts[0]}),
    req(6, {"muted": True, "gain": 0.5})]))
put("http", "ng", bytes([7]) + b"c1 " + benc({"command": "ping"}))

# Jitter buffer: op bytes (advance ms, push/pop, seq, ts, len, payload).
def push(dt, seq, ts, n):
    return struct.pack("!BBHIB", dt, 1, seq, ts, n) + b"\x55" * n
jit = b"\x00" + b"".join(push(20, s, s * 160, 4) for s in range(20)) + b"".join(bytes([20, 0]) for _ in range(10))
put("jitter", "steady", jit)
put("jitter", "reorder_and_restart", b"\x00" + push(20, 5, 800, 2) + push(20, 4, 640, 2) + push(20, 60000, 99, 2) + bytes([40, 0]))

# Relay: two peers (flags, addresses) then packets (op, source, length, bytes).
def relay_pkt(leg, rtcp_port, dt, src, data):
    return bytes([(dt << 4) | leg | (2 if rtcp_port else 0), src, len(data)]) + data
peers = bytes([2, 0, 2, 1])  # leg 0 at 10.0.0.0:5000, leg 1 at 10.0.0.1:5000
pkts = [relay_pkt(0, False, 1, 0, rtp()[:200]), relay_pkt(1, False, 1, 1, rtp(ssrc=7)[:200]),
        relay_pkt(0, True, 1, 0, sr[:200]), relay_pkt(0, False, 1, 2, rtp()[:200])]
put("relay", "latch_and_foreign", peers + b"".join(pkts))

# Conference: op (dt<<3 | rtcp<<2 | participant), then RTP (u16 length) or RTCP.
def conf_rtp(pid, dt, data):
    return bytes([(dt << 3) | pid]) + struct.pack("!H", len(data)) + data
def conf_rtcp(pid, dt, data):
    return bytes([(dt << 3) | 4 | pid]) + struct.pack("!I", 0x1234) + bytes([len(data)]) + data
ops = b"".join(conf_rtp(1, 20, rtp(seq=s, ts=s * 160)) for s in range(10))
ops += conf_rtp(1, 1, rtp(pt=101, seq=11, ts=1760, payload=bytes([5, 0x8a, 0, 160]), marker=True))
ops += conf_rtp(3, 20, rtp(pt=9, seq=1, ts=640, payload=b"\x11" * 320, ext=(0xBEDE, bytes([0x10, 0x20]))))
ops += conf_rtcp(2, 5, sr[:250]) + conf_rtcp(1, 5, bytes([0x81, 201, 0, 0, 0x80, 201, 0, 1, 1, 2, 3, 4]))
put("conference", "talk_dtmf_rtcp", ops)

# SRTP: a selector byte (suite index, 0x80 for RTCP), then the packet.
for i in range(6):
    put("srtp", f"rtp_suite{i}", bytes([i]) + rtp(seq=i))
put("srtp", "rtp_ext_csrc", bytes([3]) + rtp(csrc=(1, 2), ext=(0xBEDE, bytes([0x10, 0x20]))))
put("srtp", "rtcp_sr", bytes([0x80]) + sr)
put("srtp", "rtcp_gcm", bytes([0x81]) + rtcp_pkt(201, 0, struct.pack("!I", 0x99)))

# WebRTC: op (0 raw STUN, 1 signed check around fuzzed bytes, 2 DTLS), length, body.
def op(kind, body):
    return bytes([kind, len(body)]) + body
stun_req = bytes.fromhex("000100582112a442b7e7a701bc34d686fa87dfae")  # RFC 5769 2.1 header
put("webrtc", "checks_and_dtls", op(1, b"") + op(1, b"goog") + op(0, stun_req + b"\0" * 8) + op(2, bytes([22, 0xfe, 0xfd]) + b"\0" * 10))

# Applications' messages back: format byte, rate byte, then messages of
# (kind: bit 0 binary, bit 1 no playout tick; length / 4; body).
import base64, json
def app(kind, body):
    body += b" " * (-len(body) % 4)
    return bytes([kind, len(body) // 4]) + body
tw_media = json.dumps({"event": "media", "streamSid": "MZ1", "media": {"payload": base64.b64encode(b"\x7f" * 160).decode()}}).encode()
tw_mark = json.dumps({"event": "mark", "streamSid": "MZ1", "mark": {"name": "m1"}}).encode()
tw_clear = json.dumps({"event": "clear", "streamSid": "MZ1"}).encode()
put("app_stream", "twilio_media_mark_clear", bytes([0, 0]) + app(0, tw_media) + app(0, tw_mark) + app(2, tw_media) + app(0, tw_clear))
pcm = b"".join(struct.pack("<h", i * 50) for i in range(320))
put("app_stream", "raw_pcm_and_mark", bytes([1, 1]) + app(1, pcm[:1000]) + app(0, b'{"event":"mark","name":"x"}') + app(3, pcm[:640]))

# WAV files to play.
def wav(rate, ch, samples):
    data = b"".join(struct.pack("<h", s) for s in samples)
    fmt = struct.pack("<HHIIHH", 1, ch, rate, rate * 2 * ch, 2 * ch, 16)
    return b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(data)) + data
put("wav", "mono_8k", wav(8000, 1, range(0, 800, 8)))
put("wav", "stereo_44k1", wav(44100, 2, range(0, 400, 4)))
w = wav(16000, 1, [1, 2, 3, 4])
put("wav", "list_chunk", w[:w.index(b"data")] + b"LIST" + struct.pack("<I", 3) + b"abc\x00" + w[w.index(b"data"):])

# Ogg Opus files to play (the same target): OpusHead, OpusTags, then
# audio packets (20 ms CELT frames of silence; a packet split over pages).
def ogg_crc(data):
    crc = 0
    for b in data:
        crc ^= b << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc
def ogg_page(seq, flags, granule, packets, continued_last=False):
    lacing = b""
    for i, p in enumerate(packets):
        lacing += b"\xff" * (len(p) // 255)
        if not (continued_last and i == len(packets) - 1):
            lacing += bytes([len(p) % 255])
    h = b"OggS" + bytes([0, flags]) + struct.pack("<QIII", granule, 7, seq, 0) + bytes([len(lacing)]) + lacing
    page = bytearray(h + b"".join(packets))
    page[22:26] = struct.pack("<I", ogg_crc(bytes(page)))
    return bytes(page)
head = b"OpusHead" + bytes([1, 2]) + struct.pack("<HIhB", 312, 48000, 0, 0)
tags = b"OpusTags" + struct.pack("<I", 6) + b"chorus" + struct.pack("<I", 0)
frames = [bytes([0xF8]) + b"\xff\xfe" + b"\x00" * 20 for _ in range(5)]
put("wav", "ogg_opus", ogg_page(0, 2, 0, [head]) + ogg_page(1, 0, 0, [tags]) + ogg_page(2, 4, 312 + 5 * 960, frames))
put("wav", "ogg_split_packet", ogg_page(0, 2, 0, [head]) + ogg_page(1, 0, 0, [tags]) + ogg_page(2, 0, 0, [b"\xf8" + b"\x01" * 254], True) + ogg_page(3, 5, 312 + 960, [b"\x02" * 10]))

# Packets relayed to a leg an application speaks to: a byte picks the codec
# (0 PCMU, 2 G.722, 3 Opus; +4: audio plays), then length-prefixed packets.
def framed(*packets):
    return b"".join(struct.pack("!H", len(p)) + p for p in packets)
put("overlay", "pcmu_playing", bytes([4]) + framed(*(rtp(pt=96, seq=i, payload=bytes(range(160))) for i in range(3))))
put("overlay", "g722_padded", bytes([6]) + framed(rtp(pt=96, payload=b"\x55" * 160, pad=4), rtp(pt=101, payload=b"\x00" * 4)))
put("overlay", "opus_playing", bytes([7]) + framed(*(rtp(pt=96, seq=i, payload=b"\xf8\xff\xfe") for i in range(3)), rtp(pt=96, payload=b"\x78" + b"\x11" * 60)))
