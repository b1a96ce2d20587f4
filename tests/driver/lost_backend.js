// A session bound by a user variable loses its backend connection through Sluice, with
// the mysqljs driver (Debian's node-mysql): the driver reports the proxy's ERR with its
// code and SQL state, then knows the connection is gone — never a fresh one where @keep
// is NULL.
//   NODE_PATH=/usr/share/nodejs node lost_backend.js PORT WRITER_PORT
// Exits non-zero with a message when the proxy got something wrong; prints one line of
// facts on success.
const mysql = require('mysql');

const [port, writerPort] = process.argv.slice(2).map(Number);
const options = (p) => ({ host: '127.0.0.1', port: p, user: 'app', password: 'app', database: 'sbtest' });

function query(conn, sql) {
  return new Promise((resolve, reject) => conn.query(sql, (err, rows) => (err ? reject(err) : resolve(rows))));
}

function fail(what) {
  console.error(`failed: ${what}`);
  process.exit(1);
}

async function main() {
  const conn = mysql.createConnection(options(port));
  let closed = false;
  conn.on('error', () => { closed = true; });
  conn.on('end', () => { closed = true; });
  await query(conn, 'SET @keep = 42');
  const [{ id }] = await query(conn, 'SELECT CONNECTION_ID() AS id');
  const killer = mysql.createConnection(options(writerPort));
  await query(killer, `KILL ${id}`);
  killer.end();
  let first;
  try {
    const rows = await query(conn, 'SELECT @keep AS keep');
    fail(`SELECT @keep answered ${JSON.stringify(rows)} after its backend connection was killed`);
  } catch (err) {
    if (err.errno !== 1152 || err.sqlState !== '08S01') {
      fail(`expected 1152 (08S01), got ${err.errno} (${err.sqlState}) ${err.code}: ${err.message}`);
    }
    first = `${err.errno} (${err.sqlState}) ${err.code}`;
  }
  let second;
  try {
    await query(conn, 'SELECT @keep AS keep');
    fail('the connection still answered after its state was lost');
  } catch (err) {
    second = err.code;
  }
  // the driver saw the server close the connection
  await new Promise((resolve) => setTimeout(resolve, 100));
  if (!closed && conn.state !== 'disconnected' && conn.state !== 'protocol_error') {
    fail(`the connection is still ${conn.state}`);
  }
  console.log(`node mysql lost backend ok: ${first}, then ${second}`);
  conn.destroy();
}

main().catch((err) => fail(err.stack || err));
