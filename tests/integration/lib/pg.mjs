// A throwaway PostgreSQL server for the integration scripts, like tests/unit/tg_pg.c: initdb
// into a fresh /tmp/tg-pg-XXXXXX (as the `postgres` system user when running as root, since
// the server refuses root), `postgres` on 127.0.0.1 and a free port with its unix socket in that
// folder, fsync and synchronous_commit on. The server is a child registered with the harness,
// so it is killed on exit, failure and interruption; stop() shuts it down and removes the folder.
// startPg() returns { skip: reason } when no server can be started (binaries or user missing).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, chownSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, sleep } from './harness.mjs';

function pgBin() {
  const base = '/usr/lib/postgresql';
  if (!existsSync(base)) return null;
  const v = readdirSync(base).filter((d) => existsSync(join(base, d, 'bin', 'postgres'))).sort((a, b) => Number(b) - Number(a));
  return v.length ? join(base, v[0], 'bin') : null;
}

export async function startPg(h) {
  const bin = pgBin();
  if (!bin || !existsSync(join(bin, 'initdb'))) return { skip: 'PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin)' };
  let uid = process.getuid(), gid = process.getgid();
  if (uid === 0) {
    const id = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
    const ig = spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' });
    if (id.status !== 0) return { skip: "running as root and there is no 'postgres' user to run the server" };
    uid = Number(id.stdout.trim());
    gid = Number(ig.stdout.trim());
  }
  const dir = mkdtempSync('/tmp/tg-pg-');
  chownSync(dir, uid, gid);
  const as = uid === process.getuid() ? {} : { uid, gid };
  const init = spawnSync(join(bin, 'initdb'), ['-D', join(dir, 'data'), '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--locale=C', '--no-sync'],
    { encoding: 'utf8', ...as, env: { PATH: process.env.PATH, LANG: 'C' } });
  if (init.status !== 0) {
    rmSync(dir, { recursive: true, force: true });
    return { skip: `initdb failed: ${(init.stderr || '').slice(-400)}` };
  }
  const port = await freePort();
  const srv = h.start('postgres', join(bin, 'postgres'), ['-D', join(dir, 'data'), '-p', String(port),
    '-c', 'listen_addresses=127.0.0.1', '-c', `unix_socket_directories=${dir}`, '-c', 'fsync=on',
    '-c', 'synchronous_commit=on', '-c', 'max_connections=300', '-c', 'shared_buffers=64MB',
    '-c', 'logging_collector=off'], { LANG: 'C', HOME: dir }, as);
  const admin = `postgresql://postgres@127.0.0.1:${port}/postgres`;
  const psql = (uri, sql) => {
    const r = spawnSync('psql', ['-X', '-q', '-At', '-v', 'ON_ERROR_STOP=1', '-d', uri, '-c', sql], { encoding: 'utf8', timeout: 60000 });
    if (r.status !== 0) throw new Error(`psql: ${r.stderr.trim()}`);
    return r.stdout.trim();
  };
  for (let i = 0; ; i++) {
    if (srv.exited) {
      rmSync(dir, { recursive: true, force: true });
      return { skip: `postgres exited at start: ${srv.logText.slice(-400)}` };
    }
    try { psql(admin, 'SELECT 1'); break; } catch (e) {
      if (i > 150) return { skip: `postgres did not answer: ${e.message}` };
      await sleep(100);
    }
  }
  let n = 0;
  return {
    port, dir, srv,
    newdb: () => { const name = `t${++n}`; psql(admin, `CREATE DATABASE ${name}`); return `postgresql://postgres@127.0.0.1:${port}/${name}`; },
    psql,
    // rows of a query as arrays of strings (fields separated by '|')
    rows: (uri, sql) => { const out = psql(uri, sql); return out ? out.split('\n').map((l) => l.split('|')) : []; },
    stop: async () => { await h.stop(srv, 'SIGINT'); rmSync(dir, { recursive: true, force: true }); },
    log: () => { try { return readFileSync(join(dir, 'postgres.log'), 'utf8'); } catch { return srv.logText; } },
  };
}
