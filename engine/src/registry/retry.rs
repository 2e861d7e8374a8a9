//! Retries: what fails transiently (connections refused or cut, timeouts, 5xx, 429) is tried
//! again with exponential backoff, each retry said through the log callback (`-v`).

use std::time::Duration;

use super::{Registry, RegistryError};

/// How many times a transiently failing request is tried (a timed-out one: twice, see
/// [`super::Retry::Once`]).
pub(super) const ATTEMPTS: u32 = 5;
/// The first pause between two tries; it doubles each time.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// Where a retried request stands.
pub(super) struct Backoff {
    attempt: u32,
    pause: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            attempt: 1,
            pause: FIRST_BACKOFF,
        }
    }
}

impl Registry {
    /// Runs `op` until it succeeds, fails for good, or has been tried [`ATTEMPTS`] times.
    pub(super) async fn retry<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, RegistryError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, RegistryError>>,
    {
        let mut backoff = Backoff::default();
        loop {
            match op().await {
                Err(e) => self.pause_or_fail(&mut backoff, what, e).await?,
                Ok(v) => return Ok(v),
            }
        }
    }

    /// After a failure: waits and returns `Ok` when it is worth another try, else the error.
    pub(super) async fn pause_or_fail(
        &self,
        backoff: &mut Backoff,
        what: &str,
        e: RegistryError,
    ) -> Result<(), RegistryError> {
        tracing::debug!(what, error = %e, attempt = backoff.attempt + 1, "registry request failed");
        let tries = e.tries();
        if backoff.attempt >= tries {
            return Err(e);
        }
        self.say(format!(
            "{what}: {e}; trying again in {} ms (attempt {} of {tries})",
            backoff.pause.as_millis(),
            backoff.attempt + 1
        ));
        tokio::time::sleep(backoff.pause).await;
        backoff.pause *= 2;
        backoff.attempt += 1;
        Ok(())
    }
}
