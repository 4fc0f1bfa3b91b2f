//! SDES keys in SDP (RFC 4568): `a=crypto:<tag> <suite> inline:<key||salt>
//! [|<lifetime>][|<MKI>:<length>] [<session params>]`, read from a peer
//! (hostile: every field is checked) and written for chorus's own keys.
//! Pure: the caller supplies key material.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use std::fmt;

/// Keys are read with or without `=` padding (implementations differ for
/// the 28- and 44-byte GCM keys) and written with it.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The SRTP crypto suites chorus can key (RFC 4568, 6188, 7714).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    AesCm128HmacSha1_80,
    AesCm128HmacSha1_32,
    AesCm256HmacSha1_80,
    AesCm256HmacSha1_32,
    AeadAes128Gcm,
    AeadAes256Gcm,
}

impl Suite {
    pub const ALL: [Suite; 6] = [
        Suite::AeadAes256Gcm,
        Suite::AeadAes128Gcm,
        Suite::AesCm256HmacSha1_80,
        Suite::AesCm128HmacSha1_80,
        Suite::AesCm256HmacSha1_32,
        Suite::AesCm128HmacSha1_32,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Suite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Suite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            Suite::AesCm256HmacSha1_80 => "AES_256_CM_HMAC_SHA1_80",
            Suite::AesCm256HmacSha1_32 => "AES_256_CM_HMAC_SHA1_32",
            Suite::AeadAes128Gcm => "AEAD_AES_128_GCM",
            Suite::AeadAes256Gcm => "AEAD_AES_256_GCM",
        }
    }

    pub fn from_name(name: &str) -> Option<Suite> {
        Suite::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Master key and master salt lengths in bytes.
    pub fn key_salt_len(self) -> (usize, usize) {
        match self {
            Suite::AesCm128HmacSha1_80 | Suite::AesCm128HmacSha1_32 => (16, 14),
            Suite::AesCm256HmacSha1_80 | Suite::AesCm256HmacSha1_32 => (32, 14),
            Suite::AeadAes128Gcm => (16, 12),
            Suite::AeadAes256Gcm => (32, 12),
        }
    }

    pub fn master_len(self) -> usize {
        let (k, s) = self.key_salt_len();
        k + s
    }
}

/// Most packets one master key may protect (RFC 3711 section 9.2: 2^48).
pub const MAX_LIFETIME: u64 = 1 << 48;

/// One `a=crypto` line. Its `Debug` leaves the key out (logs, panics).
#[derive(Clone, PartialEq, Eq)]
pub struct Crypto {
    pub tag: u32,
    pub suite: Suite,
    /// Master key then master salt, `suite.master_len()` bytes.
    pub master: Vec<u8>,
    /// Packets the key may protect, if the peer limits it.
    pub lifetime: Option<u64>,
    /// Master key identifier: value and length in bytes (1..=128).
    pub mki: Option<(u64, u8)>,
    /// Session parameters as sent (`UNENCRYPTED_SRTP`, `KDR=...`).
    pub session_params: Vec<String>,
}

impl Crypto {
    /// Reads the value of an `a=crypto` attribute (after `crypto:`).
    pub fn parse(value: &str) -> Result<Crypto, String> {
        let mut fields = value.split_ascii_whitespace();
        let tag_text = fields.next().ok_or("a=crypto is empty")?;
        let tag = tag_text
            .parse::<u32>()
            .ok()
            .filter(|_| tag_text.len() <= 9 && tag_text.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| format!("a=crypto tag `{tag_text}` is not 1 to 9 digits"))?;
        let suite_text = fields.next().ok_or("a=crypto has no crypto suite")?;
        let suite = Suite::from_name(suite_text).ok_or_else(|| {
            format!(
                "crypto suite `{suite_text}` is not supported (chorus keys {})",
                Suite::ALL.map(Suite::name).join(", ")
            )
        })?;
        let key_params = fields.next().ok_or("a=crypto has no key parameters")?;
        if key_params.contains(';') {
            return Err("a=crypto with more than one master key is not supported".into());
        }
        let info = key_params
            .strip_prefix("inline:")
            .ok_or("a=crypto key method must be `inline`")?;
        let mut parts = info.split('|');
        let encoded = parts.next().unwrap_or_default();
        let master = LENIENT
            .decode(encoded)
            .map_err(|_| "a=crypto key is not base64".to_string())?;
        if master.len() != suite.master_len() {
            return Err(format!(
                "a=crypto key for {} is {} bytes; it must be {}",
                suite.name(),
                master.len(),
                suite.master_len()
            ));
        }
        let (mut lifetime, mut mki) = (None, None);
        for p in parts {
            match p.split_once(':') {
                Some((v, len)) if mki.is_none() => mki = Some(parse_mki(v, len)?),
                None if lifetime.is_none() && mki.is_none() => lifetime = Some(parse_lifetime(p)?),
                _ => return Err(format!("a=crypto key parameter `{p}` is out of place")),
            }
        }
        Ok(Crypto {
            tag,
            suite,
            master,
            lifetime,
            mki,
            session_params: fields.map(str::to_string).collect(),
        })
    }

    /// chorus's own key for `suite`, from `master` (random bytes the caller
    /// drew, `suite.master_len()` of them).
    pub fn ours(tag: u32, suite: Suite, master: Vec<u8>) -> Crypto {
        assert_eq!(master.len(), suite.master_len(), "key material for {}", suite.name());
        Crypto {
            tag,
            suite,
            master,
            lifetime: None,
            mki: None,
            session_params: Vec::new(),
        }
    }
}

