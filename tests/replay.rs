//! Transaction replay against the real cluster: transactions open on the writer when it is
//! killed or hung go on on the next writer and commit exactly once; a replay whose
//! answers differ from the first run's is refused and the client's connection closed.
//! These tests fault servers of the shared local cluster, so `scripts/test.sh` runs them
//! with the failover tests, one at a time.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::binary::{execute, prepare, Param};
use common::nodes::{on_node, writer_port, Fault};
use common::{stat, Proxy, RawClient};
use sluice::protocol::constants::header;
use sluice::protocol::packets::ErrPacket;

/// The node every check reads from: never the writer here (lowest priority), never faulted.
const SURVIVOR: u16 = 13308;

fn create_tables() {
    on_node(
        13306,
        "CREATE TABLE IF NOT EXISTS sbtest.replay_ledger (src VARCHAR(60), n BIGINT, PRIMARY KEY (src, n)); \
         CREATE TABLE IF NOT EXISTS sbtest.replay_totals (src VARCHAR(60) PRIMARY KEY, total BIGINT NOT NULL, count BIGINT NOT NULL)",
    );
}

/// How one transaction of a [`TransactionLoop`] client ended.
#[derive(Debug, Clone, PartialEq)]
enum Ended {
    Committed,
    /// The COMMIT was sent and failed: whether it committed is unknown.
    CommitFailed(String),
    /// A statement before the COMMIT failed (the step and the error).
    FailedBefore(usize, String),
}

/// How each client's transaction `n` ended, and when.
type Endings = Mutex<BTreeMap<(String, u64), (Ended, Instant)>>;

/// Clients running BEGIN / INSERT / UPDATE / SELECT / COMMIT transactions as fast as they
/// can, idling a little inside each so that a fault finds most of them in one. Client
/// `src`'s transaction `n` inserts ledger row (src, n) and adds n to its total.
struct TransactionLoop {
    stop: Arc<AtomicBool>,
    ended: Arc<Endings>,
    handles: Vec<thread::JoinHandle<()>>,
}

impl TransactionLoop {
    fn start(port: u16, source: &str, clients: usize) -> TransactionLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let ended = Arc::new(Mutex::new(BTreeMap::new()));
        let handles = (0..clients)
            .map(|i| {
                let (stop, ended) = (stop.clone(), ended.clone());
                let src = format!("{source}-{i}");
                on_node(
                    13306,
                    &format!("INSERT INTO sbtest.replay_totals VALUES ('{src}', 0, 0)"),
                );
                thread::spawn(move || run_transactions(port, &src, &stop, &ended))
            })
            .collect();
        TransactionLoop {
            stop,
            ended,
            handles,
        }
    }

    fn committed_after(&self, t: Instant) -> usize {
        let ended = self.ended.lock().unwrap();
        ended
            .values()
            .filter(|(e, at)| *e == Ended::Committed && *at > t)
            .count()
    }

    fn finish(self) -> BTreeMap<(String, u64), Ended> {
        self.stop.store(true, Ordering::Relaxed);
        for handle in self.handles {
            handle.join().unwrap();
        }
        let ended = self.ended.lock().unwrap();
        ended
            .iter()
            .map(|(k, (e, _))| (k.clone(), e.clone()))
            .collect()
    }
}

fn run_transactions(port: u16, src: &str, stop: &AtomicBool, ended: &Endings) {
    let mut client: Option<RawClient> = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let c = match client.as_mut() {
            Some(c) => c,
            None => match RawClient::try_login(port, "app", "app") {
                Some(c) => client.insert(c),
                None => {
                    thread::sleep(Duration::from_millis(50));
                    continue;
                }
            },
        };
        n += 1;
        let steps = [
            "BEGIN".to_owned(),
            format!("INSERT INTO sbtest.replay_ledger (src, n) VALUES ('{src}', {n})"),
            format!("UPDATE sbtest.replay_totals SET total = total + {n}, count = count + 1 WHERE src = '{src}'"),
            format!("SELECT total FROM sbtest.replay_totals WHERE src = '{src}'"),
            "COMMIT".to_owned(),
        ];
        let mut outcome = Ended::Committed;
        for (step, sql) in steps.iter().enumerate() {
            if step == 2 || step == 4 {
                thread::sleep(Duration::from_millis(20));
            }
            let error = match c.try_query(sql) {
                Some(p) if p[0].payload[0] == header::ERR => {
                    Some(ErrPacket::decode(&p[0].payload).unwrap().to_string())
                }
                Some(_) => None,
                None => Some("connection closed".to_owned()),
            };
            if let Some(error) = error {
                outcome = match step {
                    4 => Ended::CommitFailed(error),
                    _ => Ended::FailedBefore(step, error),
                };
                break;
            }
        }
        if outcome != Ended::Committed {
            client = None;
        }
        let key = (src.to_owned(), n);
        ended.lock().unwrap().insert(key, (outcome, Instant::now()));
    }
}

