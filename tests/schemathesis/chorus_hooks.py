"""Schemathesis hooks for chorus's API (tests/openapi_conformance.rs).

`format: sdp` strings are real SDP bodies: the offers from real devices in
tests/sdp/. JSON Schema cannot say what a valid SDP is, so without this the
fuzzer's "schema-valid" SDPs are random strings that chorus rightly refuses."""
import pathlib
import re

import schemathesis
from hypothesis import strategies as st

ROOT = pathlib.Path(__file__).resolve().parents[1] / "sdp"
SDPS = sorted(p.read_text() for p in ROOT.glob("*/input.sdp"))

schemathesis.openapi.format("sdp", st.sampled_from(SDPS))

# Stream URLs point at the discard port on loopback: nothing listens there,
# so a stream the fuzzer starts fails to connect and never leaves the host.
schemathesis.openapi.format("ws-url", st.just("ws://127.0.0.1:9/"))

# Files to play: a name that is not in the test daemon's media_dir (404).
schemathesis.openapi.format("media-file", st.just("absent.wav"))


SDES_PROFILE = re.compile(r"^m=\S+ \d+ RTP/SAVPF? ", re.M)


@schemathesis.hook
def filter_body(context, body):
    """Drops offers whose validity depends on the SDP they carry, which a
    schema cannot see: `sdes.off` with an RTP/SAVP(F) leg made from a plain
    or DTLS offer asks chorus to encrypt with no way to hand out keys, and
    chorus refuses it with 400 (tested in tests/srtp.rs)."""
    if not isinstance(body, dict):
        return True
    opts = body.get("options")
    if not isinstance(opts, dict) or not isinstance(opts.get("sdes"), dict):
        return True
    sdp = body.get("sdp")
    return not (
        opts["sdes"].get("off") is True
        and opts.get("transport_protocol") in ("RTP/SAVP", "RTP/SAVPF")
        and isinstance(sdp, str)
        and not SDES_PROFILE.search(sdp)
    )
