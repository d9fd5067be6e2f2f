// Shared helpers of the integration scripts (copied from gateway_e2e.mjs): PASS/FAIL counting,
// child processes that are all killed on exit, failure and interruption, JSON-RPC, ports, and
// private copies of the binaries (a rebuild in the shared tree cannot swap them mid-run).
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync, existsSync, mkdirSync, copyFileSync, chmodSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const root = process.env.TG_ROOT || process.cwd();
export const build = process.env.TG_BUILD || join(root, 'build');
export const BIN = join(root, 'node_modules/.bin');

// anvil's default dev accounts ("test test ... junk").
export const KEYS = [
  '0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80',
  '0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d',
  '0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a',
  '0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6',
  '0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a',
];

export function harness(name, watchdogMs) {
  const scratch = mkdtempSync(join(tmpdir(), `tg-${name}-`));
  const T0 = Date.now();
  const h = { scratch, passed: 0, failed: 0, procs: new Set() };
  h.elapsed = () => ((Date.now() - T0) / 1000).toFixed(1) + 's';
  h.check = (what, ok, detail = '') => {
    if (ok) { h.passed++; console.log(`PASS ${what}`); }
    else { h.failed++; console.log(`FAIL ${what}${detail ? ' -- ' + detail : ''}`); }
    return ok;
  };
  h.info = (msg) => console.log(`# ${msg}`);
  h.summary = () => console.log(`${h.passed} passed, ${h.failed} failed`);
  h.killAll = () => {
    for (const p of h.procs) { try { process.kill(p.pid, 'SIGKILL'); } catch { /* gone */ } }
    h.procs.clear();
  };
  let finishing = false;
  h.finish = (code) => {
    if (finishing) return;
    finishing = true;
    h.killAll();
    if (code !== 0 || process.env.TG_E2E_KEEP) h.info(`scratch kept: ${scratch}`);
    else rmSync(scratch, { recursive: true, force: true });
    process.exit(code);
  };
  process.on('exit', h.killAll);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, () => { console.log(`FAIL interrupted by ${sig}`); h.failed++; h.summary(); h.finish(1); });
  process.on('uncaughtException', (e) => { console.log(`FAIL uncaught: ${e?.stack || e}`); h.failed++; h.summary(); h.finish(1); });
  process.on('unhandledRejection', (e) => { console.log(`FAIL unhandled rejection: ${e?.stack || e}`); h.failed++; h.summary(); h.finish(1); });
  const wd = setTimeout(() => { console.log(`FAIL watchdog: the test took over ${watchdogMs / 1000} s`); h.failed++; h.summary(); h.finish(1); }, watchdogMs);
  wd.unref();

  h.binCopy = (rel) => {
    const src = join(build, rel), dst = join(scratch, 'bin', rel.replace(/\//g, '_'));
    if (!existsSync(src)) return src;
    mkdirSync(join(scratch, 'bin'), { recursive: true });
    copyFileSync(src, dst);
    chmodSync(dst, 0o755);
    return dst;
  };
  h.start = (pname, cmd, args, env = {}, opts = {}) => {
    const log = join(scratch, `${pname}.log`);
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, HOME: scratch, ...env }, ...opts });
    p.logText = '';
    const add = (b) => { p.logText += b.toString(); if (p.logText.length > 4e6) p.logText = p.logText.slice(-2e6); };
    p.stdout.on('data', add);
    p.stderr.on('data', add);
    p.on('exit', (code, sig) => { h.procs.delete(p); p.exited = { code, sig }; try { writeFileSync(log, p.logText); } catch { /* */ } });
    p.on('error', (e) => { p.logText += `spawn error: ${e}\n`; });
    h.procs.add(p);
    return p;
  };
  h.stop = async (p, sig = 'SIGTERM') => {
    if (p.exited) return;
    const done = new Promise((res) => p.once('exit', res));
    p.kill(sig);
    const t = setTimeout(() => { try { p.kill('SIGKILL'); } catch { /* */ } }, 10000);
    await done;
    clearTimeout(t);
  };
  h.run = (cmd, args, opts = {}) => {
    const r = spawnSync(cmd, args, { encoding: 'utf8', env: { ...process.env, HOME: scratch, ETH_RPC_URL: '' }, ...opts });
    return { code: r.status, out: r.stdout || '', err: r.stderr || '' };
  };
  return h;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}
export async function waitHttp(url, proc, ms = 15000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (proc.exited) throw new Error(`process exited (${JSON.stringify(proc.exited)}): ${proc.logText.slice(-2000)}`);
    try { await fetch(url, { signal: AbortSignal.timeout(1000) }); return; } catch { await sleep(100); }
  }
  throw new Error(`${url} did not answer within ${ms} ms`);
}
// Sends raw request bytes and hangs up without reading the answer: mode 'fin' closes at once,
// 'rst' resets the connection (SO_LINGER 0), 'pipeline' first sends the start of a second
// request while the first one is still being served, then closes. Resolves once the socket is
// gone.
export function hangUp(port, bytes, mode = 'fin') {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    s.on('error', () => { /* the server may reset us first */ });
    s.on('close', () => resolve());
    s.on('connect', () => {
      s.write(bytes, () => {
        if (mode === 'rst') s.resetAndDestroy();
        else if (mode === 'pipeline') setTimeout(() => s.write('GET /healthz HTTP/1.1\r\nHost: x\r\n', () => s.destroy()), 1);
        else s.destroy();
      });
    });
  });
}
export async function rpc(url, method, params = []) {
  const r = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }) });
  const j = await r.json();
  if (j.error) throw new Error(`${method}: ${j.error.message}`);
  return j.result;
}
// A throwaway anvil on a free loopback port (stopped by the harness), once it answers.
export async function startAnvil(h, args = ['--block-time', '1']) {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const proc = h.start('anvil', join(BIN, 'anvil'), ['--host', '127.0.0.1', '--port', String(port), ...args, '--silent']);
  for (let i = 0; ; i++) {
    try { await rpc(url, 'eth_chainId'); break; } catch {
      if (proc.exited || i > 100) throw new Error(`anvil did not start: ${proc.logText.slice(-1000)}`);
      await sleep(100);
    }
  }
  return { anvil: proc, anvilPort: port, RPC: url };
}
export const b64json = (o) => Buffer.from(JSON.stringify(o)).toString('base64');
export const unb64json = (s) => JSON.parse(Buffer.from(s, 'base64').toString('utf8'));
export const randSalt = () => '0x' + Buffer.from(Array.from({ length: 32 }, () => Math.floor(Math.random() * 256))).toString('hex');

// The channel contract's EIP-712 types (docs/CONTRACTS.md).
export const CONFIG_TYPES = { ChannelConfig: [
  { name: 'payer', type: 'address' }, { name: 'payerAuthorizer', type: 'address' }, { name: 'receiver', type: 'address' },
  { name: 'receiverAuthorizer', type: 'address' }, { name: 'token', type: 'address' }, { name: 'withdrawDelay', type: 'uint40' },
  { name: 'salt', type: 'bytes32' }] };
export const domainOf = (chainId, contract) => ({ name: 'Tollgate Channels', version: '1', chainId, verifyingContract: contract });
export const signVoucher = (acct, id, ceiling, chainId, contract) => acct.signTypedData({
  domain: domainOf(chainId, contract),
  types: { Voucher: [{ name: 'channelId', type: 'bytes32' }, { name: 'maxClaimableAmount', type: 'uint128' }] },
  primaryType: 'Voucher', message: { channelId: id, maxClaimableAmount: ceiling },
});
