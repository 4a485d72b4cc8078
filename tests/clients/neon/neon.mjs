// @neondatabase/serverless and the ORMs built on it through tokengate, run by tests/clients/test_neon.py.
// The driver is pointed at tokengate only through neonConfig (fetchEndpoint, wsProxy, useSecureWebSocket) and
// a token as the password. Env: TG_HOST, TG_PORT (wire), TG_HTTP_PORT, TG_USER, TG_TOKEN, TG_PASSWORD (the role's
// password: a session opened with a token may not create tokens), TG_DATABASE (a database TG_USER owns). Prints
// one JSON object of facts; the Python test checks them. Never prints a token.
import { neon, neonConfig, Pool } from '@neondatabase/serverless';
import ws from 'ws';
import { drizzle } from 'drizzle-orm/neon-http';
import { pgTable, integer, text, numeric } from 'drizzle-orm/pg-core';
import { eq, sql as dsql } from 'drizzle-orm';
import { Kysely } from 'kysely';
import { NeonDialect } from 'kysely-neon';
import { PrismaNeon, PrismaNeonHTTP } from '@prisma/adapter-neon';
import { PrismaClient } from './generated/prisma/index.js';

const { TG_HOST: host, TG_PORT: port, TG_HTTP_PORT: httpPort, TG_USER: user, TG_TOKEN: token } = process.env;
const database = process.env.TG_DATABASE;
const url = `postgresql://${user}:${encodeURIComponent(token)}@${host}:${port}/${database}`;
const passwordUrl = `postgresql://${user}:${encodeURIComponent(process.env.TG_PASSWORD)}@${host}:${port}/${database}`;

// Only these three settings point the driver at tokengate.
neonConfig.fetchEndpoint = (h) => `http://${h}:${httpPort}/sql`;
neonConfig.webSocketConstructor = ws;
neonConfig.wsProxy = (h, p) => `${h}:${httpPort}/v2?address=${h}:${p}`;
neonConfig.useSecureWebSocket = false;

const out = {};
const typeOf = (v) => (v === null ? 'null' : v instanceof Date ? 'Date' : Buffer.isBuffer(v) ? 'Buffer' : typeof v);
const errorFacts = (e) => ({ name: e.constructor.name, code: e.code ?? null, message: e.message,
  position: e.position ?? null, detail: e.detail ?? null });

async function httpQueries() {
  const sql = neon(url);
  // Parameters of several types, as the driver's own prepareValue sends them.
  const [row] = await sql`select ${41}::int + 1 as i, ${"it's ünïcode"}::text as t, ${'1.25'}::numeric as n,
    ${new Date(Date.UTC(2026, 0, 2, 3, 4, 5))}::timestamptz as ts, ${true}::bool as b, ${null}::int as nul,
    ${{ a: [1, 2] }}::jsonb as j, ${[1, 2, 3]}::int[] as arr, ${Buffer.from([0xde, 0xad])} as bytes,
    ${12345678901234567890n}::numeric as big`;
  out.params = { values: { ...row, ts: row.ts.toISOString(), bytes: row.bytes.toString('hex') },
    types: Object.fromEntries(Object.entries(row).map(([k, v]) => [k, typeOf(v)])) };

  const full = await sql.query('select $1::int as a, current_user as u', [7], { fullResults: true, arrayMode: true });
  out.fullResults = { rows: full.rows, command: full.command, rowCount: full.rowCount, rowAsArray: full.rowAsArray,
    fields: full.fields.map((f) => [f.name, f.dataTypeID]) };

  try {
    await sql`select 1 frm nowhere`;
  } catch (e) {
    out.syntaxError = errorFacts(e);
  }

  await sql`create table http_tx (v int primary key)`;
  const [a, b] = await sql.transaction([sql`insert into http_tx values (1), (2) returning v`,
    sql`select current_setting('transaction_isolation') as iso, current_setting('transaction_read_only') as ro`],
  { isolationLevel: 'RepeatableRead' });
  out.transaction = { inserted: a.map((r) => r.v), settings: b[0] };
  try {
    await sql.transaction([sql`insert into http_tx values (3)`, sql`insert into http_tx values (1)`]);
    out.failingTransaction = 'committed';
  } catch (e) {
    out.failingTransaction = errorFacts(e);
  }
  out.afterRollback = (await sql`select array_agg(v order by v) as vs from http_tx`)[0].vs;
  try {
    await sql.transaction([sql`insert into http_tx values (9)`], { readOnly: true });
  } catch (e) {
    out.readOnlyTransaction = e.code;
  }

  // API TOKEN statements, answered by tokengate. (Created with the password: by default a session opened with a
  // token may not create tokens.)
  const [created] = await neon(passwordUrl)`CREATE API TOKEN node_http MAX DURATION '1h' COMMENT 'from neon()'`;
  const shown = await sql`SHOW API TOKENS`;
  const mine = shown.find((t) => t.name === 'node_http');
  const other = neon(`postgresql://${user}:${encodeURIComponent(created.token)}@${host}:${port}/${database}`);
  const [who] = await other`select current_user as u`;
  await sql`DROP API TOKEN node_http`;
  let afterDrop;
  try {
    await other`select 1`;
    afterDrop = 'accepted';
  } catch (e) {
    afterDrop = e.message.replace(created.token, '<token>');
  }
  out.tokenStatements = { name: created.name, tokenParts: created.token.split('.').length,
    expiresType: typeOf(created.expires_at), listed: mine ? { status: mine.status, comment: mine.comment } : null,
    newTokenUser: who.u, afterDrop, leaked: JSON.stringify(shown).includes(created.token) };

  // Authorization: Bearer in place of the password (the driver's authToken option).
  const bearer = neon(`postgresql://${user}@${host}:${port}/${database}`, { authToken: token });
  out.bearer = (await bearer`select current_user as u`)[0].u;
}

