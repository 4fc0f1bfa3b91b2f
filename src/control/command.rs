//! The call commands both front doors translate into. HTTP (JSON) and ng
//! (bencode) each parse their own wire format into a [`CallCommand`], and
//! [`execute`] matches it once, so the two doors cannot drift apart; each
//! door then renders the [`Outcome`] in its own format.

use super::calls::{self, CallSnapshot, Sdpop};
use super::State;
use crate::error::Error;
use crate::session::Options;

/// One call command, whichever door it came through.
pub enum CallCommand<'a> {
    Offer {
        call_id: &'a str,
        from_tag: &'a str,
        sdp: &'a str,
        options: Options,
    },
    Answer {
        call_id: &'a str,
        from_tag: &'a str,
        to_tag: &'a str,
        sdp: &'a str,
        options: Options,
    },
    /// The whole call; with `from_tag`, that tag must belong to it.
    Delete {
        call_id: &'a str,
        from_tag: Option<&'a str>,
    },
    Query {
        call_id: &'a str,
    },
}

/// What a call command gives back.
pub enum Outcome {
    /// The rewritten SDP for the other party.
    Sdp(String),
    /// The call (final, after a delete).
    Call(Box<CallSnapshot>),
}

impl CallCommand<'_> {
    /// The endpoint name in metrics and logs.
    pub fn endpoint(&self) -> &'static str {
        match self {
            CallCommand::Offer { .. } => "offer",
            CallCommand::Answer { .. } => "answer",
            CallCommand::Delete { .. } => "delete",
            CallCommand::Query { .. } => "query",
        }
    }

    pub fn call_id(&self) -> &str {
        match self {
            CallCommand::Offer { call_id, .. }
            | CallCommand::Answer { call_id, .. }
            | CallCommand::Delete { call_id, .. }
            | CallCommand::Query { call_id } => call_id,
        }
    }
}

pub async fn execute(state: &State, cmd: CallCommand<'_>) -> Result<Outcome, Error> {
    match cmd {
        CallCommand::Offer {
            call_id,
            from_tag,
            sdp,
            options,
        } => calls::negotiate(state, call_id, from_tag, Sdpop::Offer, sdp, &options)
            .await
            .map(Outcome::Sdp),
        CallCommand::Answer {
            call_id,
            from_tag,
            to_tag,
            sdp,
            options,
        } => calls::negotiate(state, call_id, from_tag, Sdpop::Answer { to_tag }, sdp, &options)
            .await
            .map(Outcome::Sdp),
        CallCommand::Delete { call_id, from_tag } => calls::delete(state, call_id, from_tag)
            .await
            .map(|c| Outcome::Call(Box::new(c))),
        CallCommand::Query { call_id } => calls::query(state, call_id).await.map(|c| Outcome::Call(Box::new(c))),
    }
}
