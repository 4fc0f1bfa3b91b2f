"""Schemathesis hooks for chorus's API (tests/openapi_conformance.rs).

`format: sdp` strings are real SDP bodies: the offers from real devices in
tests/sdp/. JSON Schema cannot say what a valid SDP is, so without this the
fuzzer's "schema-valid" SDPs are random strings that chorus rightly refuses."""
import pathlib

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
