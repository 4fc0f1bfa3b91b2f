//! Failure isolation inside a worker: a panic while handling one call or one
//! conference (a packet, a tick, a command) costs that call or conference
//! only.
//!
//! Why this is sound: everything a call's processing mutates belongs to that
//! call (its `WCall` or `WConference`, with its streams, jitter buffers,
//! codecs and mixer). The worker-wide tables (socket slab, key maps, queue)
//! are touched only by the command paths, which never leave a socket in the
//! slab that no call names, except in the middle of `update`. So after a
//! panic the half-updated call is discarded whole: removed from the maps,
//! every socket whose owner names it closed (found by sweeping the slab, not
//! by trusting the call's own, possibly half-written, tables), and the
//! control plane told so that it frees the ports and tells the proxy.
//! Unwinding is zero-cost until a panic happens, so the packet path pays
//! nothing for it.

use super::{Owner, Runner};
use crate::metrics::WorkerCounters;
use crate::worker::{CallKey, WorkerEvent};
use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// What a panic said, for the log and the event.
pub(in crate::worker) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

/// Runs `f`; a panic comes back as its message.
pub(super) fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| panic_message(&*p))
}

impl Runner {
    /// Ends the call in slab slot `ci` after a panic in its processing.
    pub(super) fn fail_call(&mut self, ci: usize, message: &str) {
        let Some(call) = self.calls.try_remove(ci) else { return };
        self.by_key.remove(&call.key);
        self.close_sockets_where(|o| matches!(o, Owner::Call { call, .. } if call == ci));
        tracing::error!(call_id = %call.call_id, panic = message, "call ended: its processing panicked (a bug); other calls continue");
        self.events.send(WorkerEvent::CallFailed {
            key: call.key,
            call_id: call.call_id,
            reason: message.to_string(),
        });
    }

    /// Ends the conference in slab slot `ci` after a panic in its processing.
    pub(super) fn fail_conference(&mut self, ci: usize, message: &str) {
        let Some(conf) = self.conferences.try_remove(ci) else {
            return;
        };
        self.conf_by_key.remove(&conf.key);
        // Helpers' duplicates: named by the members, the only record of them.
        for m in conf.members.values() {
            m.release_reads(self);
        }
        self.close_sockets_where(|o| matches!(o, Owner::Member { conf, .. } if conf == ci));
        if self.conferences.is_empty() {
            self.next_tick = None;
        }
        tracing::error!(conference = %conf.conf_id, panic = message, "conference ended: its processing panicked (a bug); other calls continue");
        self.events.send(WorkerEvent::ConferenceFailed {
            key: conf.key,
            reason: message.to_string(),
        });
    }

    /// A command for `key` panicked: end whichever call or conference it was for.
    pub(super) fn fail_key(&mut self, key: CallKey, message: &str) {
        WorkerCounters::add(&self.counters.panics, 1);
        if let Some(&ci) = self.by_key.get(&key) {
            self.fail_call(ci, message);
        } else if let Some(&ci) = self.conf_by_key.get(&key) {
            self.fail_conference(ci, message);
        } else {
            tracing::error!(
                panic = message,
                "a media worker command panicked (a bug); other calls continue"
            );
        }
    }

    fn close_sockets_where(&mut self, owned: impl Fn(Owner) -> bool) {
        let slots: Vec<usize> = self
            .sockets
            .iter()
            .filter(|(_, s)| owned(s.owner))
            .map(|(slot, _)| slot)
            .collect();
        for slot in slots {
            self.close_socket(slot);
        }
        self.flush_ring();
        self.queued.retain(|slot| self.sockets.contains(*slot));
    }

    /// The worker loop itself panicked, outside any one call: its tables may
    /// be half-updated, so every call and conference on it ends and the
    /// worker starts over empty on the same command channel.
    pub(in crate::worker) fn abandon_all(&mut self, message: &str) {
        #[cfg(feature = "test-hooks")]
        if self.kill_thread {
            panic!("test hook: the recovery panics too");
        }
        let calls: Vec<usize> = self.calls.iter().map(|(i, _)| i).collect();
        for ci in calls {
            self.fail_call(ci, message);
        }
        let confs: Vec<usize> = self.conferences.iter().map(|(i, _)| i).collect();
        for ci in confs {
            self.fail_conference(ci, message);
        }
        // Sockets read for other workers belong to no call here: they stay.
        self.sockets.retain(|_, s| matches!(s.owner, Owner::Forward(..)));
        self.calls.clear();
        self.by_key.clear();
        self.conferences.clear();
        self.conf_by_key.clear();
        self.queued.clear();
        self.next_tick = None;
        self.tick_window = Default::default();
        self.overload = Default::default();
    }
}

/// Test-only: a call or conference armed here panics on its next packet or
/// tick, as a bug in its processing would.
#[cfg(feature = "test-hooks")]
impl Runner {
    pub(super) fn arm_panic(&mut self, key: CallKey) -> bool {
        let known = self.by_key.contains_key(&key) || self.conf_by_key.contains_key(&key);
        if known {
            self.armed_panics.insert(key);
        }
        known
    }
}
