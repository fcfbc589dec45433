//! Limits on what a client may ask of the head.
//!
//! Every token holder can talk to the head, but none should be able to take
//! the head process down with an absurd number: a node offering 10^15 GPUs
//! (the head would allocate a slot per GPU), a resource that is NaN or
//! negative, a timeout near `u64::MAX` milliseconds (a deadline past the end
//! of time panics). Such requests get [`Error::OutOfBounds`] naming the
//! field, and the head serves on.

use crate::error::{Error, Result};
use crate::resources::{ResourceSet, GPU};
use std::time::Duration;

/// Most GPUs one node may offer (the largest machines have 16).
pub(super) const MAX_GPUS_PER_NODE: f64 = 1024.0;
/// Largest amount of any resource (bytes of memory included: 1 EiB).
pub(super) const MAX_RESOURCE_AMOUNT: f64 = 1e18;
/// Most distinct resources one node may offer.
pub(super) const MAX_RESOURCE_KINDS: usize = 256;
/// Longest a client may ask the head to wait for anything.
pub(super) const MAX_CLIENT_TIMEOUT: Duration = Duration::from_secs(30 * 24 * 3600);

fn out_of_bounds(what: String, value: impl ToString, limit: impl Into<String>) -> Error {
    Error::OutOfBounds {
        what,
        value: value.to_string(),
        limit: limit.into(),
    }
}

/// Checks what a registering node says it offers.
pub(super) fn check_node_resources(node_id: &str, resources: &ResourceSet) -> Result<()> {
    if resources.0.len() > MAX_RESOURCE_KINDS {
        return Err(out_of_bounds(
            format!("the number of resources of node {node_id}"),
            resources.0.len(),
            format!("at most {MAX_RESOURCE_KINDS}"),
        ));
    }
    for (name, &amount) in &resources.0 {
        let what = || format!("resource {name} of node {node_id}");
        if !(amount.is_finite() && (0.0..=MAX_RESOURCE_AMOUNT).contains(&amount)) {
            return Err(out_of_bounds(
                what(),
                amount,
                format!("a finite number in [0, {MAX_RESOURCE_AMOUNT:e}]"),
            ));
        }
        if name == GPU && (amount > MAX_GPUS_PER_NODE || amount.fract() != 0.0) {
            return Err(out_of_bounds(
                what(),
                amount,
                format!("a whole number of GPUs, at most {MAX_GPUS_PER_NODE}"),
            ));
        }
    }
    Ok(())
}

/// Checks a timeout a client asks the head to wait for.
pub(super) fn check_timeout(timeout: Option<Duration>) -> Result<()> {
    match timeout {
        Some(timeout) if timeout > MAX_CLIENT_TIMEOUT => Err(out_of_bounds(
            "timeout".to_string(),
            format!("{} s", timeout.as_secs()),
            format!("at most {} s (30 days)", MAX_CLIENT_TIMEOUT.as_secs()),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_quantities_are_refused_and_real_ones_pass() {
        let node = |name: &str, amount: f64| {
            let mut set = ResourceSet::default();
            // Straight into the map, as a message off the wire arrives.
            set.0.insert(name.to_string(), amount);
            check_node_resources("n", &set)
        };
        assert!(node(GPU, 8.0).is_ok());
        assert!(node("memory", 2e12).is_ok());
        for (name, amount) in [(GPU, 1e15), (GPU, 0.5), ("CPU", f64::NAN), ("CPU", -1.0)] {
            assert!(
                matches!(node(name, amount), Err(Error::OutOfBounds { .. })),
                "{name} = {amount}"
            );
        }
        assert!(check_timeout(Some(Duration::from_millis(u64::MAX))).is_err());
        assert!(check_timeout(Some(Duration::from_secs(3600))).is_ok());
        assert!(check_timeout(None).is_ok());
    }
}
