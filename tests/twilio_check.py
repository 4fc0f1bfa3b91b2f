"""Checks a Twilio Media Streams message sequence chorus sent (JSON, one
message per line on stdin) against streamdouble (PyPI), an independent
transcription of Twilio's documentation: each message must equal, field for
field and type for type, what streamdouble builds for the same stream."""
import base64
import json
import sys

from streamdouble.protocol import MediaStreamEncoder, StreamIdentity, build_connected

msgs = [json.loads(line) for line in sys.stdin if line.strip()]
if msgs[0] != build_connected():
    sys.exit(f"connected differs: {msgs[0]} != {build_connected()}")
start = msgs[1]["start"]
enc = MediaStreamEncoder(
    StreamIdentity(stream_sid=msgs[1]["streamSid"], account_sid=start["accountSid"], call_sid=start["callSid"])
)
expected = [enc.start(tracks=start["tracks"], custom_parameters=start["customParameters"])]
for m in msgs[2:]:
    ev = m["event"]
    if ev == "media":
        expected.append(enc.media(base64.b64decode(m["media"]["payload"]), track=m["media"]["track"]))
    elif ev == "dtmf":
        expected.append(enc.dtmf(m["dtmf"]["digit"]))
    elif ev == "mark":
        expected.append(enc.mark(m["mark"]["name"]))
    elif ev == "stop":
        expected.append(enc.stop())
    else:
        sys.exit(f"an event Twilio does not send: {m}")
for ours, theirs in zip(msgs[1:], expected):
    if ours != theirs:
        sys.exit(f"differs from streamdouble:\n ours:   {ours}\n theirs: {theirs}")
print(f"{len(msgs)} messages match streamdouble")