async function webSocketPool() {
  const pool = new Pool({ connectionString: url, max: 2 });
  try {
    const client = await pool.connect();
    try {
      await client.query('create table ws_tx (v int)');
      await client.query('begin');
      await client.query('insert into ws_tx select generate_series(1, $1::int)', [5]);
      const inside = (await client.query('select count(*)::int as c from ws_tx')).rows[0].c;
      await client.query('rollback');
      const after = (await client.query('select count(*)::int as c from ws_tx')).rows[0].c;
      await client.query('begin');
      await client.query('insert into ws_tx values ($1)', [42]);
      await client.query('commit');
      const committed = (await client.query('select array_agg(v) as vs from ws_tx')).rows[0].vs;
      const p = await client.query('select $1::int + 1 as i, $2::text as t, $3::timestamptz as ts, $4::jsonb as j',
        [1, 'ü', new Date(Date.UTC(2026, 0, 2)), { k: true }]);
      const shown = await client.query('SHOW API TOKENS');
      const byPassword = new Pool({ connectionString: passwordUrl, max: 1 });
      const created = await byPassword.query("CREATE API TOKEN node_ws MAX DURATION '1h'");
      await byPassword.end();
      await client.query('DROP API TOKEN node_ws');
      out.ws = { inside, after, committed, row: { ...p.rows[0], ts: p.rows[0].ts.toISOString() },
        showFields: shown.fields.map((f) => f.name), createdCommand: created.command,
        createdTokenParts: created.rows[0].token.split('.').length,
        backend: (await client.query('select pg_backend_pid() as pid')).rows[0].pid > 0 };
    } finally {
      client.release();
    }
    // Pool.query, several at once on up to two connections.
    const many = await Promise.all([1, 2, 3, 4].map((i) => pool.query('select $1::int * 2 as v', [i])));
    out.ws.pooled = many.map((r) => r.rows[0].v);
  } finally {
    await pool.end();
  }
  const bad = new Pool({ connectionString: `postgresql://${user}:wrong-password@${host}:${port}/${database}` });
  try {
    await bad.query('select 1');
    out.wsBadPassword = 'accepted';
  } catch (e) {
    out.wsBadPassword = e.code;
  } finally {
    await bad.end().catch(() => {});
  }
}

async function drizzleHttp() {
  const items = pgTable('drizzle_item', { id: integer('id').primaryKey(), name: text('name').notNull(),
    price: numeric('price', { precision: 8, scale: 2 }) });
  const db = drizzle(neon(url));
  await db.execute(dsql`create table drizzle_item (id int primary key, name text not null, price numeric(8,2))`);
  await db.insert(items).values([{ id: 1, name: 'ann', price: '9.50' }, { id: 2, name: 'bob', price: null }]);
  await db.update(items).set({ name: 'anne' }).where(eq(items.id, 1));
  const rows = await db.select().from(items).orderBy(items.id);
  const [inserted, counted] = await db.batch([
    db.insert(items).values({ id: 3, name: 'cy', price: '1.00' }).returning({ id: items.id }),
    db.select({ n: dsql`count(*)::int` }).from(items),
  ]);
  let failedBatch;
  try {
    await db.batch([db.insert(items).values({ id: 4, name: 'dee' }), db.insert(items).values({ id: 1, name: 'dup' })]);
    failedBatch = 'committed';
  } catch (e) {
    failedBatch = e.code ?? e.cause?.code ?? e.message;
  }
  const finalIds = (await db.select({ id: items.id }).from(items).orderBy(items.id)).map((r) => r.id);
  out.drizzle = { rows, inserted, counted, failedBatch, finalIds };
}

