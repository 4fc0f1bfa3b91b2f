//! Bencode (the encoding of rtpengine's ng protocol), decoded with bounds.
//!
//! The decoder is iterative over a bounded depth and never panics: a single
//! 64 KB datagram of 32,000 nested lists crashes rtpengine 10.5 with SIGSEGV;
//! here it is an error that names the offset.

use std::fmt;

/// Deepest nesting accepted. ng messages nest 3 levels (dict > list > string).
pub const MAX_DEPTH: usize = 16;
/// Most items in one message, all levels together.
pub const MAX_ITEMS: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Int(i64),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    /// Keys in the order received (encoders sort them).
    Dict(Vec<(Vec<u8>, Value)>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed bencode at byte {offset}: {reason}")]
pub struct DecodeError {
    pub offset: usize,
    pub reason: &'static str,
}

impl Value {
    pub fn str(s: &str) -> Value {
        Value::Bytes(s.as_bytes().to_vec())
    }

    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(self.as_bytes()?).ok()
    }

    /// A dict's value by key (first match).
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(d) => d.iter().find(|(k, _)| k == key.as_bytes()).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Int(i) => {
                out.push(b'i');
                push_decimal(out, i.unsigned_abs(), *i < 0);
                out.push(b'e');
            }
            Value::Bytes(b) => push_bytes(out, b),
            Value::List(l) => {
                out.push(b'l');
                for v in l {
                    v.encode(out);
                }
                out.push(b'e');
            }
            Value::Dict(d) => {
                out.push(b'd');
                // Keys must go out sorted; replies are built in order, so
                // the sort is skipped when it would change nothing.
                if d.windows(2).all(|w| w[0].0 < w[1].0) {
                    for (k, v) in d {
                        push_bytes(out, k);
                        v.encode(out);
                    }
                } else {
                    let mut sorted: Vec<&(Vec<u8>, Value)> = d.iter().collect();
                    sorted.sort_by(|a, b| a.0.cmp(&b.0));
                    for (k, v) in sorted {
                        push_bytes(out, k);
                        v.encode(out);
                    }
                }
                out.push(b'e');
            }
        }
    }
}

/// A byte string: its length in decimal, a colon, the bytes.
fn push_bytes(out: &mut Vec<u8>, b: &[u8]) {
    push_decimal(out, b.len() as u64, false);
    out.push(b':');
    out.extend_from_slice(b);
}

/// Writes `n` in decimal without allocating (a reply holds hundreds of
/// numbers: lengths, counters).
fn push_decimal(out: &mut Vec<u8>, mut n: u64, negative: bool) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if negative {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[at..]);
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut b = Vec::new();
        self.encode(&mut b);
        f.write_str(&String::from_utf8_lossy(&b))
    }
}

/// Builds a dict from string keys.
pub fn dict<'a>(items: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
    Value::Dict(items.into_iter().map(|(k, v)| (k.as_bytes().to_vec(), v)).collect())
}

/// Decodes exactly one value filling `input`.
pub fn decode(input: &[u8]) -> Result<Value, DecodeError> {
    let mut d = Decoder {
        input,
        pos: 0,
        items: 0,
    };
    let v = d.value(0)?;
    if d.pos != input.len() {
        return Err(d.err("trailing bytes after the value"));
    }
    Ok(v)
}

struct Decoder<'a> {
    input: &'a [u8],
    pos: usize,
    items: usize,
}

