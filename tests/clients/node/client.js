// node-postgres (pg) through tokengate, run by tests/clients/test_node.py.
// Env: TG_HOST, TG_PORT, TG_USER, TG_TOKEN (a token used as the password), TG_DATABASE.
// Prints one JSON object of facts on stdout; the Python test checks them. Never prints a token.
'use strict';
const pg = require('pg');

const base = {
  host: process.env.TG_HOST,
  port: Number(process.env.TG_PORT),
  user: process.env.TG_USER,
  database: process.env.TG_DATABASE || 'postgres',
  ssl: false,
  connectionTimeoutMillis: 10000,
};
const out = {pgVersion: require('pg/package.json').version};

function typeOf(v) {
  if (v === null) return 'null';
  if (v instanceof Date) return 'Date';
  return typeof v;
}

async function main() {
  const pool = new pg.Pool({...base, password: process.env.TG_TOKEN, max: 3});
  try {
    // Pool: six queries on up to three connections at once.
    const many = await Promise.all([1, 2, 3, 4, 5, 6].map((i) =>
      pool.query('select $1::int * 2 as v, current_user as u, pg_backend_pid() as pid', [i])));
    out.pool = {values: many.map((r) => r.rows[0].v), users: [...new Set(many.map((r) => r.rows[0].u))],
      backends: new Set(many.map((r) => r.rows[0].pid)).size};

    // Parameters and the JS types they come back as.
    const p = await pool.query(
      'select $1::int + 1 as i, $2::text as t, $3::numeric as n, $4::timestamptz as ts, $5::bool as b, ' +
      '$6::int as nul, $7::jsonb as j',
      [41, "it's ünïcode", '1.25', new Date(Date.UTC(2026, 0, 2, 3, 4, 5)), true, null, {a: [1, 2]}]);
    const row = p.rows[0];
    out.params = {values: {...row, ts: row.ts.toISOString()},
      types: Object.fromEntries(Object.entries(row).map(([k, v]) => [k, typeOf(v)])),
      oids: p.fields.map((f) => f.dataTypeID)};

    const client = await pool.connect();
    try {
      // Transaction with rollback.
      await client.query('create temp table t (id int primary key, v text)');
      await client.query('begin');
      await client.query('insert into t select g, $1 || g from generate_series(1, 10) g', ['v']);
      const inside = (await client.query('select count(*)::int as c from t')).rows[0].c;
      await client.query('rollback');
      const after = (await client.query('select count(*)::int as c from t')).rows[0].c;
      out.rollback = {inside, after};

      // Prepared statements (name: → Parse once, then Bind/Execute only).
      const prepared = [];
      for (const x of [1, 2, 3]) {
        prepared.push((await client.query({name: 'plus_one', text: 'select $1::int + 1 as n', values: [x]})).rows[0].n);
      }
      out.prepared = prepared;

      // 100k rows in one result.
      const big = await client.query({text: 'select g, md5(g::text) from generate_series(1, 100000) g', rowMode: 'array'});
      out.bigRows = big.rows.length;
      out.bigSum = big.rows.reduce((s, r) => s + r[0], 0);

      // Pipelined: queries issued without awaiting, one failing in the middle, a token statement among them.
      const pending = [
        client.query('select 1 as a'),
        client.query({name: 'show_tokens', text: 'SHOW API TOKENS'}),
        client.query('select 1/0'),
        client.query({name: 'plus_one', text: 'select $1::int + 1 as n', values: [10]}),
        client.query({name: 'show_tokens', text: 'SHOW API TOKENS'}),
        client.query('select 2 as b'),
      ];
      const settled = await Promise.allSettled(pending);
      out.pipeline = settled.map((s) => s.status === 'fulfilled'
        ? {ok: true, command: s.value.command, rows: s.value.rows.length,
          fields: s.value.fields.map((f) => f.name)}
        : {ok: false, code: s.reason.code});

      // Cancel: pg.Client has no public cancel; a second connection sends a CancelRequest with this
      // client's key, as Client#cancel does.
      const started = Date.now();
      const sleeping = client.query('select pg_sleep(30)');
      // Wait until it runs upstream (a cancel before that would find nothing to cancel).
      for (let i = 0; i < 300; i++) {
        const r = await pool.query("select count(*)::int as n from pg_stat_activity where state = 'active' and query = 'select pg_sleep(30)'");
        if (r.rows[0].n > 0) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      const canceller = new pg.Client({...base, password: process.env.TG_TOKEN});
      canceller.cancel(client, client.activeQuery);
      try {
        await sleeping;
        out.cancel = {code: null};
      } catch (e) {
        out.cancel = {code: e.code, ms: Date.now() - started};
      }
      out.afterCancel = (await client.query('select 42 as v')).rows[0].v;

      // Token statements: create (simple protocol), log in with the new token, alter, show, drop.
      const name = 'node_' + Math.random().toString(36).slice(2, 10);
      const created = await client.query(`CREATE API TOKEN ${name} MAX DURATION '2h' COMMENT 'from node-postgres'`);
      const c = created.rows[0];
      out.create = {command: created.command, fields: created.fields.map((f) => [f.name, f.dataTypeID]),
        name: c.name, tokenParts: c.token.split('.').length, tokenLength: c.token.length,
        expiresType: typeOf(c.expires_at),
        expiresInSeconds: Math.round((c.expires_at.getTime() - Date.now()) / 1000)};

      const other = new pg.Client({...base, password: c.token});
      await other.connect();
      out.newTokenUser = (await other.query('select current_user as u')).rows[0].u;
      await other.end();

      const altered = await client.query(`ALTER API TOKEN ${name} SET COMMENT 'changed from node'`);
      const shown = await client.query({name: 'show_tokens2', text: 'SHOW API TOKENS'});
      const mine = shown.rows.find((r) => r.name === name);
      out.alter = {command: altered.command, comment: mine.comment, status: mine.status,
        createdAtType: typeOf(mine.created_at), lastUsedType: typeOf(mine.last_used_at)};
      const dropped = await client.query(`DROP API TOKEN ${name}`);
      const after2 = (await client.query('SHOW ALL API TOKENS')).rows.find((r) => r.name === name);
      out.drop = {command: dropped.command, status: after2.status};
      try {
        await client.query('DROP API TOKEN no_such_node_token');
        out.dropMissing = null;
      } catch (e) {
        out.dropMissing = e.code;
      }
      const revokedLogin = new pg.Client({...base, password: c.token});
      try {
        await revokedLogin.connect();
        out.revokedLogin = 'connected';
        await revokedLogin.end();
      } catch (e) {
        out.revokedLogin = e.code || 'error';
        out.revokedLoginLeaksToken = String(e.message).includes(c.token);
      }
    } finally {
      client.release();
    }
  } finally {
    await pool.end();
  }
}

main().then(() => {
  process.stdout.write(JSON.stringify(out) + '\n');
}, (e) => {
  out.error = {message: String(e && e.message), code: e && e.code, stack: String(e && e.stack)};
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exitCode = 1;
});
