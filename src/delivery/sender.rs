//! What every destination kind implements, and the one way a sender reads
//! its secrets.

use super::http::SendError;
use crate::alerts::Alert;

/// What one destination does with an alert.
pub(crate) trait Sender {
    /// The first message (a new ticket); returns what later updates refer to.
    fn create(&self, alert: &Alert) -> Result<Option<String>, SendError>;
    /// Later matches: a comment on the ticket, a thread reply, a follow-up.
    fn update(
        &self,
        alert: &Alert,
        reference: Option<&str>,
        previous: u64,
    ) -> Result<Option<String>, SendError>;
}

/// A secret from the environment; never shown, only its variable's name.
pub(crate) fn secret(destination: &str, env: &str) -> Result<String, SendError> {
    match std::env::var(env) {
        Ok(value) if !value.is_empty() => Ok(value),
        _ => Err(SendError {
            transient: false,
            message: format!(
                "{destination}: environment variable {env} is not set (secrets come from the environment only)"
            ),
        }),
    }
}
