//! ICE-lite (RFC 8445 section 2.5) for one stream towards a full agent (a
//! browser): answer its connectivity checks, learn the addresses it proved
//! with our password, take the one it nominates, and notice when it stops
//! checking (consent, RFC 7675). Pure: time and datagrams are passed in.

use crate::wire::stun::{self, StunError, MAX_RESPONSE};
use openssl::pkey::{PKey, Private};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Without a valid check for this long, consent has expired (RFC 7675).
pub const CONSENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Addresses that passed a check and may carry DTLS before nomination.
const MAX_VALIDATED: usize = 4;

pub struct IceLite {
    /// chorus's credentials, stated in its SDP.
    local_ufrag: String,
    key: PKey<Private>,
    /// The peer's ufrag from its SDP, when it gave one.
    remote_ufrag: Option<String>,
    validated: [Option<SocketAddr>; MAX_VALIDATED],
    /// The address the peer nominated (USE-CANDIDATE).
    pub selected: Option<SocketAddr>,
    last_check: Option<Instant>,
}

impl std::fmt::Debug for IceLite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceLite")
            .field("local_ufrag", &self.local_ufrag)
            .field("selected", &self.selected)
            .finish_non_exhaustive()
    }
}

/// What a check did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    /// The response to send back to the check's source.
    pub len: usize,
    /// The check nominated a new address.
    pub nominated: bool,
}

impl IceLite {
    pub fn new(local_ufrag: &str, local_pwd: &str, remote_ufrag: Option<&str>) -> Result<IceLite, String> {
        Ok(IceLite {
            local_ufrag: local_ufrag.to_string(),
            key: stun::key(local_pwd)?,
            remote_ufrag: remote_ufrag.map(str::to_string),
            validated: [None; MAX_VALIDATED],
            selected: None,
            last_check: None,
        })
    }

    /// Whether these are the credentials the agent runs with.
    pub fn has_credentials(&self, local_ufrag: &str, remote_ufrag: Option<&str>) -> bool {
        self.local_ufrag == local_ufrag && self.remote_ufrag.as_deref() == remote_ufrag
    }

    /// A STUN datagram from `from`: checked, and answered into `out`.
    pub fn on_stun(
        &mut self,
        now: Instant,
        from: SocketAddr,
        b: &[u8],
        out: &mut [u8; MAX_RESPONSE],
    ) -> Result<Checked, StunError> {
        let req = stun::parse_request(b)?;
        let (ours, theirs) = req.username.split_once(':').unwrap_or((req.username, ""));
        let theirs_ok = self.remote_ufrag.as_deref().is_none_or(|r| r == theirs);
        if ours != self.local_ufrag || !theirs_ok {
            return Err(StunError::BadIntegrity);
        }
        stun::check_integrity(b, &req, &self.key)?;
        self.last_check = Some(now);
        if !self.validated.contains(&Some(from)) {
            // Oldest out: a full list rotates, it never grows.
            self.validated.rotate_right(1);
            self.validated[0] = Some(from);
        }
        let nominated = req.use_candidate && self.selected != Some(from);
        if req.use_candidate {
            self.selected = Some(from);
        }
        let len = stun::write_success(out, &req.transaction, from, &self.key);
        Ok(Checked { len, nominated })
    }

    /// Whether `from` proved itself with a check (DTLS and media may come from it).
    pub fn is_validated(&self, from: SocketAddr) -> bool {
        self.validated.contains(&Some(from))
    }

    /// Consent has expired: checks stopped after they had started.
    pub fn consent_expired(&self, now: Instant) -> bool {
        self.last_check
            .is_some_and(|t| now.saturating_duration_since(t) > CONSENT_TIMEOUT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A browser's check, built the way RFC 8445 says (our own writer makes
    /// the response, so the request is assembled here by hand).
    fn check(username: &str, pwd: &str, use_candidate: bool) -> Vec<u8> {
        let mut b = vec![0x00, 0x01, 0, 0, 0x21, 0x12, 0xa4, 0x42];
        b.extend_from_slice(&[7; 12]);
        let attr = |b: &mut Vec<u8>, kind: u16, value: &[u8]| {
            b.extend_from_slice(&kind.to_be_bytes());
            b.extend_from_slice(&(value.len() as u16).to_be_bytes());
            b.extend_from_slice(value);
            b.resize(b.len().next_multiple_of(4), 0);
        };
        attr(&mut b, 0x0006, username.as_bytes());
        attr(&mut b, 0x802a, &[1; 8]);
        if use_candidate {
            attr(&mut b, 0x0025, &[]);
        }
        let len = (b.len() + 24 - 20) as u16;
        b[2..4].copy_from_slice(&len.to_be_bytes());
        let mut s = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha1(), &stun::key(pwd).unwrap()).unwrap();
        s.update(&b).unwrap();
        let mac = s.sign_to_vec().unwrap();
        attr(&mut b, 0x0008, &mac);
        b
    }

    #[test]
    fn checks_with_our_password_are_answered_and_nominate() {
        let now = Instant::now();
        let mut ice = IceLite::new("chorus", "secretpassword12345678", Some("web")).unwrap();
        let mut out = [0u8; MAX_RESPONSE];
        let browser: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        let c = ice
            .on_stun(
                now,
                browser,
                &check("chorus:web", "secretpassword12345678", false),
                &mut out,
            )
            .unwrap();
        assert!(!c.nominated && ice.is_validated(browser) && ice.selected.is_none());
        assert_eq!(stun::parse_request(&out[..c.len]), Err(StunError::NotBindingRequest));
        let c = ice
            .on_stun(
                now,
                browser,
                &check("chorus:web", "secretpassword12345678", true),
                &mut out,
            )
            .unwrap();
        assert!(c.nominated);
        assert_eq!(ice.selected, Some(browser));
        assert!(!ice.consent_expired(now + Duration::from_secs(29)));
        assert!(ice.consent_expired(now + Duration::from_secs(31)));
    }

    #[test]
    fn strangers_are_not_answered_and_prove_nothing() {
        let now = Instant::now();
        let mut ice = IceLite::new("chorus", "secretpassword12345678", Some("web")).unwrap();
        let mut out = [0u8; MAX_RESPONSE];
        let stranger: SocketAddr = "127.0.0.9:1".parse().unwrap();
        for req in [
            check("chorus:web", "guessed-password", true),
            check("other:web", "secretpassword12345678", true),
            check("chorus:else", "secretpassword12345678", true),
        ] {
            assert!(ice.on_stun(now, stranger, &req, &mut out).is_err());
        }
        assert!(!ice.is_validated(stranger) && ice.selected.is_none());
        assert!(!ice.consent_expired(now + Duration::from_secs(300)), "never started");
    }

    #[test]
    fn validated_addresses_are_bounded() {
        let now = Instant::now();
        let mut ice = IceLite::new("chorus", "secretpassword12345678", None).unwrap();
        let mut out = [0u8; MAX_RESPONSE];
        let req = check("chorus:any", "secretpassword12345678", false);
        for port in 1..=10 {
            let from = SocketAddr::from(([127, 0, 0, 1], port));
            ice.on_stun(now, from, &req, &mut out).unwrap();
        }
        assert!(ice.is_validated("127.0.0.1:10".parse().unwrap()));
        assert!(!ice.is_validated("127.0.0.1:1".parse().unwrap()), "the oldest went out");
    }
}
