//! The accept loop: one task per client, a global connection cap, a pause (`PROXYSQL
//! PAUSE`: new clients are refused, sessions go on), and a stop on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket};

use super::{session, ClientSlot, Frontend};

/// Binds the client listener with room for `backlog` connections not yet accepted
/// (tokio's own `bind` leaves the kernel's short default queue).
pub fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // a restarted proxy binds again at once, whatever its old connections' TIME_WAIT
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

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
