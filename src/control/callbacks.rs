//! Callback POSTs to the proxy's URL (`callback_url`): calls ended by
//! chorus, conference events. Queued and delivered by one task with a few
//! requests in flight, so a slow or dead receiver costs a bounded queue,
//! never a pile of tasks or memory; what does not fit is dropped and counted.

use super::State;
use crate::metrics::Metrics;
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::{mpsc, Semaphore};

/// Callbacks waiting for delivery at most.
pub const CALLBACK_QUEUE: usize = 1024;
/// Callback requests in flight at most (each times out after 5 s).
pub const CALLBACKS_IN_FLIGHT: usize = 8;

/// The sending end; a no-op when no callback URL is configured.
pub struct Callbacks {
    tx: Option<mpsc::Sender<Value>>,
}

impl Callbacks {
    pub fn new(url: Option<&str>) -> (Callbacks, Option<mpsc::Receiver<Value>>) {
        match url {
            Some(_) => {
                let (tx, rx) = mpsc::channel(CALLBACK_QUEUE);
                (Callbacks { tx: Some(tx) }, Some(rx))
            }
            None => (Callbacks { tx: None }, None),
        }
    }

    /// Queues `body`; drops it (counted) if the queue is full.
    pub fn post(&self, metrics: &Metrics, body: Value) {
        let Some(tx) = &self.tx else { return };
        if tx.try_send(body).is_err() {
            metrics.callbacks.with_label_values(&["dropped"]).inc();
            tracing::warn!("callback queue full: callback dropped");
        }
    }
}

/// Delivers queued callbacks until the queue closes.
pub async fn deliver(state: Arc<State>, mut rx: mpsc::Receiver<Value>) {
    let Some(url) = state.config.callback_url.clone() else {
        return;
    };
    let slots = Arc::new(Semaphore::new(CALLBACKS_IN_FLIGHT));
    while let Some(body) = rx.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (state, url) = (state.clone(), url.clone());
        tokio::spawn(async move {
            let result = match state.http.post(&url).json(&body).send().await {
                Ok(r) if r.status().is_success() => "sent",
                Ok(r) => {
                    tracing::warn!(status = %r.status(), event = %body["event"], "callback refused");
                    "refused"
                }
                Err(e) => {
                    tracing::warn!(error = %e, event = %body["event"], "callback failed");
                    "failed"
                }
            };
            state.metrics.callbacks.with_label_values(&[result]).inc();
            drop(permit);
        });
    }
}
