//! The command loop: reading the client's next command (or noticing the idle timeout,
//! a KILL, the shutdown) and handing it to the step that serves it.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::connection::{RawPacket, ReadError, Request};
use crate::frontend::registry;
use crate::protocol::constants::{command, error};
use crate::protocol::frame::FrameError;

use super::{is_refused, Failure, Session};

/// Why the wait for the next command ended without one.
enum Interrupt {
    Shutdown,
    Killed,
    Idle,
}

impl Session {
    fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.frontend.shared.peek().proxy.idle_timeout_ms)
    }

    pub(super) async fn command_loop(&mut self) {
        // What can interrupt a read lives as long as the loop: made anew for every
        // statement it would register and deregister with the timer wheel each time. The
        // idle timer is lazy: it fires at the deadline it was set for and is moved on if
        // the client was active since.
        let entry = self.listed.entry.clone();
        let interrupted = entry.interrupted();
        tokio::pin!(interrupted);
        // the shutdown may have been announced before this session was listed
        if *self.frontend.shutdown_signal().borrow() {
            self.send_error(0, error::SERVER_SHUTDOWN, "Server shutdown in progress")
                .await;
            return;
        }
        let mut idle = self.idle_timeout();
        let idle_timer = tokio::time::sleep(idle);
        tokio::pin!(idle_timer);
        loop {
            let (max, configured) = {
                let proxy = &self.frontend.shared.peek().proxy;
                (
                    proxy.max_allowed_packet,
                    Duration::from_millis(proxy.idle_timeout_ms),
                )
            };
            let last_active = tokio::time::Instant::now();
            if configured != idle {
                idle = configured;
                idle_timer.as_mut().reset(last_active + idle);
            }
            let read = loop {
                let interrupted = tokio::select! {
                    read = self.client.read_request(max) => break read,
                    why = &mut interrupted => match why {
                        registry::Interrupt::Killed => Interrupt::Killed,
                        registry::Interrupt::Shutdown => Interrupt::Shutdown,
                    },
                    _ = &mut idle_timer => Interrupt::Idle,
                };
                match interrupted {
                    Interrupt::Idle if last_active.elapsed() < idle => {
                        idle_timer.as_mut().reset(last_active + idle);
                    }
                    Interrupt::Idle => {
                        tracing::info!(peer = %self.peer, ?idle, "idle client disconnected");
                        let message =
                            "The client was disconnected by the server because of inactivity.";
                        self.send_error(0, error::IDLE_TIMEOUT, message).await;
                        return;
                    }
                    Interrupt::Shutdown => {
                        self.send_error(0, error::SERVER_SHUTDOWN, "Server shutdown in progress")
                            .await;
                        return;
                    }
                    Interrupt::Killed => {
                        tracing::info!(peer = %self.peer, id = entry.id, "session killed from the admin port");
                        self.send_error(0, error::CONNECTION_KILLED, "Connection was killed")
                            .await;
                        return;
                    }
                }
            };
            let packet = match read {
                Ok(Some(Request::Whole(p))) => p,
                Ok(Some(Request::Large { seq, command })) => {
                    if let Err(Failure::Client | Failure::StateLost) =
                        Box::pin(self.forward_large(seq, command)).await
                    {
                        return;
                    }
                    self.client.shrink_buffers();
                    continue;
                }
                Ok(None) => return,
                Err(ReadError::Frame(FrameError::TooLarge { .. })) => {
                    let message = "Got a packet bigger than 'max_allowed_packet' bytes";
                    self.send_error(1, error::NET_PACKET_TOO_LARGE, message)
                        .await;
                    return;
                }
                Err(e) => {
                    tracing::debug!(peer = %self.peer, error = %e, "client read failed");
                    return;
                }
            };
            if packet.span.first_seq != 0 {
                self.send_error(
                    1,
                    error::NET_PACKETS_OUT_OF_ORDER,
                    "Got packets out of order",
                )
                .await;
                return;
            }
            if packet.first_frame().first() == Some(&command::QUIT) {
                return;
            }
            // Boxed: the future of a command is most of a session's size, and an idle
            // session, waiting for its next command above, should not carry it.
            let result = Box::pin(self.command(packet)).await;
            self.count_sent();
            if let Err(Failure::Client | Failure::StateLost) = result {
                return;
            }
            self.client.shrink_buffers();
        }
    }

    /// Answers one command (other than QUIT, which the loop handles).
    async fn command(&mut self, packet: RawPacket) -> Result<(), Failure> {
        match packet.first_frame().first().copied() {
            Some(command::CHANGE_USER) => self.change_user(packet).await,
            Some(cmd) if is_refused(cmd) => {
                let message = format!("Command {cmd:#04x} is not supported through the proxy");
                self.send_error(1, error::UNKNOWN_COMMAND, &message).await;
                Ok(())
            }
            Some(cmd) => self.forward(cmd, packet).await,
            None => {
                self.send_error(1, error::UNKNOWN_COMMAND, "Empty command packet")
                    .await;
                Ok(())
            }
        }
    }

    /// Adds what was written to the client since the last count to the proxy's counters.
    fn count_sent(&mut self) {
        let sent = self.client.take_written();
        self.frontend
            .counters
            .bytes_to_clients
            .fetch_add(sent, Ordering::Relaxed);
    }
}
