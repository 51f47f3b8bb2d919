//! The shutdown signal.
//!
//! SIGTERM is what `docker stop` / `docker compose stop` and Kubernetes send before SIGKILL;
//! SIGINT is Ctrl-C in a terminal. Both mean "stop taking new work, finish what is in flight
//! within the grace period, exit 0". The services take the signal as a future parameter, so
//! tests pass their own.

/// Resolves on the first SIGTERM or SIGINT.
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
                    _ = ctrl_c() => tracing::info!("SIGINT received, shutting down"),
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM; only SIGINT stops this process");
                ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    ctrl_c().await;
}

async fn ctrl_c() {
    if let Err(err) = tokio::signal::ctrl_c().await {
        tracing::warn!(error = %err, "cannot listen for SIGINT");
        std::future::pending::<()>().await;
    }
}