/// What the survivor holds for `source`'s clients: each one's ledger rows, and its total
/// and count.
fn stored(source: &str) -> BTreeMap<String, (Vec<u64>, u64, u64)> {
    let mut stored: BTreeMap<String, (Vec<u64>, u64, u64)> = BTreeMap::new();
    let rows = on_node(
        SURVIVOR,
        &format!("SELECT src, total, count FROM sbtest.replay_totals WHERE src LIKE '{source}-%'"),
    );
    for line in rows.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let entry = stored.entry(f[0].to_owned()).or_default();
        (entry.1, entry.2) = (f[1].parse().unwrap(), f[2].parse().unwrap());
    }
    let ledger = on_node(
        SURVIVOR,
        &format!("SELECT src, n FROM sbtest.replay_ledger WHERE src LIKE '{source}-%'"),
    );
    for line in ledger.lines() {
        let (src, n) = line.split_once('\t').unwrap();
        stored
            .entry(src.to_owned())
            .or_default()
            .0
            .push(n.parse().unwrap());
    }
    stored
}

/// Faults the writer while 4 clients run transactions through the proxy, then checks
/// that every transaction whose COMMIT was not sent committed exactly once, and that
/// clients saw errors only for COMMITs in flight.
fn transactions_survive(fault: Fault) {
    let proxy = Proxy::start();
    create_tables();
    let writer: u16 = writer_port(&proxy).parse().unwrap();
    assert_ne!(writer, SURVIVOR);
    let source = format!("{fault:?}-{}", std::process::id());
    let clients = TransactionLoop::start(proxy.port, &source, 4);
    // one transaction certainly open and between statements when the fault comes (the
    // loop's clients may all be in COMMITs then, when the cluster is slow to certify)
    let held_src = format!("{source}-held");
    on_node(
        13306,
        &format!("INSERT INTO sbtest.replay_totals VALUES ('{held_src}', 0, 0)"),
    );
    let mut held = RawClient::login(proxy.port, "app", "app").unwrap();
    ok(&mut held, "BEGIN");
    ok(
        &mut held,
        &format!("INSERT INTO sbtest.replay_ledger (src, n) VALUES ('{held_src}', 1)"),
    );
    thread::sleep(Duration::from_secs(1));
    let fault_at = Instant::now();
    let applied = fault.apply(writer);
    if fault == Fault::Isolate {
        out_of_the_component(writer);
    }
    ok(
        &mut held,
        &format!("UPDATE sbtest.replay_totals SET total = total + 1, count = count + 1 WHERE src = '{held_src}'"),
    );
    ok(&mut held, "COMMIT");
    let deadline = Instant::now() + Duration::from_secs(40);
    while clients.committed_after(fault_at + Duration::from_secs(1)) < 20 {
        assert!(
            Instant::now() < deadline,
            "{fault:?}: transactions did not resume; proxy log:\n{}",
            proxy
                .log()
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .join("\n")
        );
        thread::sleep(Duration::from_millis(100));
    }
    let mut ended = clients.finish();
    ended.insert((held_src, 1), Ended::Committed);
    let replayed = stat(&proxy, "Transactions_replayed");
    let refused = stat(&proxy, "Transaction_replays_refused");
    applied.undo();

    let failed_before: Vec<_> = ended
        .iter()
        .filter(|(_, e)| matches!(e, Ended::FailedBefore(..)))
        .collect();
    let commits_failed = ended
        .values()
        .filter(|e| matches!(e, Ended::CommitFailed(_)))
        .count();
    eprintln!(
        "{fault:?}: {} transactions, {replayed} replayed, {refused} replays refused, {commits_failed} COMMITs in flight failed",
        ended.len()
    );
    assert!(
        failed_before.is_empty(),
        "{fault:?}: statements before COMMIT failed: {failed_before:?}"
    );
    assert!(replayed > 0, "{fault:?}: the held transaction was replayed");
    assert_eq!(refused, 0, "{fault:?}");
    for (src, (ledger, total, count)) in stored(&source) {
        for n in &ledger {
            let e = &ended[&(src.clone(), *n)];
            assert!(
                matches!(e, Ended::Committed | Ended::CommitFailed(_)),
                "{src} {n} is stored but {e:?}"
            );
        }
        for ((s, n), e) in ended.iter().filter(|((s, _), _)| *s == src) {
            if *e == Ended::Committed {
                assert!(ledger.contains(n), "{s} {n} committed but not stored");
            }
        }
        // each stored transaction's UPDATE applied exactly once, with its INSERT
        assert_eq!(
            (total, count),
            (ledger.iter().sum(), ledger.len() as u64),
            "{src}: totals against the ledger"
        );
    }
}

