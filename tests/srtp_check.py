#!/usr/bin/env python3
"""Unprotects SRTP packets with libsrtp (through pylibsrtp, from PyPI): an
SRTP implementation independent of chorus's. Reads the master key and salt
(hex) as the first argument and one packet per line (hex) on stdin;
prints the plain packets as a JSON list of hex strings (null for a packet
libsrtp rejects)."""
import json, sys
from pylibsrtp import Error, Policy, Session

policy = Policy(key=bytes.fromhex(sys.argv[1]), ssrc_type=Policy.SSRC_ANY_INBOUND,
                srtp_profile=Policy.SRTP_PROFILE_AES128_CM_SHA1_80)
session = Session(policy=policy)
out = []
for line in sys.stdin:
    try:
        out.append(session.unprotect(bytes.fromhex(line.strip())).hex())
    except Error:
        out.append(None)
print(json.dumps(out))
