//! DTLS-SRTP (RFC 5764, 8842) for one stream: OpenSSL runs the handshake
//! over datagrams the worker passes in and takes out (no socket here), the
//! peer's certificate must match the fingerprint its SDP stated, and the
//! SRTP keys come from the handshake's exporter.
//!
//! chorus is usually the DTLS server (`a=setup:passive`): the browser, as
//! client, drives retransmission. As client (`a=setup:active`, when the
//! peer insists on being passive) chorus starts the handshake once ICE has
//! proved the peer's address, and sends its last flight again while no
//! answer comes ([`Dtls::retransmit`], from the worker's housekeeping).

use super::srtp::Key;
use crate::sdp::crypto::Suite;
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::ssl::{HandshakeError, MidHandshakeSslStream, Ssl, SslContext, SslMethod, SslStream, SslVerifyMode};
use openssl::x509::{X509NameBuilder, X509};
use std::collections::VecDeque;
use std::io::{self, Read, Write};

/// Datagrams queued towards OpenSSL before a handshake step reads them.
const MAX_QUEUED: usize = 8;

/// chorus's certificate and the context every stream's handshake starts from.
pub struct Identity {
    ctx: SslContext,
    /// `sha-256 AB:CD:...`, as `a=fingerprint` states it.
    pub fingerprint: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({})", self.fingerprint)
    }
}

impl Identity {
    /// chorus's identity from configured PEM files, or a fresh one.
    pub fn from_config(cert: Option<&str>, key: Option<&str>) -> Result<Identity, String> {
        match (cert, key) {
            (None, None) => Identity::generate(),
            (Some(c), Some(k)) => {
                let read = |p: &str| std::fs::read(p).map_err(|e| format!("DTLS: cannot read {p}: {e}"));
                let cert = X509::from_pem(&read(c)?).map_err(|e| format!("DTLS: {c} is not a PEM certificate: {e}"))?;
                let key = PKey::private_key_from_pem(&read(k)?)
                    .map_err(|e| format!("DTLS: {k} is not a PEM private key: {e}"))?;
                Identity::with(&cert, &key)
            }
            _ => Err("DTLS: set both dtls_certificate and dtls_private_key, or neither".into()),
        }
    }

    /// A fresh ECDSA P-256 key and a self-signed certificate (browsers check
    /// the fingerprint in the SDP, not a chain).
    pub fn generate() -> Result<Identity, String> {
        let e = |what: &'static str| move |err: openssl::error::ErrorStack| format!("DTLS identity: {what}: {err}");
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(e("curve"))?;
        let key = PKey::from_ec_key(EcKey::generate(&group).map_err(e("key"))?).map_err(e("key"))?;
        let mut name = X509NameBuilder::new().map_err(e("name"))?;
        name.append_entry_by_text("CN", "chorus").map_err(e("name"))?;
        let name = name.build();
        let mut serial = BigNum::new().map_err(e("serial"))?;
        serial.rand(64, MsbOption::MAYBE_ZERO, false).map_err(e("serial"))?;
        let mut cert = X509::builder().map_err(e("certificate"))?;
        cert.set_version(2).map_err(e("certificate"))?;
        let serial = serial.to_asn1_integer().map_err(e("serial"))?;
        cert.set_serial_number(&serial).map_err(e("certificate"))?;
        cert.set_subject_name(&name).map_err(e("certificate"))?;
        cert.set_issuer_name(&name).map_err(e("certificate"))?;
        cert.set_pubkey(&key).map_err(e("certificate"))?;
        let (from, until) = (
            Asn1Time::days_from_now(0).map_err(e("validity"))?,
            Asn1Time::days_from_now(365).map_err(e("validity"))?,
        );
        cert.set_not_before(&from).map_err(e("certificate"))?;
        cert.set_not_after(&until).map_err(e("certificate"))?;
        cert.sign(&key, MessageDigest::sha256()).map_err(e("signing"))?;
        Identity::with(&cert.build(), &key)
    }

    fn with(cert: &X509, key: &PKey<openssl::pkey::Private>) -> Result<Identity, String> {
        let e = |what: &'static str| move |err: openssl::error::ErrorStack| format!("DTLS identity: {what}: {err}");
        let mut ctx = SslContext::builder(SslMethod::dtls()).map_err(e("context"))?;
        ctx.set_certificate(cert).map_err(e("context"))?;
        let mismatch = "the key does not match the certificate";
        ctx.set_private_key(key).map_err(e(mismatch))?;
        ctx.check_private_key().map_err(e(mismatch))?;
        ctx.set_tlsext_use_srtp("SRTP_AEAD_AES_128_GCM:SRTP_AES128_CM_SHA1_80")
            .map_err(e("SRTP profiles"))?;
        // Any certificate passes the chain check; its fingerprint is checked
        // against the SDP once the handshake is done.
        ctx.set_verify_callback(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT, |_, _| true);
        let digest = cert.digest(MessageDigest::sha256()).map_err(e("fingerprint"))?;
        Ok(Identity {
            ctx: ctx.build(),
            fingerprint: format!("sha-256 {}", hex_colons(&digest)),
        })
    }
}