fn parse_lifetime(text: &str) -> Result<u64, String> {
    let bad = || format!("a=crypto lifetime `{text}` is not a number or 2^n up to 2^48");
    let n = match text.strip_prefix("2^") {
        Some(exp) => {
            let e: u32 = digits(exp).ok_or_else(bad)?.try_into().map_err(|_| bad())?;
            1u64.checked_shl(e).filter(|_| e < 64).ok_or_else(bad)?
        }
        None => digits(text).ok_or_else(bad)?,
    };
    if n == 0 || n > MAX_LIFETIME {
        return Err(bad());
    }
    Ok(n)
}

fn parse_mki(value: &str, len: &str) -> Result<(u64, u8), String> {
    let bad = || format!("a=crypto MKI `{value}:{len}` is not <value>:<length 1..=128>");
    let v = digits(value).ok_or_else(bad)?;
    let l: u8 = digits(len)
        .and_then(|l| u8::try_from(l).ok())
        .filter(|l| (1..=128).contains(l))
        .ok_or_else(bad)?;
    // The value must fit its length (a length over 8 bytes always fits).
    if l < 8 && v >> (8 * u32::from(l)) != 0 {
        return Err(bad());
    }
    Ok((v, l))
}

/// A plain decimal number (no sign, no spaces), if it fits.
fn digits(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

impl fmt::Debug for Crypto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Crypto")
            .field("tag", &self.tag)
            .field("suite", &self.suite)
            .field("lifetime", &self.lifetime)
            .field("mki", &self.mki)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for Crypto {
    /// The attribute's value, as after `a=crypto:`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} inline:{}",
            self.tag,
            self.suite.name(),
            STANDARD.encode(&self.master)
        )?;
        if let Some(l) = self.lifetime {
            match l.is_power_of_two() {
                true => write!(f, "|2^{}", l.trailing_zeros())?,
                false => write!(f, "|{l}")?,
            }
        }
        if let Some((v, len)) = self.mki {
            write!(f, "|{v}:{len}")?;
        }
        for p in &self.session_params {
            write!(f, " {p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_rfc_4568_example_reads_with_its_lifetime_and_mki() {
        let c = Crypto::parse("1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4")
            .unwrap();
        assert_eq!((c.tag, c.suite, c.master.len()), (1, Suite::AesCm128HmacSha1_80, 30));
        assert_eq!((c.lifetime, c.mki), (Some(1 << 20), Some((1, 4))));
        assert_eq!(
            c.to_string(),
            "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4"
        );
        let gcm = Crypto::ours(2, Suite::AeadAes128Gcm, vec![7; 28]);
        let text = gcm.to_string();
        assert!(text.ends_with("=="), "written padded: {text}");
        assert_eq!(Crypto::parse(&text), Ok(gcm.clone()));
        assert_eq!(Crypto::parse(text.trim_end_matches('=')), Ok(gcm), "read unpadded too");
        let plain = Crypto::parse(
            "3 AES_CM_128_HMAC_SHA1_32 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR UNENCRYPTED_SRTCP",
        )
        .unwrap();
        assert_eq!((plain.lifetime, plain.mki), (None, None));
        assert_eq!(plain.session_params, ["UNENCRYPTED_SRTCP"]);
    }

    #[test]
    fn what_is_wrong_is_named() {
        let key = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR";
        let err = |v: &str| Crypto::parse(v).unwrap_err();
        assert!(err("").contains("empty"));
        assert!(err("x AES_CM_128_HMAC_SHA1_80 inline:a").contains("tag"));
        assert!(err("1234567890 AES_CM_128_HMAC_SHA1_80 inline:a").contains("tag"));
        assert!(err("1 F8_128_HMAC_SHA1_80 inline:a").contains("F8_128_HMAC_SHA1_80` is not supported"));
        assert!(err("1 AES_CM_128_HMAC_SHA1_80").contains("no key"));
        assert!(err("1 AES_CM_128_HMAC_SHA1_80 uri:x").contains("inline"));
        assert!(err("1 AES_CM_128_HMAC_SHA1_80 inline:!!!").contains("base64"));
        assert!(err(&format!("1 AEAD_AES_128_GCM inline:{key}")).contains("30 bytes; it must be 28"));
        assert!(err(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key};inline:{key}")).contains("more than one"));
        for bad in ["2^49", "2^64", "2^99999999999", "0", "-1", "x", "281474976710657"] {
            let e = err(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key}|{bad}"));
            assert!(e.contains("lifetime"), "{bad}: {e}");
        }
        assert!(Crypto::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key}|2^48")).is_ok());
        for bad in ["1:0", "1:129", "256:1", "x:4", "1:"] {
            let e = err(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key}|{bad}"));
            assert!(e.contains("MKI"), "{bad}: {e}");
        }
        assert!(err(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key}|1:4|2^20")).contains("out of place"));
        assert!(err(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key}|1:4|2:4")).contains("out of place"));
    }

    proptest! {
        #[test]
        fn any_text_is_read_or_refused_without_panic(s in "\\PC{0,120}") {
            if let Ok(c) = Crypto::parse(&s) {
                prop_assert_eq!(Crypto::parse(&c.to_string()), Ok(c));
            }
        }

        #[test]
        fn keys_round_trip(suite in 0..6usize, tag in 0..1_000_000_000u32, seed in any::<u8>(),
                           lifetime in proptest::option::of(1..=MAX_LIFETIME), mki in proptest::option::of((0..256u64, 1..=128u8))) {
            let suite = Suite::ALL[suite];
            let mut c = Crypto::ours(tag, suite, vec![seed; suite.master_len()]);
            c.lifetime = lifetime;
            c.mki = mki;
            prop_assert_eq!(Crypto::parse(&c.to_string()), Ok(c));
        }
    }
}