impl Decoder<'_> {
    fn err(&self, reason: &'static str) -> DecodeError {
        DecodeError {
            offset: self.pos,
            reason,
        }
    }

    fn peek(&self) -> Result<u8, DecodeError> {
        self.input
            .get(self.pos)
            .copied()
            .ok_or_else(|| self.err("unexpected end of input"))
    }

    fn value(&mut self, depth: usize) -> Result<Value, DecodeError> {
        self.items += 1;
        if self.items > MAX_ITEMS {
            return Err(self.err("more than 4096 items"));
        }
        match self.peek()? {
            b'i' => {
                self.pos += 1;
                let n = self.number(b'e')?;
                Ok(Value::Int(n))
            }
            b'0'..=b'9' => self.bytes().map(Value::Bytes),
            b'l' | b'd' if depth >= MAX_DEPTH => Err(self.err("nested deeper than 16 levels")),
            b'l' => {
                self.pos += 1;
                let mut items = Vec::new();
                while self.peek()? != b'e' {
                    items.push(self.value(depth + 1)?);
                }
                self.pos += 1;
                Ok(Value::List(items))
            }
            b'd' => {
                self.pos += 1;
                let mut items = Vec::new();
                while self.peek()? != b'e' {
                    if !self.peek()?.is_ascii_digit() {
                        return Err(self.err("dictionary key is not a string"));
                    }
                    let k = self.bytes()?;
                    let v = self.value(depth + 1)?;
                    items.push((k, v));
                }
                self.pos += 1;
                Ok(Value::Dict(items))
            }
            _ => Err(self.err("expected i, l, d or a string length")),
        }
    }

    /// An integer up to `end`; no leading zeros or `-0`, as the format says.
    fn number(&mut self, end: u8) -> Result<i64, DecodeError> {
        let start = self.pos;
        let rest = &self.input[start..];
        let len = rest
            .iter()
            .position(|&c| c == end)
            .ok_or_else(|| self.err("unterminated number"))?;
        let text = std::str::from_utf8(&rest[..len]).map_err(|_| self.err("number is not ASCII"))?;
        let digits = text.strip_prefix('-').unwrap_or(text);
        if digits.is_empty()
            || !digits.bytes().all(|c| c.is_ascii_digit())
            || (digits.len() > 1 && digits.starts_with('0'))
            || text == "-0"
        {
            return Err(self.err("invalid number"));
        }
        let n = text.parse().map_err(|_| self.err("number out of range"))?;
        self.pos = start + len + 1;
        Ok(n)
    }

    fn bytes(&mut self) -> Result<Vec<u8>, DecodeError> {
        let len = self.number(b':')?;
        let len = usize::try_from(len).map_err(|_| self.err("negative string length"))?;
        let end = self.pos.checked_add(len).filter(|&e| e <= self.input.len());
        let end = end.ok_or_else(|| self.err("string runs past the end of the input"))?;
        let b = self.input[self.pos..end].to_vec();
        self.pos = end;
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trips_an_ng_message() {
        let raw = b"d7:command5:offer5:flagsl13:trust-addresse3:sdp3:v=0e";
        let v = decode(raw).unwrap();
        assert_eq!(v.get("command").unwrap().as_str(), Some("offer"));
        let mut out = Vec::new();
        v.encode(&mut out);
        assert_eq!(out, raw);
    }

    #[test]
    fn rejects_malformed_input_with_offsets() {
        for (input, offset) in [
            (&b"d3:abc"[..], 6),
            (b"i12", 1),
            (b"i012e", 1),
            (b"5:ab", 2),
            (b"d1:ai1ee1", 8),
            (b"di1e1:ae", 1),
            (b"x", 0),
        ] {
            let e = decode(input).unwrap_err();
            assert_eq!(e.offset, offset, "{:?}: {e}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_a_crash() {
        let mut bomb = vec![b'l'; 32_000];
        bomb.extend(vec![b'e'; 32_000]);
        let e = decode(&bomb).unwrap_err();
        assert!(e.reason.contains("nested deeper"), "{e}");
    }

    #[test]
    fn numbers_follow_the_format_exactly() {
        assert_eq!(decode(b"i0e"), Ok(Value::Int(0)));
        assert_eq!(decode(b"i-3e"), Ok(Value::Int(-3)));
        // Rust's parser would take these; bencode does not.
        for bad in [&b"i+5e"[..], b"i-0e", b"ie", b"i1x2e", b"i03e"] {
            let e = decode(bad).unwrap_err();
            assert_eq!(e.reason, "invalid number", "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn item_and_depth_limits_are_exact() {
        // A list holding MAX_ITEMS - 1 integers is MAX_ITEMS items.
        let list = |n: usize| [b"l".to_vec(), b"i1e".repeat(n), b"e".to_vec()].concat();
        assert!(decode(&list(MAX_ITEMS - 1)).is_ok());
        assert_eq!(decode(&list(MAX_ITEMS)).unwrap_err().reason, "more than 4096 items");
        // Dicts nest as lists do: MAX_DEPTH levels, not one more.
        let dicts = |n: usize| [b"d1:k".repeat(n), b"i1e".to_vec(), b"e".repeat(n)].concat();
        assert!(decode(&dicts(MAX_DEPTH)).is_ok());
        assert_eq!(
            decode(&dicts(MAX_DEPTH + 1)).unwrap_err().reason,
            "nested deeper than 16 levels"
        );
    }

    #[test]
    fn display_is_the_encoding() {
        let v = dict([("a", Value::List(vec![Value::Int(1), Value::str("x")]))]);
        assert_eq!(v.to_string(), "d1:ali1e1:xee");
    }

    /// The plain encoder the fast one must match byte for byte.
    fn reference(v: &Value, out: &mut Vec<u8>) {
        match v {
            Value::Int(i) => out.extend(format!("i{i}e").bytes()),
            Value::Bytes(b) => {
                out.extend(format!("{}:", b.len()).bytes());
                out.extend_from_slice(b);
            }
            Value::List(l) => {
                out.push(b'l');
                l.iter().for_each(|v| reference(v, out));
                out.push(b'e');
            }
            Value::Dict(d) => {
                let mut sorted: Vec<_> = d.iter().collect();
                sorted.sort_by(|a, b| a.0.cmp(&b.0));
                out.push(b'd');
                for (k, v) in sorted {
                    out.extend(format!("{}:", k.len()).bytes());
                    out.extend_from_slice(k);
                    reference(v, out);
                }
                out.push(b'e');
            }
        }
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(Value::Int),
            prop_oneof![Just(i64::MIN), Just(i64::MAX), Just(0), Just(-1)].prop_map(Value::Int),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::Bytes),
        ];
        leaf.prop_recursive(3, 40, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::List),
                // Keys in any order, repeated ones too.
                proptest::collection::vec(("[a-c]{0,2}".prop_map(String::into_bytes), inner), 0..6)
                    .prop_map(Value::Dict),
            ]
        })
    }

    #[test]
    fn keys_go_out_sorted_whatever_the_order() {
        let v = dict([("b", Value::Int(-12)), ("a", Value::str("x")), ("c", Value::Int(0))]);
        assert_eq!(v.to_string(), "d1:a1:x1:bi-12e1:ci0ee");
    }

    proptest! {
        #[test]
        fn encoding_matches_the_reference(v in value()) {
            let (mut fast, mut slow) = (Vec::new(), Vec::new());
            v.encode(&mut fast);
            reference(&v, &mut slow);
            prop_assert_eq!(fast, slow);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn encode_then_decode_is_identity(keys in proptest::collection::btree_set("[a-z-]{1,8}", 0..6), n in any::<i64>()) {
            let v = Value::Dict(keys.into_iter().map(|k| (k.into_bytes(), Value::List(vec![Value::Int(n), Value::str("x")]))).collect());
            let mut b = Vec::new();
            v.encode(&mut b);
            prop_assert_eq!(decode(&b).unwrap(), v);
        }
    }
}
