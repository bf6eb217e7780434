//! Graceful shutdown shared by every service: one `watch` flag, many listeners waiting on it.

use tokio::sync::watch;

/// Resolves once `rx` reads `true` (or its sender is gone): pass one to each listener's
/// graceful-shutdown hook.
pub async fn triggered(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            break;
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn stop_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolves_when_set_or_dropped() {
        let (tx, rx) = watch::channel(false);
        let waiter = tokio::spawn(triggered(rx.clone()));
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        let _ = tx.send(true);
        assert!(waiter.await.is_ok());
        let (tx2, rx2) = watch::channel(false);
        drop(tx2);
        triggered(rx2).await;
        drop(tx);
        triggered(rx).await;
    }
}