async function kyselyHttp() {
  const db = new Kysely({ dialect: new NeonDialect({ neon: neon(url) }) });
  await db.schema.createTable('kysely_item').addColumn('id', 'integer', (c) => c.primaryKey())
    .addColumn('name', 'text').execute();
  await db.insertInto('kysely_item').values([{ id: 1, name: 'x' }, { id: 2, name: 'y' }]).execute();
  const rows = await db.selectFrom('kysely_item').selectAll().where('id', '>', 1).execute();
  const deleted = await db.deleteFrom('kysely_item').where('id', '=', 1).executeTakeFirst();
  out.kysely = { rows, deleted: Number(deleted.numDeletedRows) };
  await db.destroy();
}

async function prisma() {
  const facts = {};
  // Over WebSocket (a Pool): interactive transactions.
  const prismaWs = new PrismaClient({ adapter: new PrismaNeon({ connectionString: url }) });
  try {
    await prismaWs.$executeRawUnsafe('create table prisma_item (id int primary key, name text not null, price numeric(8,2) not null)');
    await prismaWs.item.create({ data: { id: 1, name: 'pen', price: '1.50' } });
    await prismaWs.$transaction(async (tx) => {
      await tx.item.create({ data: { id: 2, name: 'ink', price: '3.25' } });
      await tx.item.update({ where: { id: 1 }, data: { name: 'pencil' } });
    });
    try {
      await prismaWs.$transaction(async (tx) => {
        await tx.item.create({ data: { id: 3, name: 'lost', price: '0' } });
        await tx.item.create({ data: { id: 1, name: 'dup', price: '0' } });
      });
      facts.failedTransaction = 'committed';
    } catch (e) {
      facts.failedTransaction = e.code ?? e.message;
    }
    const items = await prismaWs.item.findMany({ orderBy: { id: 'asc' } });
    facts.ws = items.map((i) => ({ id: i.id, name: i.name, price: i.price.toString() }));
  } finally {
    await prismaWs.$disconnect();
  }
  // Over HTTP (neon()): queries (the adapter refuses transactions in HTTP mode).
  const prismaHttp = new PrismaClient({ adapter: new PrismaNeonHTTP(url, {}) });
  try {
    const created = await prismaHttp.item.create({ data: { id: 10, name: 'http', price: '2.00' } });
    const count = await prismaHttp.item.count();
    const found = await prismaHttp.item.findUnique({ where: { id: 10 } });
    facts.http = { created: created.name, count, found: found?.price.toString() ?? null };
  } finally {
    await prismaHttp.$disconnect();
  }
  out.prisma = facts;
}

const steps = { httpQueries, webSocketPool, drizzleHttp, kyselyHttp, prisma };
// A step that hangs (a driver waiting for an answer that never comes) is
// reported by name with the results so far, instead of the whole script
// being killed silently by the test's timeout.
const STEP_SECONDS = 100;
for (const [name, step] of Object.entries(steps)) {
  process.stderr.write(`${new Date().toISOString()} ${name}: started\n`);
  let watchdog;
  const hung = new Promise((_, reject) => {
    watchdog = setTimeout(() => reject(new Error(`did not finish within ${STEP_SECONDS} s`)), STEP_SECONDS * 1000);
  });
  try {
    await Promise.race([step(), hung]);
    process.stderr.write(`${new Date().toISOString()} ${name}: done\n`);
  } catch (e) {
    out.error = `${name}: ${e.constructor.name} ${e.code ?? ''} ${String(e.message).replace(token, '<token>')}`;
    out.stack = String(e.stack).replace(token, '<token>').split('\n').slice(0, 6).join('\n');
    break;
  } finally {
    clearTimeout(watchdog);
  }
}
console.log(JSON.stringify(out));
// Every step has closed what it opened; a socket still waiting for a close
// handshake (seen once in a full CI run, after the wrong-password WebSocket
// login was throttled) must not keep node from exiting after the results are
// out. What is checked is the results above.
process.exitCode = 0;
setTimeout(() => process.exit(0), 2000).unref();
