//! Reloading profiles on SIGHUP.
//!
//! The new set is loaded and validated completely (the same [`config::load_profiles`] as at
//! start) before it replaces the old one in a single pointer swap; a set with any error is
//! refused as a whole and the old one stays, with every error in the log. A job holds the set it
//! was submitted under (an `Arc`) and its own copy of its profile, so running jobs keep the
//! profile they started with; jobs submitted after the swap get the new one.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config;
use crate::daemon::Shared;

/// Reload on every SIGHUP until the process ends.
pub async fn on_sighup(shared: Arc<Shared>, dir: Option<PathBuf>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot install the SIGHUP handler; profiles cannot be reloaded: {e}");
            return;
        }
    };
    while hup.recv().await.is_some() {
        let from = dir.clone();
        let loaded =
            tokio::task::spawn_blocking(move || config::load_profiles(from.as_deref())).await;
        match loaded {
            Ok(Ok(set)) => {
                let summary = set
                    .names()
                    .iter()
                    .filter_map(|n| set.get(n))
                    .map(|p| format!("{}={}", p.name, &p.hash[..12]))
                    .collect::<Vec<_>>()
                    .join(",");
                let source = set.source().to_string();
                shared.replace_profiles(Arc::new(set));
                tracing::info!(source, profiles = %summary, "SIGHUP: profiles reloaded");
            }
            Ok(Err(e)) => {
                let old = shared.profiles();
                tracing::error!(
                    "SIGHUP: reload refused, keeping the {} profiles from {}: {e:#}",
                    old.names().len(),
                    old.source()
                );
            }
            Err(e) => tracing::error!("SIGHUP: reload task failed, keeping the profiles: {e}"),
        }
    }
}
