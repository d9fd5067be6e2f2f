// bench_client.mjs: paid calls per second from the payer's side (docs/PERFORMANCE.md); run by
// tests/bench/bench_client.sh. Prints figures; not a test.
import { cpus } from 'node:os';
import { spawn, spawnSync } from 'node:child_process';
import { openSync, closeSync, mkdtempSync, writeFileSync, readFileSync, readdirSync, rmSync, existsSync, mkdirSync, cpSync } from 'node:fs';
import { createServer, connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createPublicClient, createWalletClient, http, parseAbi, defineChain } from 'viem';
import { privateKeyToAccount, generatePrivateKey } from 'viem/accounts';

const root = process.env.TG_ROOT || process.cwd();
const build = process.env.TG_BUILD || join(root, 'build');
const BIN = join(root, 'node_modules/.bin');
const scratch = mkdtempSync(join(tmpdir(), 'tg-bench-client-'));
const TOLLGATE = join(build, 'tollgate');
const TOLLGATED = join(build, 'tollgated');
const UPSTREAM = join(build, 'tools/tg_upstream');
const T0 = Date.now();
const elapsed = () => ((Date.now() - T0) / 1000).toFixed(1) + 's';
const KEYS = [
  '0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80',
  '0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d',
  '0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a',
  '0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6',
];

const info = (msg) => console.log(`# ${msg}`);
const procs = new Set();
function killAll() { for (const p of procs) { try { process.kill(p.pid, 'SIGKILL'); } catch { /* gone */ } } procs.clear(); }
let finishing = false;
function finish(code) {
  if (finishing) return;
  finishing = true;
  killAll();
  if (code !== 0 || process.env.TG_BENCH_KEEP) info(`scratch kept: ${scratch}`);
  else rmSync(scratch, { recursive: true, force: true });
  process.exit(code);
}
process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, () => finish(1));
process.on('uncaughtException', (e) => { console.log(`bench_client: ${e?.stack || e}`); finish(1); });
process.on('unhandledRejection', (e) => { console.log(`bench_client: ${e?.stack || e}`); finish(1); });

function start(name, cmd, args) {
  const fd = openSync(join(scratch, `${name}.log`), 'a');
  const p = spawn(cmd, args, { stdio: ['ignore', fd, fd], env: { ...process.env, HOME: scratch } });
  closeSync(fd);
  p.logText = '';
  p.on('exit', (code, sig) => { procs.delete(p); p.exited = { code, sig }; });
  procs.add(p);
  return p;
}
function run(cmd, args) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', env: { ...process.env, HOME: scratch, ETH_RPC_URL: '' }, maxBuffer: 1 << 26, timeout: 60000 });
  return { code: r.status, out: r.stdout || '', err: r.stderr || '' };
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}
async function waitHttp(url, proc, ms = 15000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (proc.exited) throw new Error(`process exited: ${proc.logText.slice(-2000)}`);
    try { await fetch(url, { signal: AbortSignal.timeout(1000) }); return; } catch { await sleep(100); }
  }
  throw new Error(`${url} did not answer within ${ms} ms`);
}
async function rpc(url, method, params = []) {
  const r = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }) });
  const j = await r.json();
  if (j.error) throw new Error(`${method}: ${j.error.message}`);
  return j.result;
}



