//! The one error type of the control plane, and how it looks on the wire.
//!
//! Module errors (`SdpError`, port exhaustion...) convert into [`Error`];
//! [`Error::status`] and [`Error::code`] give the HTTP status and the stable
//! machine-readable code (also used as the ng `error-reason` prefix).

use crate::sdp::SdpError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    BadSdp(#[from] SdpError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("no free media ports on interface `{0}`")]
    PortsExhausted(String),
    #[error("chorus is draining for shutdown and takes no new calls")]
    Draining,
    #[error("{0}")]
    Overloaded(String),
    #[error("{0}")]
    NotImplemented(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    /// A configured limit (calls, participants, request rate) refuses it.
    #[error("{0}")]
    Limit(String),
    /// The instance cannot serve at all (no media worker alive).
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn status(&self) -> u16 {
        match self {
            Error::BadRequest(_) | Error::BadSdp(_) => 400,
            Error::Unauthorized => 401,
            Error::NotFound(_) => 404,
            Error::Conflict(_) => 409,
            Error::MethodNotAllowed(_) => 405,
            Error::TooLarge(_) => 413,
            Error::Limit(_) => 429,
            Error::NotImplemented(_) => 501,
            Error::PortsExhausted(_) | Error::Draining | Error::Overloaded(_) | Error::Unavailable(_) => 503,
            Error::Internal(_) => 500,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Error::BadRequest(_) => "bad_request",
            Error::BadSdp(_) => "bad_sdp",
            Error::NotFound(_) => "not_found",
            Error::Conflict(_) => "conflict",
            Error::MethodNotAllowed(_) => "method_not_allowed",
            Error::TooLarge(_) => "too_large",
            Error::Limit(_) => "limit",
            Error::Unauthorized => "unauthorized",
            Error::PortsExhausted(_) => "ports_exhausted",
            Error::Draining => "draining",
            Error::Overloaded(_) => "overloaded",
            Error::NotImplemented(_) => "not_implemented",
            Error::Unavailable(_) => "unavailable",
            Error::Internal(_) => "internal",
        }
    }
}