#[test]
fn transactions_open_on_a_killed_writer_commit_once_on_the_next() {
    transactions_survive(Fault::Kill);
}

#[test]
fn transactions_open_on_a_hung_writer_commit_once_on_the_next() {
    transactions_survive(Fault::Stop);
}

/// The writer cut off from its peers stays up and answers, refusing statements before
/// running them (ERR 1047): each goes to the next writer, after its transaction. A COMMIT
/// it was replicating then fails (ERR 1180): whether it committed is unknown.
#[test]
fn transactions_on_a_writer_out_of_the_primary_component_commit_once_on_the_next() {
    transactions_survive(Fault::Isolate);
}

/// Waits until the isolated node knows it is alone: until then it would still take a
/// statement, and fail its COMMIT.
fn out_of_the_component(port: u16) {
    common::nodes::eventually(
        Duration::from_secs(30),
        "the node out of the component",
        || {
            let out = common::mariadb(
                port,
                &[
                    "-uapp",
                    "-papp",
                    "-e",
                    "SELECT 1 FROM sbtest.replay_ledger LIMIT 1",
                ],
            );
            common::stderr(&out).contains("1047")
        },
    );
}

/// Runs `sql`; the first packet of its answer.
fn run(c: &mut RawClient, sql: &str) -> Vec<u8> {
    c.try_query(sql)
        .unwrap_or_else(|| panic!("{sql}: connection closed"))[0]
        .payload
        .clone()
}

fn ok(c: &mut RawClient, sql: &str) {
    let answer = run(c, sql);
    assert_eq!(
        answer[0],
        header::OK,
        "{sql}: {:?}",
        ErrPacket::decode(&answer)
    );
}

