//! A backend (plugin state, channel history) that plugins' calls wait on:
//! each call bounded in time, and the backend failing logged once when it
//! starts and once when it ends, not once per call.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub struct Health {
    /// What the log lines call the backend, e.g. "channel history".
    name: String,
    timeout: Duration,
    /// Calls fail now.
    failing: AtomicBool,
}

impl Health {
    pub fn new(name: impl Into<String>, timeout: Duration) -> Health {
        Health {
            name: name.into(),
            timeout,
            failing: AtomicBool::new(false),
        }
    }

    /// Runs `call` within the timeout. `failure` says why a result is the
    /// backend failing (`None` for an answer, even a refusal); a call that
    /// runs out of time fails with `timed_out(why)`.
    pub async fn bounded<T, E>(
        &self,
        call: impl Future<Output = Result<T, E>>,
        failure: impl Fn(&E) -> Option<&str>,
        timed_out: impl FnOnce(String) -> E,
    ) -> Result<T, E> {
        let result = match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(timed_out(format!(
                "no answer within state.timeout ({:?})",
                self.timeout
            ))),
        };
        match result.as_ref().err().and_then(&failure) {
            Some(why) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!("{}: {why}; calls fail until it answers again", self.name);
                }
            }
            None => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("{} answers again", self.name);
                }
            }
        }
        result
    }
}
