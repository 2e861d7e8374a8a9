//! How long lkpkg waits for what it does not control before it gives up and says so: the cache
//! lock another process holds (`LKPKG_LOCK_TIMEOUT`), a builder's answer when lkpkg connects
//! (`LKPKG_BUILDER_TIMEOUT`), a registry's next bytes (`LKPKG_REGISTRY_TIMEOUT`). Each is a
//! number of seconds (`0` waits for ever); unset, the engine's default holds. A value that is
//! not one is bad input, said before anything runs (a typo must not silently mean the default).

use std::time::Duration;

use anyhow::Result;

/// The wait `name` sets: `None` when it is unset, `Some(None)` for `0` (for ever).
fn wait(name: &str) -> Result<Option<Option<Duration>>> {
    let Some(value) = std::env::var_os(name) else {
        return Ok(None);
    };
    let text = value.to_string_lossy();
    let seconds = text
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e9)
        .ok_or_else(|| {
            crate::exit::bad_input(format!(
                "{name}: `{text}` is not a number of seconds (`0` waits for ever)"
            ))
        })?;
    Ok(Some(
        (seconds > 0.0).then(|| Duration::from_secs_f64(seconds)),
    ))
}

/// Sets the process-wide waits (the cache lock's, the builders').
pub fn configure() -> Result<()> {
    if let Some(timeout) = wait("LKPKG_LOCK_TIMEOUT")? {
        lkpkg_engine::ops::cache::set_lock_timeout(timeout);
    }
    if let Some(timeout) = wait("LKPKG_BUILDER_TIMEOUT")? {
        lkpkg_engine::ops::builders::set_builder_timeout(timeout);
    }
    // Read here too, so that a bad value fails every command, not only those that reach a
    // registry.
    registry()?;
    Ok(())
}

/// How long a registry may be silent (`None`: for ever).
pub fn registry() -> Result<Option<Duration>> {
    Ok(wait("LKPKG_REGISTRY_TIMEOUT")?
        .unwrap_or(Some(lkpkg_engine::ops::registry::DEFAULT_TIMEOUT)))
}
