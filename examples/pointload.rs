//! A light load generator for connection-scale runs: N client connections in one process,
//! each logged in once and then sending sysbench's `oltp_point_select` statement
//! (`SELECT c FROM sbtestT WHERE id=N`, text protocol) back to back for a fixed time.
//!
//! sysbench gives every client an OS thread; at 2,000 clients on a small machine its own
//! threads then cost more CPU than the proxy and the database together, and the run
//! measures the load generator. Here the clients are tasks on one thread, so what changes
//! between 64 and 2,000 clients is what the proxy (or the server) does with them.
//!
//! usage: pointload --port P [--clients 64] [--time 10] [--user app] [--password app]
//!                  [--database sbtest] [--tables 4] [--table-size 10000] [--prepared 0|1]
//!                  [--range ROWS]
//!
//! With `--prepared 1` each client prepares the statement once per table and executes it
//! (binary protocol) as sysbench does by default: the parameter types go with the first
//! execute of each statement only, later ones rely on the server having kept them.
//!
//! With `--range ROWS` (text protocol) each statement reads ROWS consecutive rows
//! (`SELECT c FROM sbtestT WHERE id BETWEEN N AND N+ROWS-1`): big answers, for runs that
//! stress buffers rather than round trips.
//!
//! Prints one line of `key=value` pairs: clients, seconds, queries, qps, errors, p50_us,
//! p95_us, p99_us.

use std::time::{Duration, Instant};

mod support;

use bytes::BytesMut;
use sluice::protocol::constants::{command, header};
use sluice::protocol::frame::encode_packet;
use sluice::protocol::handshake::InitialHandshake;
use sluice::protocol::response::{Progress, ResponseTracker};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

struct Options {
    port: u16,
    clients: usize,
    seconds: u64,
    user: String,
    password: String,
    database: String,
    tables: u32,
    table_size: u32,
    prepared: bool,
    range: u32,
}

impl Options {
    fn parse() -> Result<Options, String> {
        let mut o = Options {
            port: 0,
            clients: 64,
            seconds: 10,
            user: "app".into(),
            password: "app".into(),
            database: "sbtest".into(),
            tables: 4,
            table_size: 10_000,
            prepared: false,
            range: 0,
        };
        for (flag, value) in support::flags()? {
            let number = |v: &str| support::number(&flag, v);
            match flag.as_str() {
                "--port" => o.port = number(&value)? as u16,
                "--clients" => o.clients = number(&value)? as usize,
                "--time" => o.seconds = number(&value)?,
                "--user" => o.user = value,
                "--password" => o.password = value,
                "--database" => o.database = value,
                "--tables" => o.tables = number(&value)? as u32,
                "--table-size" => o.table_size = number(&value)? as u32,
                "--prepared" => o.prepared = number(&value)? != 0,
                "--range" => o.range = number(&value)? as u32,
                _ => return Err(format!("unknown option {flag}")),
            }
        }
        if o.port == 0 {
            return Err("--port is required".into());
        }
        Ok(o)
    }
}

/// One client connection: a buffered socket and the payload of the packet last read.
struct Client {
    stream: BufReader<TcpStream>,
    payload: Vec<u8>,
    out: BytesMut,
}

