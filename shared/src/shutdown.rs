//! The shutdown signal.
//!
//! SIGTERM is what `docker stop` / `docker compose stop` and Kubernetes send before SIGKILL;
//! SIGINT is Ctrl-C in a terminal. Both mean "stop taking new work, finish what is in flight
//! within the grace period, exit 0". The services take the signal as a future parameter, so
//! tests pass their own.

use std::future::Future;

/// Listens for SIGTERM and SIGINT from the moment it is called (so a signal that arrives while
/// the service is still starting is not lost to the default action, which would kill the
/// process); the returned future resolves on the first one. Call it inside the runtime, before
/// the service starts listening.
pub fn signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
                        _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
                    }
                }
                (Ok(mut one), Err(err)) | (Err(err), Ok(mut one)) => {
                    tracing::warn!(error = %err, "cannot listen for one of SIGTERM/SIGINT");
                    one.recv().await;
                }
                (Err(err), Err(_)) => {
                    tracing::warn!(error = %err, "cannot listen for SIGTERM or SIGINT; stop this process with SIGKILL");
                    std::future::pending::<()>().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
