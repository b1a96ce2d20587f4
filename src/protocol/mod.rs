//! The MySQL client/server wire format, and nothing else: no sockets, no clocks, no
//! configuration. Bytes go in, typed values come out, and back. Both halves of the proxy —
//! the server side facing clients and the client side facing MariaDB — build on it, and it
//! is where the unit tests and the fuzz targets live.

pub mod auth;
pub mod codec;
pub mod compressed;
pub mod constants;
pub mod deprecate_eof;
pub mod frame;
pub mod handshake;
pub mod packets;
pub mod response;
pub mod session_state;
pub mod statement;
pub mod text;