impl Client {
    async fn connect(o: &Options) -> Result<Client, String> {
        let tcp = TcpStream::connect(("127.0.0.1", o.port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let mut client = Client {
            stream: BufReader::with_capacity(16 * 1024, tcp),
            payload: Vec::with_capacity(1024),
            out: BytesMut::with_capacity(256),
        };
        client.read().await?;
        if client.payload.first() == Some(&header::ERR) {
            return Err(client.error_text());
        }
        let greeting = InitialHandshake::decode(&client.payload).map_err(|e| e.to_string())?;
        let response = support::native_login(&o.user, &o.password, &greeting, Some(&o.database), 0);
        let mut payload = BytesMut::new();
        response.encode(&mut payload);
        client.send(1, &payload).await?;
        client.read().await?;
        match client.payload.first() {
            Some(&header::OK) => Ok(client),
            _ => Err(format!("login refused: {}", client.error_text())),
        }
    }

    async fn send(&mut self, seq: u8, payload: &[u8]) -> Result<(), String> {
        self.out.clear();
        encode_packet(&mut self.out, seq, payload);
        self.stream
            .get_mut()
            .write_all(&self.out)
            .await
            .map_err(|e| format!("write: {e}"))
    }

    /// Reads one packet (point selects never need more than one frame) into `payload`.
    async fn read(&mut self) -> Result<(), String> {
        let mut head = [0u8; 4];
        self.stream
            .read_exact(&mut head)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let len = usize::from(head[0]) | usize::from(head[1]) << 8 | usize::from(head[2]) << 16;
        self.payload.resize(len, 0);
        self.stream
            .read_exact(&mut self.payload)
            .await
            .map_err(|e| format!("read: {e}"))?;
        Ok(())
    }

    fn error_text(&self) -> String {
        support::error_text(&self.payload)
    }

    /// Runs one statement to the end of its response; whether it ended in an ERR.
    async fn query(&mut self, sql: &[u8]) -> Result<bool, String> {
        self.command(command::QUERY, sql).await
    }

    /// Prepares `sql`; its statement id.
    async fn prepare(&mut self, sql: &[u8]) -> Result<u32, String> {
        let mut payload = Vec::with_capacity(sql.len() + 1);
        payload.push(command::STMT_PREPARE);
        payload.extend_from_slice(sql);
        self.send(0, &payload).await?;
        self.read().await?;
        if self.payload.first() != Some(&header::OK) || self.payload.len() < 9 {
            return Err(format!("prepare refused: {}", self.error_text()));
        }
        let id = u32::from_le_bytes(self.payload[1..5].try_into().expect("4 bytes"));
        let params = u16::from_le_bytes([self.payload[7], self.payload[8]]);
        let columns = u16::from_le_bytes([self.payload[5], self.payload[6]]);
        // definitions, each followed by an EOF when there are any
        let mut left = usize::from(params)
            + usize::from(params > 0)
            + usize::from(columns)
            + usize::from(columns > 0);
        while left > 0 {
            self.read().await?;
            left -= 1;
        }
        Ok(id)
    }

    /// Executes statement `id` with one integer parameter; whether it ended in an ERR.
    async fn execute(&mut self, id: u32, value: u64, send_types: bool) -> Result<bool, String> {
        let mut body = Vec::with_capacity(24);
        body.extend_from_slice(&id.to_le_bytes());
        body.push(0); // no cursor
        body.extend_from_slice(&1u32.to_le_bytes());
        body.push(0); // NULL bitmap
        body.push(u8::from(send_types));
        if send_types {
            body.extend_from_slice(&[0x08, 0x00]); // LONGLONG
        }
        body.extend_from_slice(&value.to_le_bytes());
        self.command(command::STMT_EXECUTE, &body).await
    }

    async fn command(&mut self, cmd: u8, body: &[u8]) -> Result<bool, String> {
        let mut payload = Vec::with_capacity(body.len() + 1);
        payload.push(cmd);
        payload.extend_from_slice(body);
        self.send(0, &payload).await?;
        let mut tracker = ResponseTracker::for_command(cmd).expect("the command responds");
        loop {
            self.read().await?;
            let len = self.payload.len();
            match tracker.feed(&self.payload, len) {
                Ok(Progress::Done(outcome)) => return Ok(outcome.error),
                Ok(Progress::More) => {}
                Ok(Progress::LocalInfile) => return Err("unexpected LOCAL INFILE".into()),
                Err(e) => return Err(format!("bad response: {e:?}")),
            }
        }
    }
}

/// A latency histogram in microseconds: exact below 64 µs, then 32 buckets per power of
/// two (about 3 % wide) up to 16 s; small enough to keep one per client and merge.
struct Latencies(Vec<u64>);

impl Latencies {
    const BUCKETS: usize = 64 + 19 * 32;

    fn new() -> Latencies {
        Latencies(vec![0; Self::BUCKETS])
    }

    fn bucket(us: u64) -> usize {
        if us < 64 {
            return us as usize;
        }
        let exponent = 63 - u64::from(us.leading_zeros());
        if exponent >= 25 {
            return Self::BUCKETS - 1;
        }
        let sub = (us >> (exponent - 5)) & 31;
        64 + (exponent as usize - 6) * 32 + sub as usize
    }

    /// The smallest value that falls in bucket `i`.
    fn floor(i: usize) -> u64 {
        if i < 64 {
            return i as u64;
        }
        let exponent = (i - 64) / 32 + 6;
        let sub = ((i - 64) % 32) as u64;
        (32 + sub) << (exponent - 5)
    }

    fn record(&mut self, d: Duration) {
        self.0[Self::bucket(d.as_micros() as u64)] += 1;
    }

    fn merge(&mut self, other: &Latencies) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a += b;
        }
    }

