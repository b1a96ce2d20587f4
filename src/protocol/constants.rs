//! Numbers fixed by the MySQL protocol: capability flags, server status flags, command
//! bytes, packet headers and the error codes the proxy itself emits.

/// Capability flags (`CLIENT_*`), negotiated in the handshake.
pub mod capability {
    pub const LONG_PASSWORD: u32 = 1;
    pub const FOUND_ROWS: u32 = 1 << 1;
    pub const LONG_FLAG: u32 = 1 << 2;
    pub const CONNECT_WITH_DB: u32 = 1 << 3;
    pub const NO_SCHEMA: u32 = 1 << 4;
    pub const COMPRESS: u32 = 1 << 5;
    pub const ODBC: u32 = 1 << 6;
    pub const LOCAL_FILES: u32 = 1 << 7;
    pub const IGNORE_SPACE: u32 = 1 << 8;
    pub const PROTOCOL_41: u32 = 1 << 9;
    pub const INTERACTIVE: u32 = 1 << 10;
    pub const SSL: u32 = 1 << 11;
    pub const IGNORE_SIGPIPE: u32 = 1 << 12;
    pub const TRANSACTIONS: u32 = 1 << 13;
    pub const RESERVED: u32 = 1 << 14;
    pub const SECURE_CONNECTION: u32 = 1 << 15;
    pub const MULTI_STATEMENTS: u32 = 1 << 16;
    pub const MULTI_RESULTS: u32 = 1 << 17;
    pub const PS_MULTI_RESULTS: u32 = 1 << 18;
    pub const PLUGIN_AUTH: u32 = 1 << 19;
    pub const CONNECT_ATTRS: u32 = 1 << 20;
    pub const PLUGIN_AUTH_LENENC_CLIENT_DATA: u32 = 1 << 21;
    pub const CAN_HANDLE_EXPIRED_PASSWORDS: u32 = 1 << 22;
    pub const SESSION_TRACK: u32 = 1 << 23;
    pub const DEPRECATE_EOF: u32 = 1 << 24;
    /// zstd for the compressed protocol (MySQL 8.0.18+); the client's HandshakeResponse
    /// then ends with the level it wants.
    pub const ZSTD_COMPRESSION_ALGORITHM: u32 = 1 << 26;
}

/// Server status flags (`SERVER_*`) carried by OK and EOF packets.
pub mod status {
    pub const IN_TRANS: u16 = 1;
    pub const AUTOCOMMIT: u16 = 1 << 1;
    pub const MORE_RESULTS_EXISTS: u16 = 1 << 3;
    pub const CURSOR_EXISTS: u16 = 1 << 6;
    pub const LAST_ROW_SENT: u16 = 1 << 7;
    pub const IN_TRANS_READONLY: u16 = 1 << 13;
    pub const SESSION_STATE_CHANGED: u16 = 1 << 14;
}

/// Command bytes: the first payload byte of every packet a client sends after login.
pub mod command {
    pub const SLEEP: u8 = 0x00;
    pub const QUIT: u8 = 0x01;
    pub const INIT_DB: u8 = 0x02;
    pub const QUERY: u8 = 0x03;
    pub const FIELD_LIST: u8 = 0x04;
    pub const CREATE_DB: u8 = 0x05;
    pub const DROP_DB: u8 = 0x06;
    pub const REFRESH: u8 = 0x07;
    pub const SHUTDOWN: u8 = 0x08;
    pub const STATISTICS: u8 = 0x09;
    pub const PROCESS_INFO: u8 = 0x0A;
    pub const CONNECT: u8 = 0x0B;
    pub const PROCESS_KILL: u8 = 0x0C;
    pub const DEBUG: u8 = 0x0D;
    pub const PING: u8 = 0x0E;
    pub const TIME: u8 = 0x0F;
    pub const DELAYED_INSERT: u8 = 0x10;
    pub const CHANGE_USER: u8 = 0x11;
    pub const BINLOG_DUMP: u8 = 0x12;
    pub const TABLE_DUMP: u8 = 0x13;
    pub const CONNECT_OUT: u8 = 0x14;
    pub const REGISTER_SLAVE: u8 = 0x15;
    pub const STMT_PREPARE: u8 = 0x16;
    pub const STMT_EXECUTE: u8 = 0x17;
    pub const STMT_SEND_LONG_DATA: u8 = 0x18;
    pub const STMT_CLOSE: u8 = 0x19;
    pub const STMT_RESET: u8 = 0x1A;
    pub const SET_OPTION: u8 = 0x1B;
    pub const STMT_FETCH: u8 = 0x1C;
    pub const DAEMON: u8 = 0x1D;
    pub const BINLOG_DUMP_GTID: u8 = 0x1E;
    pub const RESET_CONNECTION: u8 = 0x1F;

