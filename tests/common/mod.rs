//! Shared fixtures of the integration tests: a Sluice process in front of the local cluster
//! (`scripts/cluster.sh up`), the `mariadb` client, and a raw protocol client built on the
//! crate's own protocol layer for the cases no well-behaved client produces.
#![allow(dead_code)]

pub mod binary;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use sluice::protocol::auth::{native_proof, ProvenKey, NATIVE_PASSWORD};
use sluice::protocol::constants::{capability, command, header};
use sluice::protocol::frame::{check_packet, encode_packet, reassemble};
use sluice::protocol::handshake::{HandshakeResponse, InitialHandshake};
use sluice::protocol::packets::ErrPacket;
use sluice::protocol::response::{Progress, ResponseTracker};

pub mod cluster;
pub mod nodes;

pub const WRITER_PORT: u16 = 13306;
/// The asynchronous replicas of the local cluster (they follow node3).
pub const REPLICA_PORTS: [u16; 2] = [13309, 13310];

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Fails the test with a useful message when the local cluster is not up.
pub fn require_cluster() {
    if TcpStream::connect_timeout(
        &([127, 0, 0, 1], WRITER_PORT).into(),
        Duration::from_secs(2),
    )
    .is_err()
    {
        panic!("the local cluster is not running on 127.0.0.1:{WRITER_PORT}: run scripts/cluster.sh up");
    }
    assert!(
        repo().join("certs/ca.pem").exists(),
        "certificates missing: run scripts/certs.sh"
    );
}

/// Distinct free ports: held open together while chosen, so no two are the same.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| held[i].local_addr().unwrap().port())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `sluice` with the demo configuration (plus whatever a test appends or changes).
pub struct Proxy {
    pub port: u16,
    /// The admin port (the demo's 6032, moved to a free port).
    pub admin_port: u16,
    /// The metrics port (the demo's 6070, moved to a free port).
    pub metrics_port: u16,
    child: Child,
    pub dir: PathBuf,
}

impl Proxy {
    pub fn start() -> Proxy {
        Proxy::start_with(|c| c)
    }

    /// Starts a proxy whose configuration is the demo one passed through `edit`.
    pub fn start_with(edit: impl FnOnce(String) -> String) -> Proxy {
        require_cluster();
        let [port, admin_port, metrics_port] = free_ports();
        let demo = std::fs::read_to_string(repo().join("config/sluice.toml")).unwrap();
        let config = demo
            .replace("127.0.0.1:6033", &format!("127.0.0.1:{port}"))
            .replace("127.0.0.1:6032", &format!("127.0.0.1:{admin_port}"))
            .replace("127.0.0.1:6070", &format!("127.0.0.1:{metrics_port}"))
            .replace("\"../certs/", &format!("\"{}/certs/", repo().display()))
            .replace(
                "\"monitor.secret\"",
                &format!("\"{}/config/monitor.secret\"", repo().display()),
            );
        let config = edit(config);
        let dir = std::env::temp_dir().join(format!("sluice-test-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("sluice.toml"), config).unwrap();
        let log = std::fs::File::create(dir.join("sluice.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["run", "--config"])
            .arg(dir.join("sluice.toml"))
            .env("RUST_LOG", "sluice=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sluice");
        let mut proxy = Proxy {
            port,
            admin_port,
            metrics_port,
            child,
            dir,
        };
        proxy.wait_ready();
        proxy
    }

    /// Stops the proxy and starts it again on the same configuration file (as it is now).
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let log = std::fs::File::create(self.dir.join("sluice.log")).unwrap();
        self.child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["run", "--config"])
            .arg(self.dir.join("sluice.toml"))
            .env("RUST_LOG", "sluice=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sluice");
        self.wait_ready();
    }

    /// Whether the configuration file (as it is now) has `port` listen.
    fn configures(&self, port: u16) -> bool {
        std::fs::read_to_string(self.dir.join("sluice.toml"))
            .is_ok_and(|c| c.contains(&format!("127.0.0.1:{port}")))
    }

    /// Waits until the proxy listens, and its admin and metrics ports too when it has them
    /// (the listeners start one after the other).
    fn wait_ready(&mut self) {
        let admin = self.configures(self.admin_port);
        let metrics = self.configures(self.metrics_port);
        let deadline = Instant::now() + Duration::from_secs(10);
        let listens = |port: u16| TcpStream::connect(("127.0.0.1", port)).is_ok();
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("sluice exited with {status}:\n{}", self.log());
            }
            if listens(self.port)
                && (!admin || listens(self.admin_port))
                && (!metrics || listens(self.metrics_port))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("sluice did not listen within 10 s:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sluice.log")).unwrap_or_default()
    }