// Paid calls per second from the payer's side, on loopback, all paid by channel vouchers:
// (1) `tollgate pay --count N --parallel P` through the library (state file and all);
// (2) wrk through `tollgate proxy` (a thread per call) to the gateway;
// (3) wrk to the gateway's free route, for scale (no payment, no proxy).
const N = Number(process.env.CALLS || 1000), P = Number(process.env.PARALLEL || 16);
const CONNS = Number(process.env.CONNS || 16), SECS = Number(process.env.SECS || 10);
async function main() {
  const art = join(root, 'contracts/out');
  const anvilPort = await freePort();
  const RPC = `http://127.0.0.1:${anvilPort}`;
  const anvil = start('anvil', join(BIN, 'anvil'), ['--host', '127.0.0.1', '--port', String(anvilPort), '--block-time', '1', '--silent']);
  for (let i = 0; ; i++) { try { await rpc(RPC, 'eth_chainId'); break; } catch { if (anvil.exited || i > 100) throw new Error('anvil did not start'); await sleep(100); } }
  const depFile = join(scratch, 'deployment.json');
  const dep = run(TOLLGATE, ['deploy', '--rpc-url', RPC, '--out', depFile]);
  if (dep.code !== 0) throw new Error(`deploy: ${dep.err}`);
  const deployment = JSON.parse(readFileSync(depFile, 'utf8'));
  const USDC = deployment.contracts.TestUSDC.address;
  const ksDir = join(scratch, 'keys'); mkdirSync(ksDir);
  const pwFile = join(scratch, 'password'); writeFileSync(pwFile, 'bench\n');
  run(TOLLGATE, ['wallet', 'import', ksDir, 'gateway', '--private-key', KEYS[1], '--password-file', pwFile]);
  const keystore = join(ksDir, readdirSync(ksDir)[0]);
  const upPort = await freePort();
  const upstream = start('upstream', UPSTREAM, [String(upPort), '2']);
  await waitHttp(`http://127.0.0.1:${upPort}/v1/models`, upstream);
  const gwPort = await freePort();
  const GW = `http://127.0.0.1:${gwPort}`;
  const conf = join(scratch, 'tollgated.conf');
  writeFileSync(conf, [
    `listen 127.0.0.1:${gwPort}`, 'workers 2', 'access_log off',
    `upstream llm http://127.0.0.1:${upPort} timeout=30s`,
    'route paid  GET  /paid/fast  upstream=llm price=flat strip_prefix=/paid',
    'route free  GET  /fast       upstream=llm',
    'price flat call 0.000001',
    'schemes channel', 'chain_id 31337', `rpc_url ${RPC}`, `deployment ${depFile}`,
    `keystore ${keystore} password_file=${pwFile}`, `pay_to ${privateKeyToAccount(generatePrivateKey()).address}`, 'asset decimals=6 name="USD Coin" version=2',
    'channel withdraw_delay=15m', `store sqlite ${join(scratch, 'store.db')}`, '',
  ].join('\n'));
  const gw = start('tollgated', TOLLGATED, ['-c', conf]);
  await waitHttp(`${GW}/healthz`, gw);
  const chain = defineChain({ id: 31337, name: 'anvil', nativeCurrency: { name: 'Ether', symbol: 'ETH', decimals: 18 }, rpcUrls: { default: { http: [RPC] } } });
  const pub = createPublicClient({ chain, transport: http(RPC), pollingInterval: 200 });
  const minter = createWalletClient({ account: privateKeyToAccount(KEYS[0]), chain, transport: http(RPC) });
  const ERC20 = parseAbi(['function mint(address to, uint256 amount)']);
  await pub.waitForTransactionReceipt({ hash: await minter.writeContract({ address: USDC, abi: ERC20, functionName: 'mint', args: [privateKeyToAccount(KEYS[3]).address, 10n ** 12n], gas: 200000n }) });
  const STATE = join(scratch, 'state');
  const op = run(TOLLGATE, ['channel', 'open', '--deposit', String(10n ** 11n), '--rpc-url', RPC, '--private-key', KEYS[3], '--state', STATE, `${GW}/paid/fast`]);
  if (op.code !== 0) throw new Error(`channel open: ${op.err}`);
  const warm = run(TOLLGATE, ['pay', '--private-key', KEYS[3], '--state', STATE, '--headroom', '100000', `${GW}/paid/fast`]);
  if (warm.code !== 0) throw new Error(`pay: ${warm.err}`);
  console.log(`bench_client: ${cpus().length} cores; price 1 unit per call, every call paid by voucher (ceilings signed ahead)`);
  // (1) the library
  const t0 = process.hrtime.bigint();
  const lib = run(TOLLGATE, ['pay', '--private-key', KEYS[3], '--state', STATE, '--headroom', '100000', '--count', String(N), '--parallel', String(P), `${GW}/paid/fast`]);
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  if (!new RegExp(`calls ${N} ok ${N} failed 0`).test(lib.err)) throw new Error(`pay --count: ${lib.err}`);
  console.log(`(1) tollgate pay --count ${N} --parallel ${P}: ${(N / secs).toFixed(0)} paid calls/s (${secs.toFixed(2)} s, process start and state file included)`);
  // (2) wrk through the proxy, (3) wrk to the free route
  const pxPort = await freePort();
  const px = start('proxy', TOLLGATE, ['proxy', '--listen', `127.0.0.1:${pxPort}`, '--target', GW, '--private-key', KEYS[3], '--state', STATE, '--headroom', '100000']);
  await waitHttp(`http://127.0.0.1:${pxPort}/fast`, px);
  const wrk = (url) => {
    spawnSync('wrk', ['-t2', `-c${CONNS}`, '-d2s', url]);
    const r = spawnSync('wrk', ['-t2', `-c${CONNS}`, `-d${SECS}s`, '--latency', url], { encoding: 'utf8' });
    const o = r.stdout || '';
    const rps = (/Requests\/sec:\s+([\d.]+)/.exec(o) || [])[1];
    const p50 = (/\s50%\s+(\S+)/.exec(o) || [])[1], p99 = (/\s99%\s+(\S+)/.exec(o) || [])[1];
    const non2xx = /Non-2xx/.test(o);
    return { rps, p50, p99, non2xx };
  };
  const a = wrk(`http://127.0.0.1:${pxPort}/paid/fast`);
  console.log(`(2) wrk -c${CONNS} -d${SECS}s through tollgate proxy, paid: ${a.rps} calls/s, p50 ${a.p50}, p99 ${a.p99}${a.non2xx ? ' (NON-2XX ANSWERS)' : ''}`);
  const b = wrk(`${GW}/fast`);
  console.log(`(3) wrk -c${CONNS} -d${SECS}s to the gateway's free route (no payment, no proxy): ${b.rps} calls/s, p50 ${b.p50}, p99 ${b.p99}`);
}
main().then(() => finish(0), (e) => { console.log(`bench_client: ${e?.stack || e}`); finish(1); });