    /// A command's name as MariaDB's processlist shows it.
    pub fn name(cmd: u8) -> &'static str {
        match cmd {
            QUERY => "Query",
            INIT_DB => "Init DB",
            FIELD_LIST => "Field List",
            STATISTICS => "Statistics",
            PING => "Ping",
            STMT_PREPARE => "Prepare",
            STMT_EXECUTE => "Execute",
            STMT_FETCH => "Fetch",
            STMT_CLOSE => "Close stmt",
            STMT_RESET => "Reset stmt",
            STMT_SEND_LONG_DATA => "Long Data",
            SET_OPTION => "Set option",
            RESET_CONNECTION => "Reset connection",
            _ => "Command",
        }
    }
}

/// First payload byte of the generic response packets.
pub mod header {
    pub const OK: u8 = 0x00;
    pub const LOCAL_INFILE: u8 = 0xFB;
    pub const EOF: u8 = 0xFE;
    pub const AUTH_SWITCH: u8 = 0xFE;
    pub const AUTH_MORE_DATA: u8 = 0x01;
    pub const ERR: u8 = 0xFF;
}

/// MySQL error codes the proxy sends itself, with their SQLSTATEs.
pub mod error {
    /// `(code, sqlstate)`
    pub type Code = (u16, &'static str);

    pub const TOO_MANY_CONNECTIONS: Code = (1040, "08004");
    pub const HANDSHAKE_ERROR: Code = (1043, "08S01");
    pub const ACCESS_DENIED: Code = (1045, "28000");
    pub const UNKNOWN_COMMAND: Code = (1047, "08S01");
    pub const USER_LIMIT_REACHED: Code = (1203, "42000");
    pub const HOST_BLOCKED: Code = (1129, "HY000");
    /// MySQL 8's "disconnected by the server because of inactivity".
    pub const IDLE_TIMEOUT: Code = (4031, "HY000");
    pub const NET_PACKET_TOO_LARGE: Code = (1153, "08S01");
    pub const NET_PACKETS_OUT_OF_ORDER: Code = (1156, "08S01");
    pub const NOT_SUPPORTED: Code = (1235, "42000");
    pub const SERVER_SHUTDOWN: Code = (1053, "08S01");
    /// A backend connection was lost while a statement was in flight: the server's
    /// ER_ABORTING_CONNECTION, whose SQLSTATE class 08 tells drivers the link failed.
    /// Not 2013: codes 2000–2999 are the client library's own, and libmariadb takes a
    /// server ERR carrying one for a malformed packet (ERROR 2027).
    pub const LOST_BACKEND: Code = (1152, "08S01");
    /// No backend of the hostgroup could be reached (ProxySQL uses the same code).
    pub const NO_BACKEND: Code = (9001, "HY000");
    /// An admin statement that failed (MySQL's ER_UNKNOWN_ERROR).
    pub const ADMIN_ERROR: Code = (1105, "HY000");
    /// The session was ended with KILL (MariaDB's ER_CONNECTION_KILLED).
    pub const CONNECTION_KILLED: Code = (1927, "70100");
    /// A statement refused by a query rule or the firewall (ProxySQL uses 1148 too).
    pub const NOT_ALLOWED: Code = (1148, "42000");
}

/// The character set the proxy announces in its greeting: utf8mb4_general_ci.
pub const DEFAULT_CHARSET: u8 = 45;
