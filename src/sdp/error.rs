/// A malformed SDP, with the line that made it so.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SDP line {line} `{text}`: {reason}")]
pub struct SdpError {
    /// 1-based line number in the SDP as received (0: the SDP as a whole).
    pub line: usize,
    /// The offending line, cut to 80 characters.
    pub text: String,
    pub reason: String,
}

impl SdpError {
    pub(crate) fn new(line: usize, text: &str, reason: impl Into<String>) -> Self {
        let text: String = text.chars().take(80).collect();
        SdpError {
            line,
            text,
            reason: reason.into(),
        }
    }
}