#[test]
fn a_replay_whose_answers_differ_is_refused_and_one_that_matches_commits() {
    let proxy = Proxy::start();
    create_tables();
    let tag = std::process::id();
    let src = |name: &str| format!("{name}-{tag}");
    for name in ["same", "changed"] {
        on_node(
            13306,
            &format!(
                "INSERT INTO sbtest.replay_totals VALUES ('{}', 0, 0)",
                src(name)
            ),
        );
    }
    let insert = |name: &str, n: u32| {
        format!(
            "INSERT INTO sbtest.replay_ledger (src, n) VALUES ('{}', {n})",
            src(name)
        )
    };
    let login = || RawClient::login(proxy.port, "app", "app").unwrap();
    let writer: u16 = writer_port(&proxy).parse().unwrap();

    // answers that will be the same on the next writer
    let mut same = login();
    ok(&mut same, "BEGIN");
    run(
        &mut same,
        &format!(
            "SELECT total FROM sbtest.replay_totals WHERE src = '{}'",
            src("same")
        ),
    );
    ok(&mut same, &insert("same", 1));
    // a prepared statement, executed again relying on the types bound before
    let mut prepared = login();
    let id = prepare(
        &mut prepared,
        "INSERT INTO sbtest.replay_ledger (src, n) VALUES (?, ?)",
    );
    ok(&mut prepared, "BEGIN");
    let executed = execute(
        &mut prepared,
        id,
        &[Param::Text(&src("prepared")), Param::Int(1)],
        true,
    );
    assert_eq!(executed[0].payload[0], header::OK);
    // autocommit off: the first statement opened the transaction
    let mut manual = login();
    ok(&mut manual, "SET autocommit = 0");
    ok(&mut manual, &insert("manual", 1));
    // an answer that cannot be the same twice
    let mut clock = login();
    ok(&mut clock, "BEGIN");
    run(&mut clock, "SELECT NOW(6)");
    ok(&mut clock, &insert("clock", 1));
    // a row another session changes after this transaction read it
    let mut changed = login();
    ok(&mut changed, "BEGIN");
    run(
        &mut changed,
        &format!(
            "SELECT total FROM sbtest.replay_totals WHERE src = '{}'",
            src("changed")
        ),
    );
    ok(&mut changed, &insert("changed", 1));
    on_node(
        SURVIVOR,
        &format!(
            "UPDATE sbtest.replay_totals SET total = 5 WHERE src = '{}'",
            src("changed")
        ),
    );

    let killed = Fault::Kill.apply(writer);
    thread::sleep(Duration::from_millis(300));

    ok(&mut same, "COMMIT");
    let executed = execute(
        &mut prepared,
        id,
        &[Param::Text(&src("prepared")), Param::Int(2)],
        false,
    );
    assert_eq!(
        executed[0].payload[0],
        header::OK,
        "{:?}",
        ErrPacket::decode(&executed[0].payload)
    );
    ok(&mut prepared, "COMMIT");
    ok(&mut manual, &insert("manual", 2));
    ok(&mut manual, "COMMIT");
    for (mut client, next) in [(clock, insert("clock", 2)), (changed, "COMMIT".to_owned())] {
        let answer = run(&mut client, &next);
        let err = ErrPacket::decode(&answer).expect("an error");
        assert_eq!(err.code, 1152, "{err}");
        assert!(err.message.contains("could not be replayed"), "{err}");
        assert!(
            client.try_query("SELECT 1").is_none(),
            "the connection is closed after a transaction is lost"
        );
    }
    let replayed = stat(&proxy, "Transactions_replayed");
    let refused = stat(&proxy, "Transaction_replays_refused");
    killed.undo();

    let rows = on_node(
        SURVIVOR,
        &format!(
            "SELECT src, n FROM sbtest.replay_ledger WHERE src LIKE '%-{tag}' ORDER BY src, n"
        ),
    );
    let expected: String = [
        ("manual", 1),
        ("manual", 2),
        ("prepared", 1),
        ("prepared", 2),
        ("same", 1),
    ]
    .iter()
    .map(|(name, n)| format!("{}\t{n}\n", src(name)))
    .collect();
    assert_eq!(
        rows, expected,
        "committed once each, the refused ones not at all"
    );
    assert_eq!((replayed, refused), (3, 2));
}

#[test]
fn a_transaction_on_a_writer_set_offline_hard_moves_to_the_next_writer() {
    let proxy = Proxy::start();
    create_tables();
    let row = format!("offline-{}", std::process::id());
    let writer = writer_port(&proxy);
    let mut c = RawClient::login(proxy.port, "app", "app").unwrap();
    ok(&mut c, "BEGIN");
    ok(
        &mut c,
        &format!("INSERT INTO sbtest.replay_ledger (src, n) VALUES ('{row}', 1)"),
    );
    common::admin_ok(
        &proxy,
        &format!(
            "UPDATE mysql_servers SET status = 'OFFLINE_HARD' WHERE port = {writer}; \
             LOAD MYSQL SERVERS TO RUNTIME"
        ),
    );
    // the transaction's next statement finds its server out of service: the transaction
    // is replayed on the new writer, and goes on there
    ok(
        &mut c,
        &format!("INSERT INTO sbtest.replay_ledger (src, n) VALUES ('{row}', 2)"),
    );
    let moved_to = c.query_column("SELECT @@port");
    ok(&mut c, "COMMIT");
    common::admin_ok(
        &proxy,
        &format!(
            "UPDATE mysql_servers SET status = 'ONLINE' WHERE port = {writer}; \
             LOAD MYSQL SERVERS TO RUNTIME"
        ),
    );
    assert_ne!(moved_to, [writer]);
    assert_eq!(stat(&proxy, "Transactions_replayed"), 1);
    let stored = on_node(
        SURVIVOR,
        &format!("SELECT n FROM sbtest.replay_ledger WHERE src = '{row}' ORDER BY n"),
    );
    assert_eq!(stored, "1\n2\n");
}