/// A fingerprint from `a=fingerprint:<hash> <hex>`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Fingerprint {
    pub hash: String,
    pub hex: String,
}

impl Fingerprint {
    /// Reads `sha-256 AB:CD:...` (hashes: sha-1, sha-224, sha-256, sha-384, sha-512).
    pub fn parse(value: &str) -> Result<Fingerprint, String> {
        let (hash, hex) = value
            .trim()
            .split_once(' ')
            .ok_or_else(|| format!("a=fingerprint `{value}` is not `<hash> <hex>`"))?;
        let hash = hash.to_ascii_lowercase();
        let len = digest(&hash)
            .ok_or_else(|| format!("a=fingerprint hash `{hash}` is not supported"))?
            .size();
        let hex = hex.trim().to_ascii_uppercase();
        let bytes: Option<Vec<u8>> = hex
            .split(':')
            .map(|h| u8::from_str_radix(h, 16).ok().filter(|_| h.len() == 2))
            .collect();
        if bytes.is_none_or(|b| b.len() != len) {
            return Err(format!(
                "a=fingerprint for {hash} must be {len} hex bytes separated by colons"
            ));
        }
        Ok(Fingerprint { hash, hex })
    }

    fn matches(&self, cert: &X509) -> bool {
        let Some(md) = digest(&self.hash) else { return false };
        cert.digest(md).is_ok_and(|d| hex_colons(&d) == self.hex)
    }
}

fn digest(hash: &str) -> Option<MessageDigest> {
    Some(match hash {
        "sha-1" => MessageDigest::sha1(),
        "sha-224" => MessageDigest::sha224(),
        "sha-256" => MessageDigest::sha256(),
        "sha-384" => MessageDigest::sha384(),
        "sha-512" => MessageDigest::sha512(),
        _ => return None,
    })
}

fn hex_colons(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// The datagrams between OpenSSL and the worker.
#[derive(Default)]
struct Datagrams {
    incoming: VecDeque<Vec<u8>>,
    outgoing: Vec<Vec<u8>>,
}

impl Read for Datagrams {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(d) = self.incoming.pop_front() else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let n = d.len().min(buf.len());
        buf[..n].copy_from_slice(&d[..n]);
        Ok(n)
    }
}

impl Write for Datagrams {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outgoing.push(buf.to_vec());
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum Phase {
    Waiting(Ssl),
    Handshaking(MidHandshakeSslStream<Datagrams>),
    Done(SslStream<Datagrams>),
    Failed,
}

/// Which end of the handshake chorus is; spelled as `a=setup` and ng's
/// `DTLS` flag spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Role {
    /// `a=setup:passive`: the peer starts.
    #[serde(rename = "passive")]
    Server,
    /// `a=setup:active`: chorus starts.
    #[serde(rename = "active")]
    Client,
}

/// The DTLS side of one stream.
pub struct Dtls {
    phase: Phase,
    remote: Fingerprint,
    role: Role,
    /// The client's last flight and when it goes again (doubling, RFC 6347).
    last_flight: Vec<Vec<u8>>,
    resend: Option<(std::time::Instant, std::time::Duration)>,
}

impl std::fmt::Debug for Dtls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let phase = match self.phase {
            Phase::Waiting(_) => "waiting",
            Phase::Handshaking(_) => "handshaking",
            Phase::Done(_) => "done",
            Phase::Failed => "failed",
        };
        write!(f, "Dtls({phase})")
    }
}

/// Keys from a finished handshake: (the peer's, chorus's).
pub type Keys = (Key, Key);

impl Dtls {
    pub fn server(identity: &Identity, remote: Fingerprint) -> Result<Dtls, String> {
        Dtls::new(identity, remote, Role::Server)
    }

