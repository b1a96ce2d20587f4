//! The accept loop: one task per client, a global connection cap, a pause (`PROXYSQL
//! PAUSE`: new clients are refused, sessions go on), and a stop on shutdown.

use std::sync::Arc;

use tokio::net::TcpListener;

use super::{session, ClientSlot, Frontend};

/// Accepts clients until shutdown begins.
pub async fn serve(frontend: Arc<Frontend>, listener: TcpListener) {
    let mut shutdown = frontend.shutdown_signal();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let frontend = frontend.clone();
        if frontend.is_paused() {
            tokio::spawn(async move { session::refuse_paused(&frontend, tcp, peer).await });
            continue;
        }
        let max = frontend.shared.load().proxy.max_client_connections;
        let slot = ClientSlot::acquire(&frontend, max);
        tokio::spawn(async move {
            match slot {
                Some(slot) => session::run(frontend, tcp, peer, slot).await,
                None => session::refuse_too_many(&frontend, tcp, peer, max).await,
            }
        });
    }
    tracing::info!("listener closed");
}