    fn percentile(&self, p: f64) -> u64 {
        let total: u64 = self.0.iter().sum();
        let wanted = ((total as f64 * p).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.0.iter().enumerate() {
            seen += n;
            if seen >= wanted {
                return Self::floor(i);
            }
        }
        0
    }
}

/// What one client did between start and deadline.
struct Tally {
    queries: u64,
    errors: u64,
    latencies: Latencies,
}

/// xorshift64*: the ids need to be spread, not unpredictable.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

async fn drive(
    mut client: Client,
    o: std::sync::Arc<Options>,
    seed: u64,
    start: tokio::time::Instant,
    deadline: Instant,
) -> Result<Tally, String> {
    let mut tally = Tally {
        queries: 0,
        errors: 0,
        latencies: Latencies::new(),
    };
    let mut state = seed | 1;
    let mut sql = Vec::with_capacity(64);
    // prepared: one statement per table, and whether its types were sent yet
    let mut statements = Vec::new();
    if o.prepared {
        for table in 1..=o.tables {
            let text = format!("SELECT c FROM sbtest{table} WHERE id=?");
            statements.push((client.prepare(text.as_bytes()).await?, false));
        }
    }
    tokio::time::sleep_until(start).await;
    while Instant::now() < deadline {
        let table = next_random(&mut state) % u64::from(o.tables) + 1;
        let id = next_random(&mut state) % u64::from(o.table_size) + 1;
        let began = Instant::now();
        let failed = if o.prepared {
            let (statement, typed) = &mut statements[table as usize - 1];
            let send_types = !std::mem::replace(typed, true);
            client.execute(*statement, id, send_types).await?
        } else {
            sql.clear();
            use std::io::Write;
            if o.range > 0 {
                let last = id + u64::from(o.range) - 1;
                write!(
                    sql,
                    "SELECT c FROM sbtest{table} WHERE id BETWEEN {id} AND {last}"
                )
                .expect("in memory");
            } else {
                write!(sql, "SELECT c FROM sbtest{table} WHERE id={id}").expect("in memory");
            }
            client.query(&sql).await?
        };
        tally.latencies.record(began.elapsed());
        tally.queries += 1;
        tally.errors += u64::from(failed);
    }
    Ok(tally)
}

fn main() {
    let o = match Options::parse() {
        Ok(o) => std::sync::Arc::new(o),
        Err(e) => {
            eprintln!("pointload: {e}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let code = runtime.block_on(async move {
        // everyone logs in first (a few at a time), then all start together
        let mut clients = Vec::with_capacity(o.clients);
        for _ in 0..o.clients {
            match Client::connect(&o).await {
                Ok(c) => clients.push(c),
                Err(e) => {
                    eprintln!("pointload: client {}: {e}", clients.len() + 1);
                    return 1;
                }
            }
        }
        let start = tokio::time::Instant::now() + Duration::from_millis(200);
        let deadline = Instant::now() + Duration::from_millis(200 + o.seconds * 1000);
        let tasks: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let seed = 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(i as u64 + 1);
                tokio::spawn(drive(c, o.clone(), seed, start, deadline))
            })
            .collect();
        let mut total = Tally {
            queries: 0,
            errors: 0,
            latencies: Latencies::new(),
        };
        let mut failures = 0;
        for task in tasks {
            match task.await.expect("client task") {
                Ok(t) => {
                    total.queries += t.queries;
                    total.errors += t.errors;
                    total.latencies.merge(&t.latencies);
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 {
                        eprintln!("pointload: a client failed: {e}");
                    }
                }
            }
        }
        let seconds = o.seconds as f64;
        println!(
            "clients={} seconds={} queries={} qps={:.1} errors={} failed_clients={} p50_us={} p95_us={} p99_us={}",
            o.clients,
            o.seconds,
            total.queries,
            total.queries as f64 / seconds,
            total.errors,
            failures,
            total.latencies.percentile(0.50),
            total.latencies.percentile(0.95),
            total.latencies.percentile(0.99),
        );
        i32::from(failures > 0 || total.errors > 0)
    });
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::Latencies;

    #[test]
    fn every_bucket_holds_its_own_floor_and_floors_rise() {
        for i in 0..Latencies::BUCKETS {
            assert_eq!(Latencies::bucket(Latencies::floor(i)), i, "bucket {i}");
            if i > 0 {
                assert!(Latencies::floor(i) > Latencies::floor(i - 1));
            }
        }
        assert_eq!(Latencies::bucket(u64::MAX), Latencies::BUCKETS - 1);
    }

    #[test]
    fn percentiles_come_from_the_recorded_values() {
        let mut l = Latencies::new();
        for us in 1..=100u64 {
            l.record(std::time::Duration::from_micros(us));
        }
        assert_eq!(l.percentile(0.5), 50);
        let p99 = l.percentile(0.99);
        assert!((96..=99).contains(&p99), "{p99}");
    }
}