#[test]
fn a_statement_a_node_out_of_the_primary_component_refuses_runs_on_the_next_writer() {
    let proxy = Proxy::start();
    create_tables();
    let row = format!("isolated-{}", std::process::id());
    let writer: u16 = writer_port(&proxy).parse().unwrap();
    let mut c = RawClient::login(proxy.port, "app", "app").unwrap();
    ok(&mut c, "BEGIN");
    ok(
        &mut c,
        &format!("INSERT INTO sbtest.replay_ledger (src, n) VALUES ('{row}', 1)"),
    );
    let isolated = Fault::Isolate.apply(writer);
    out_of_the_component(writer);
    // the open transaction's connection is still there: its next statement is refused
    // unrun (ERR 1047), so the transaction is replayed on the next writer and goes on
    let second = run(
        &mut c,
        &format!("INSERT INTO sbtest.replay_ledger (src, n) VALUES ('{row}', 2)"),
    );
    let commit = run(&mut c, "COMMIT");
    let replayed = stat(&proxy, "Transactions_replayed");
    isolated.undo();
    assert_eq!(second[0], header::OK, "{:?}", ErrPacket::decode(&second));
    assert_eq!(commit[0], header::OK, "{:?}", ErrPacket::decode(&commit));
    assert_eq!(replayed, 1);
    let stored = on_node(
        SURVIVOR,
        &format!("SELECT n FROM sbtest.replay_ledger WHERE src = '{row}' ORDER BY n"),
    );
    assert_eq!(stored, "1\n2\n");
}

/// A COM_STMT_PREPARE changes nothing: in flight on a writer that dies, it is prepared on
/// the next writer, outside a transaction as inside one (after the transaction's replay),
/// and the statements it prepared run there. So is a `SET NAMES` (what drivers send as
/// they connect), a ping needs no writer at all, and with autocommit off (as
/// Connector/Python sets it) so is the read or write that opened a transaction: its loss
/// rolled the transaction back.
#[test]
fn prepares_and_set_names_in_flight_on_a_dying_writer_are_answered_by_the_next() {
    let proxy = Proxy::start();
    create_tables();
    let tag = std::process::id();
    let writer: u16 = writer_port(&proxy).parse().unwrap();
    let insert = "INSERT INTO sbtest.replay_ledger (src, n) VALUES (?, ?)";
    let login = || RawClient::login(proxy.port, "app", "app").unwrap();
    let mut inside = login();
    ok(&mut inside, "BEGIN");
    ok(
        &mut inside,
        &format!("INSERT INTO sbtest.replay_ledger (src, n) VALUES ('inside-{tag}', 1)"),
    );
    // warm the other session's primary connection: its prepare is in flight there
    let mut outside = login();
    run(&mut outside, "SELECT 1 FOR UPDATE");
    let mut names = login();
    run(&mut names, "SELECT 1 FOR UPDATE");
    let mut pinging = login();
    let (mut off_write, mut off_read) = (login(), login());
    ok(&mut off_write, "SET autocommit = 0");
    ok(&mut off_read, "SET autocommit = 0");

    // the writer hangs with both prepares and the SET sent to it, then dies
    let stopped = Fault::Stop.apply(writer);
    let prepare_in = |mut c: RawClient| thread::spawn(move || (prepare(&mut c, insert), c));
    let (inside, outside) = (prepare_in(inside), prepare_in(outside));
    let names = thread::spawn(move || (run(&mut names, "SET NAMES latin1"), names));
    let off_insert = format!("INSERT INTO sbtest.replay_ledger (src, n) VALUES ('off-{tag}', 1)");
    let off_write = thread::spawn(move || (run(&mut off_write, &off_insert), off_write));
    let off_read = thread::spawn(move || off_read.query_column("SELECT @@autocommit"));
    assert_eq!(
        pinging.command(sluice::protocol::constants::command::PING, b"")[0].payload[0],
        header::OK,
        "a session with nothing on the writer is answered"
    );
    thread::sleep(Duration::from_millis(300));
    let killed = Fault::Kill.apply(writer);
    stopped.superseded();
    let (set, mut names) = names.join().expect("SET NAMES answered");
    assert_eq!(set[0], header::OK, "{:?}", ErrPacket::decode(&set));
    assert_eq!(
        names.query_column("SELECT @@character_set_client"),
        ["latin1"]
    );
    let read = off_read.join().expect("read answered");
    assert_eq!(read, ["0"], "answered on a connection with autocommit off");
    let (written, mut off_write) = off_write.join().expect("write answered");
    assert_eq!(written[0], header::OK, "{:?}", ErrPacket::decode(&written));
    ok(&mut off_write, "COMMIT");
    let (inside_id, mut inside) = inside.join().expect("prepared inside the transaction");
    let (outside_id, mut outside) = outside.join().expect("prepared outside a transaction");

    let src = |name: &str| format!("{name}-{tag}");
    // executes the prepared insert of ledger row (`name`, n) on `c`
    let inserts = |c: &mut RawClient, id, name: &str, n| {
        let src = src(name);
        let executed = execute(c, id, &[Param::Text(&src), Param::Int(n)], true);
        let answer = &executed[0].payload;
        assert_eq!(answer[0], header::OK, "{:?}", ErrPacket::decode(answer));
    };
    inserts(&mut inside, inside_id, "inside", 2);
    ok(&mut inside, "COMMIT");
    inserts(&mut outside, outside_id, "outside", 1);
    let replayed = stat(&proxy, "Transactions_replayed");
    killed.undo();

    assert_eq!(
        replayed, 1,
        "the transaction was replayed before its prepare"
    );
    let stored = on_node(
        SURVIVOR,
        &format!(
            "SELECT src, n FROM sbtest.replay_ledger WHERE src LIKE '%-{tag}' ORDER BY src, n"
        ),
    );
    let expected = format!(
        "{0}\t1\n{0}\t2\n{1}\t1\n{2}\t1\n",
        src("inside"),
        src("off"),
        src("outside")
    );
    assert_eq!(stored, expected);
}