    /// Waits (up to 5 s) for `text` to appear in the proxy's log: the proxy logs a refusal
    /// just after the client has received it.
    pub fn log_shows(&self, text: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if self.log().contains(text) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The proxy's resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc")
    }

    /// Whether the process is still running.
    pub fn is_alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit on its own and returns whether it exited cleanly.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<bool> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status.success());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            // the failed test's proxy log, for whoever reads the failure
            eprintln!("proxy log, last 60 lines:\n{}", tail(&self.log(), 60));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A row of the proxy's `stats_mysql_global`, as a number.
pub fn stat(proxy: &Proxy, name: &str) -> u64 {
    let sql =
        format!("SELECT Variable_Value FROM stats_mysql_global WHERE Variable_Name = '{name}'");
    let value = mariadb_ok(proxy, proxy.admin_port, "admin", &sql);
    value
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{name}: {value:?}"))
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs the `mariadb` command-line client against `port` with `args`.
pub fn mariadb(port: u16, args: &[&str]) -> Output {
    Command::new("mariadb")
        .args([
            "--no-defaults",
            "-h127.0.0.1",
            &format!("-P{port}"),
            "-N",
            "-B",
        ])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the mariadb client is installed")
}

/// Runs `sql` with the mariadb client on `port` as `user` (the demo accounts' password is
/// their name); fails the test with the client's error and the proxy's log unless it
/// succeeds, and returns what it printed.
pub fn mariadb_ok(proxy: &Proxy, port: u16, user: &str, sql: &str) -> String {
    let out = mariadb(
        port,
        &[&format!("-u{user}"), &format!("-p{user}"), "-e", sql],
    );
    assert!(
        out.status.success(),
        "{sql}: {}\n{}",
        stderr(&out),
        proxy.log()
    );
    stdout(&out)
}

/// Runs `sql` on the proxy's admin port as `admin`.
pub fn admin(proxy: &Proxy, sql: &str) -> Output {
    mariadb(proxy.admin_port, &["-uadmin", "-padmin", "-e", sql])
}

/// Like [`admin`], failing the test unless it succeeds; what it printed.
pub fn admin_ok(proxy: &Proxy, sql: &str) -> String {
    mariadb_ok(proxy, proxy.admin_port, "admin", sql)
}

/// Polls `check` every 20 ms until it holds, failing the test after `limit`; returns how
/// long it took.
pub fn wait_for(limit: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < limit,
            "timed out waiting for {what} ({limit:?})"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A connection to the writer node directly, bypassing the proxy.
pub fn direct(args: &[&str]) -> Output {
    mariadb(WRITER_PORT, &[&["-uapp", "-papp"], args].concat())
}

/// Runs `sql` on the writer node directly, failing the test if it fails; its output,
/// tab-separated without column names.
pub fn direct_ok(sql: &str) -> String {
    let out = direct(&["-N", "-e", sql]);
    assert!(out.status.success(), "{sql}: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until both replicas have applied every Galera transaction committed so far, so
/// that reads the proxy sends them see what the test just wrote (a fixed sleep is not
/// enough on a loaded machine).
pub fn replicas_caught_up() {
    let position = direct_ok("SELECT @@gtid_binlog_pos");
    // Galera's writes carry domain 1 (wsrep_gtid_domain_id); the others are the nodes'
    // own local domains, which the replicas never see from node1 or node2
    let galera: Vec<&str> = position
        .trim()
        .split(',')
        .filter(|gtid| gtid.starts_with("1-"))
        .collect();
    let wait = format!("SELECT MASTER_GTID_WAIT('{}', 60)", galera.join(","));
    for port in REPLICA_PORTS {
        let out = mariadb(port, &["-uapp", "-papp", "-e", &wait]);
        assert_eq!(
            stdout(&out).trim(),
            "0",
            "replica {port} did not reach {position}: {}",
            stderr(&out)
        );
    }
}

/// The demo config with the writer capped at `max` backend connections and no split.
pub fn capped(max: u32) -> impl FnOnce(String) -> String {
    move |c: String| {
        c.replacen(
            "port = 13306\nhostgroup = 10\nmax_connections = 1000",
            &format!("port = 13306\nhostgroup = 10\nmax_connections = {max}"),
            1,
        )
        .replacen(
            "default_schema = \"sbtest\"",
            "default_schema = \"sbtest\"\nsplit_reads = false",
            1,
        )
    }
}

/// Asserts that the proxy never held more than `max` backend connections at once to the
/// writer node (13306 in hostgroup 10), as its admin port counts them.
pub fn assert_writer_connections_at_most(proxy: &Proxy, max: u32) {
    let sql = "SELECT MaxConnUsed FROM stats_mysql_connection_pool \
               WHERE hostgroup = 10 AND srv_port = 13306";
    let used: u32 = mariadb_ok(proxy, proxy.admin_port, "admin", sql)
        .trim()
        .parse()
        .unwrap();
    assert!(
        used <= max,
        "the node saw {used} connections from the proxy"
    );
}

/// [`capped`], with `pool` (lines of the `[pool]` section) added.
pub fn capped_pool(max: u32, pool: &'static str) -> impl FnOnce(String) -> String {
    move |c: String| {
        capped(max)(c).replacen("[throttle]", &format!("[pool]\n{pool}\n\n[throttle]"), 1)
    }
}

/// A client that speaks the protocol packet by packet, for tests of what well-behaved
/// clients never send.
#[derive(Debug)]
pub struct RawClient {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

/// A logical packet as read by [`RawClient`].
#[derive(Debug)]
pub struct RawPacket {
    pub seq: u8,
    pub payload: Vec<u8>,
}

impl RawClient {
    pub fn connect(port: u16) -> RawClient {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        RawClient {
            stream,
            buf: Vec::new(),
        }
    }

    /// Reads one logical packet; `None` when the server closed the connection.
    pub fn read(&mut self) -> Option<RawPacket> {
        loop {
            if let Some(span) = check_packet(&self.buf, 1 << 30).unwrap() {
                let payload = reassemble(&self.buf, &span);
                self.buf.drain(..span.wire_len);
                return Some(RawPacket {
                    seq: span.first_seq,
                    payload,
                });
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    pub fn write(&mut self, seq: u8, payload: &[u8]) {
        let mut out = BytesMut::new();
        encode_packet(&mut out, seq, payload);
        self.stream.write_all(&out).unwrap();
    }

    pub fn greeting(&mut self) -> InitialHandshake {
        let p = self.read().expect("greeting");
        InitialHandshake::decode(&p.payload).expect("a valid greeting")
    }

    /// Logs in with `mysql_native_password` as a 4.1 client; returns the final packet's
    /// error, if any.
    pub fn login(port: u16, user: &str, password: &str) -> Result<RawClient, ErrPacket> {
        RawClient::login_on(RawClient::connect(port), user, password)
    }

    /// Like [`RawClient::login`], with extra capability flags (e.g. session tracking, which
    /// libmariadb-based clients ask for).
    pub fn login_with(
        port: u16,
        user: &str,
        password: &str,
        extra_capabilities: u32,
    ) -> Result<RawClient, ErrPacket> {
        RawClient::connect(port)
            .handshake_with(user, password, client_capabilities() | extra_capabilities)
            .expect("the proxy answered the login")
    }

    /// Like [`RawClient::login`], from a chosen source address in 127.0.0.0/8.
    pub fn login_from(
        port: u16,
        source: &str,
        user: &str,
        password: &str,
    ) -> Result<RawClient, ErrPacket> {
        RawClient::login_on(RawClient::connect_from(port, source), user, password)
    }

    /// A connection from a chosen local source address (std cannot bind before connecting;
    /// tokio's socket can).
    pub fn connect_from(port: u16, source: &str) -> RawClient {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        let stream = runtime
            .block_on(async {
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.bind(std::net::SocketAddr::new(source.parse().unwrap(), 0))?;
                socket.connect(([127, 0, 0, 1], port).into()).await
            })
            .unwrap_or_else(|e| panic!("connect from {source}: {e}"));
        let stream = stream.into_std().unwrap();
        stream.set_nonblocking(false).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        RawClient {
            stream,
            buf: Vec::new(),
        }
    }

    fn login_on(c: RawClient, user: &str, password: &str) -> Result<RawClient, ErrPacket> {
        c.handshake(user, password)
            .expect("the proxy answered the login")
    }

    /// Like [`RawClient::login`], but any failure (refused, closed, ERR) is `None`.
    pub fn try_login(port: u16, user: &str, password: &str) -> Option<RawClient> {
        let stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .ok()?;
        let c = RawClient {
            stream,
            buf: Vec::new(),
        };
        c.handshake(user, password)?.ok()
    }

    /// The login exchange: `None` when the connection failed, else the server's verdict
    /// (an ERR may also come instead of the greeting).
    fn handshake(self, user: &str, password: &str) -> Option<Result<RawClient, ErrPacket>> {
        self.handshake_with(user, password, client_capabilities())
    }

    fn handshake_with(
        mut self,
        user: &str,
        password: &str,
        capabilities: u32,
    ) -> Option<Result<RawClient, ErrPacket>> {
        let first = self.read()?;
        if first.payload.first() == Some(&header::ERR) {
            return Some(Err(ErrPacket::decode(&first.payload).ok()?));
        }
        let hs = InitialHandshake::decode(&first.payload).ok()?;
        let response = HandshakeResponse {
            capabilities,
            max_packet: 1 << 24,
            charset: 45,
            username: user.into(),
            auth_response: native_proof(&ProvenKey::of_password(password.as_bytes()), &hs.scramble)
                .to_vec(),
            database: Some("sbtest".into()),
            auth_plugin: Some(NATIVE_PASSWORD.into()),
            connect_attrs: None,
            zstd_level: None,
        };
        let mut payload = BytesMut::new();
        response.encode(&mut payload);
        let mut out = BytesMut::new();
        encode_packet(&mut out, 1, &payload);
        self.stream.write_all(&out).ok()?;
        let reply = self.read()?;
        Some(match reply.payload.first() {
            Some(&header::OK) => Ok(self),
            _ => Err(ErrPacket::decode(&reply.payload).ok()?),
        })
    }

    /// Runs a query; `None` when the connection failed underneath.
    pub fn try_query(&mut self, sql: &str) -> Option<Vec<RawPacket>> {
        let mut payload = vec![sluice::protocol::constants::command::QUERY];
        payload.extend_from_slice(sql.as_bytes());
        let mut out = BytesMut::new();
        encode_packet(&mut out, 0, &payload);
        self.stream.write_all(&out).ok()?;
        let mut tracker = ResponseTracker::for_command(payload[0])?;
        let mut packets = Vec::new();
        loop {
            let p = self.read()?;
            let progress = tracker.feed(&p.payload, p.payload.len()).ok()?;
            packets.push(p);
            if let Progress::Done(_) = progress {
                return Some(packets);
            }
        }
    }

    /// Sends a command and collects its whole response.
    pub fn command(&mut self, cmd: u8, body: &[u8]) -> Vec<RawPacket> {
        let mut payload = vec![cmd];
        payload.extend_from_slice(body);
        self.write(0, &payload);
        let mut tracker = match cmd {
            // an execute that asks for a cursor is answered by its metadata alone
            command::STMT_EXECUTE => {
                ResponseTracker::for_execute(body.get(4).is_some_and(|f| f & 1 != 0))
            }
            _ => ResponseTracker::for_command(cmd).expect("a command with a response"),
        };
        let mut packets = Vec::new();
        loop {
            let p = self.read().expect("response packet");
            let progress = tracker.feed(&p.payload, p.payload.len()).unwrap();
            packets.push(p);
            match progress {
                Progress::Done(_) => return packets,
                Progress::More => {}
                Progress::LocalInfile => panic!("unexpected LOCAL INFILE request"),
            }
        }
    }

    pub fn query(&mut self, sql: &str) -> Vec<RawPacket> {
        self.command(sluice::protocol::constants::command::QUERY, sql.as_bytes())
    }

    /// The text values of the first column of a result set.
    pub fn query_column(&mut self, sql: &str) -> Vec<String> {
        self.try_query_column(sql)
            .unwrap_or_else(|err| panic!("{sql}: {err}"))
    }

    /// The text values of the first column of a result set, or the server's error.
    pub fn try_query_column(&mut self, sql: &str) -> Result<Vec<String>, String> {
        let packets = self.query(sql);
        if packets[0].payload[0] == header::ERR {
            return Err(ErrPacket::decode(&packets[0].payload).unwrap().to_string());
        }
        let mut eofs = 0;
        let mut values = Vec::new();
        for p in &packets[1..] {
            if p.payload[0] == header::EOF && p.payload.len() < 9 {
                eofs += 1;
                continue;
            }
            if eofs == 1 {
                let len = p.payload[0] as usize;
                values.push(String::from_utf8_lossy(&p.payload[1..1 + len]).into_owned());
            }
        }
        Ok(values)
    }
}

pub fn client_capabilities() -> u32 {
    capability::LONG_PASSWORD
        | capability::PROTOCOL_41
        | capability::SECURE_CONNECTION
        | capability::PLUGIN_AUTH
        | capability::TRANSACTIONS
        | capability::MULTI_RESULTS
        | capability::CONNECT_WITH_DB
}

/// Expects an ERR packet and returns it.
pub fn expect_err(p: &RawPacket) -> ErrPacket {
    assert_eq!(
        p.payload[0],
        header::ERR,
        "expected ERR, got {:?}",
        p.payload
    );
    ErrPacket::decode(&p.payload).unwrap()
}

/// `SELECT @@port` in `sessions` new sessions of `app`: how often each port answered
/// (each session gets its reader connection by the weighted rotation).
pub fn read_ports(proxy: &Proxy, sessions: usize) -> std::collections::HashMap<String, usize> {
    let mut seen = std::collections::HashMap::new();
    for _ in 0..sessions {
        let mut c = RawClient::login(proxy.port, "app", "app").unwrap();
        *seen
            .entry(c.query_column("SELECT @@port")[0].clone())
            .or_insert(0) += 1;
    }
    seen
}

/// Runs a sysbench workload through `port` as `app` on `database` (4 small tables).
pub fn sysbench(port: u16, workload: &str, database: &str, args: &[&str]) -> Output {
    Command::new("sysbench")
        .arg(workload)
        .args([
            "--mysql-host=127.0.0.1",
            &format!("--mysql-port={port}"),
            "--mysql-user=app",
            "--mysql-password=app",
            &format!("--mysql-db={database}"),
            "--tables=2",
            "--table-size=2000",
        ])
        .args(args)
        .output()
        .expect("sysbench is installed")
}

pub fn python() -> PathBuf {
    let venv = repo().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "{} missing: run scripts/test.sh (it installs the Python driver)",
        venv.display()
    );
    venv
}

/// Runs a driver's `program` (its arguments given) against `proxy`; its output. The test
/// fails, with the program's output and the proxy's log, unless the program succeeded.
pub fn succeeds(mut program: Command, driver: &str, proxy: &Proxy) -> String {
    let out = program
        .output()
        .unwrap_or_else(|e| panic!("{driver}: {e} (scripts/setup.sh installs it)"));
    assert!(
        out.status.success(),
        "{driver} failed:\n{}{}\nproxy log:\n{}",
        stdout(&out),
        stderr(&out),
        proxy.log()
    );
    stdout(&out)
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A plain HTTP GET on 127.0.0.1: the status and the body.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(tcp, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1.to_string();
    (status, body)
}

/// Config lines for an extra hostgroup `id` holding the one server on `port`.
pub fn hostgroup_of(id: u32, port: u16) -> String {
    format!(
        "\n[[hostgroups]]\nid = {id}\nname = \"only-{port}\"\n\n\
         [[servers]]\nhost = \"127.0.0.1\"\nport = {port}\nhostgroup = {id}\n"
    )
}

/// The values of a text-protocol row packet, NULL as `None`; lengths of any size.
pub fn row_values(mut payload: &[u8]) -> Vec<Option<Vec<u8>>> {
    let mut values = Vec::new();
    while let Some((&first, rest)) = payload.split_first() {
        let (len, rest) = match first {
            0xFB => {
                values.push(None);
                payload = rest;
                continue;
            }
            0xFC => (
                usize::from(u16::from_le_bytes([rest[0], rest[1]])),
                &rest[2..],
            ),
            0xFD => (
                usize::from(rest[0]) | usize::from(rest[1]) << 8 | usize::from(rest[2]) << 16,
                &rest[3..],
            ),
            0xFE => (
                u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize,
                &rest[8..],
            ),
            n => (usize::from(n), rest),
        };
        values.push(Some(rest[..len].to_vec()));
        payload = &rest[len..];
    }
    values
}