    pub fn new(identity: &Identity, remote: Fingerprint, role: Role) -> Result<Dtls, String> {
        let ssl = Ssl::new(&identity.ctx).map_err(|e| format!("DTLS: {e}"))?;
        Ok(Dtls {
            phase: Phase::Waiting(ssl),
            remote,
            role,
            last_flight: Vec::new(),
            resend: None,
        })
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// As client, the first flight (ClientHello), once: records to send.
    pub fn start(&mut self, now: std::time::Instant, out: &mut Vec<Vec<u8>>) -> Result<(), String> {
        if self.role != Role::Client || !matches!(self.phase, Phase::Waiting(_)) {
            return Ok(());
        }
        let Phase::Waiting(ssl) = std::mem::replace(&mut self.phase, Phase::Failed) else {
            return Ok(());
        };
        match ssl.connect(Datagrams::default()) {
            Err(HandshakeError::WouldBlock(mut mid)) => {
                let flight = std::mem::take(&mut mid.get_mut().outgoing);
                self.remember(now, &flight);
                out.extend(flight);
                self.phase = Phase::Handshaking(mid);
                Ok(())
            }
            Ok(_) => Err("DTLS: a handshake cannot finish before the peer speaks".into()),
            Err(HandshakeError::Failure(mid)) => Err(format!("DTLS handshake failed: {}", mid.error())),
            Err(HandshakeError::SetupFailure(e)) => Err(format!("DTLS: {e}")),
        }
    }

    /// While the handshake waits for the peer: chorus's last flight again
    /// when its time has come (either role: a lost flight stalls both).
    pub fn retransmit(&mut self, now: std::time::Instant, out: &mut Vec<Vec<u8>>) {
        let Some((at, wait)) = self.resend else { return };
        if now < at || !matches!(self.phase, Phase::Handshaking(_)) {
            return;
        }
        out.extend(self.last_flight.iter().cloned());
        // RFC 6347 section 4.2.4.1: double the timer, up to 60 s.
        let wait = (wait * 2).min(std::time::Duration::from_secs(60));
        self.resend = Some((now + wait, wait));
    }

    fn remember(&mut self, now: std::time::Instant, flight: &[Vec<u8>]) {
        if !flight.is_empty() {
            self.last_flight = flight.to_vec();
            let wait = std::time::Duration::from_secs(1);
            self.resend = Some((now + wait, wait));
        }
    }

    pub fn remote(&self) -> &Fingerprint {
        &self.remote
    }

    /// A DTLS datagram from the peer. Records to send back go to `out`;
    /// returns the SRTP keys when this datagram completed the handshake.
    pub fn on_datagram(
        &mut self,
        now: std::time::Instant,
        b: &[u8],
        out: &mut Vec<Vec<u8>>,
    ) -> Result<Option<Keys>, String> {
        let phase = std::mem::replace(&mut self.phase, Phase::Failed);
        let step = match phase {
            Phase::Waiting(ssl) if self.role == Role::Server => {
                let mut d = Datagrams::default();
                d.incoming.push_back(b.to_vec());
                ssl.accept(d)
            }
            // A client that has not started hears nothing yet.
            Phase::Waiting(ssl) => {
                self.phase = Phase::Waiting(ssl);
                return Ok(None);
            }
            Phase::Handshaking(mut mid) => {
                queue(&mut mid.get_mut().incoming, b);
                mid.handshake()
            }
            Phase::Done(mut s) => {
                // Alerts, or the peer's Finished again: let OpenSSL see them.
                queue(&mut s.get_mut().incoming, b);
                let mut sink = [0u8; 2048];
                let _ = s.ssl_read(&mut sink);
                out.append(&mut s.get_mut().outgoing);
                self.phase = Phase::Done(s);
                return Ok(None);
            }
            Phase::Failed => return Err("DTLS failed earlier on this stream".into()),
        };
        match step {
            Ok(mut s) => {
                out.append(&mut s.get_mut().outgoing);
                self.resend = None;
                let keys = self.keys(&s)?;
                self.phase = Phase::Done(s);
                Ok(Some(keys))
            }
            Err(HandshakeError::WouldBlock(mut mid)) => {
                let flight = std::mem::take(&mut mid.get_mut().outgoing);
                if !flight.is_empty() {
                    self.remember(now, &flight);
                }
                out.extend(flight);
                self.phase = Phase::Handshaking(mid);
                Ok(None)
            }
            Err(HandshakeError::Failure(mut mid)) => {
                out.append(&mut mid.get_mut().outgoing);
                Err(format!("DTLS handshake failed: {}", mid.error()))
            }
            Err(HandshakeError::SetupFailure(e)) => Err(format!("DTLS: {e}")),
        }
    }

    /// Checks the peer's certificate and derives the SRTP keys (RFC 5764
    /// section 4.2: client key, server key, client salt, server salt).
    fn keys(&self, s: &SslStream<Datagrams>) -> Result<Keys, String> {
        let ssl = s.ssl();
        let cert = ssl.peer_certificate().ok_or("the peer sent no certificate")?;
        if !self.remote.matches(&cert) {
            return Err("the peer's certificate does not match the fingerprint in its SDP".into());
        }
        let profile = ssl.selected_srtp_profile().ok_or("no SRTP profile was agreed")?;
        let suite = match profile.name() {
            "SRTP_AES128_CM_SHA1_80" => Suite::AesCm128HmacSha1_80,
            "SRTP_AEAD_AES_128_GCM" => Suite::AeadAes128Gcm,
            other => return Err(format!("SRTP profile {other} is not supported")),
        };
        let (k, salt) = suite.key_salt_len();
        let mut m = vec![0u8; 2 * (k + salt)];
        ssl.export_keying_material(&mut m, "EXTRACTOR-dtls_srtp", None)
            .map_err(|e| format!("DTLS exporter: {e}"))?;
        let client = Key {
            suite,
            master: [&m[..k], &m[2 * k..2 * k + salt]].concat(),
        };
        let server = Key {
            suite,
            master: [&m[k..2 * k], &m[2 * k + salt..]].concat(),
        };
        // Each end encrypts with its own role's key.
        Ok(match self.role {
            Role::Server => (client, server),
            Role::Client => (server, client),
        })
    }
}

fn queue(q: &mut VecDeque<Vec<u8>>, b: &[u8]) {
    if q.len() < MAX_QUEUED {
        q.push_back(b.to_vec());
    }
}

#[cfg(test)]
mod tests;