/// A deadlock's victim runs again. A heavier transaction straight on the writer and the
/// proxy's session each lock a row the other wants; InnoDB rolls back the lighter one, the
/// session's. The proxy replays what the session's transaction did before (nothing, in
/// autocommit) on the same connection and sends the statement again: it waits for the
/// other transaction, then succeeds, and the client never sees the deadlock.
#[test]
fn a_deadlock_victim_runs_again_after_its_transaction_is_replayed() {
    let proxy = Proxy::start();
    create_tables();
    on_node(
        13306,
        "CREATE TABLE IF NOT EXISTS sbtest.deadlock_rows (id INT PRIMARY KEY, n INT NOT NULL); \
         REPLACE INTO sbtest.deadlock_rows SELECT seq, 0 FROM sbtest.seq_1_to_60",
    );
    let tag = std::process::id();
    let writer: u16 = writer_port(&proxy).parse().unwrap();
    let retried = stat(&proxy, "Deadlocks_retried");
    for in_transaction in [false, true] {
        let mut heavy = RawClient::login(writer, "app", "app").unwrap();
        ok(&mut heavy, "BEGIN");
        ok(
            &mut heavy,
            "UPDATE sbtest.deadlock_rows SET n = n + 1 WHERE id >= 10",
        );
        ok(
            &mut heavy,
            "UPDATE sbtest.deadlock_rows SET n = n + 1 WHERE id = 2",
        );
        let mut victim = RawClient::login(proxy.port, "app", "app").unwrap();
        if in_transaction {
            ok(&mut victim, "BEGIN");
            ok(
                &mut victim,
                &format!("INSERT INTO sbtest.replay_ledger (src, n) VALUES ('deadlock-{tag}', 1)"),
            );
        }
        // the victim locks row 1, then waits for row 2
        let waiting = thread::spawn(move || {
            let sql = "UPDATE sbtest.deadlock_rows SET n = n + 1 WHERE id IN (1, 2) ORDER BY id";
            (run(&mut victim, sql), victim)
        });
        thread::sleep(Duration::from_millis(500));
        // the cycle closes: InnoDB rolls back the lighter transaction
        ok(
            &mut heavy,
            "UPDATE sbtest.deadlock_rows SET n = n + 1 WHERE id = 1",
        );
        ok(&mut heavy, "COMMIT");
        let (answer, mut victim) = waiting.join().expect("the victim's UPDATE answered");
        assert_eq!(
            answer[0],
            header::OK,
            "in a transaction: {in_transaction}: {:?}",
            ErrPacket::decode(&answer)
        );
        if in_transaction {
            ok(&mut victim, "COMMIT");
        }
    }
    assert_eq!(stat(&proxy, "Deadlocks_retried"), retried + 2);
    let rows = on_node(
        writer,
        &format!(
            "SELECT id, n FROM sbtest.deadlock_rows WHERE id IN (1, 2, 10) ORDER BY id; \
             SELECT COUNT(*) FROM sbtest.replay_ledger WHERE src = 'deadlock-{tag}'"
        ),
    );
    assert_eq!(
        rows, "1\t4\n2\t4\n10\t2\n1\n",
        "each UPDATE once, the INSERT once"
    );
}
