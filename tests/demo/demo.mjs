// `make demo`: tollgate working end to end on a local chain, printed step by step as it happens.
// Starts anvil, deploys the contracts, starts the stand-in model server (tg_upstream) and
// tollgated with SQLite; then an unpaid call (402), paid calls with `exact`, a channel with a
// burst of voucher-paid calls (some streamed), a settlement run and the reconciliation. Every
// figure printed is read from the chain or from the store. Every process it starts runs in its
// own process group and is killed at the end, on failure (exit 1, the step named) and on
// SIGINT/SIGTERM/SIGHUP.
//
// Environment: TG_DEMO_SERVE=1 keeps the gateway running after the tour until Ctrl-C, and
// TG_DEMO_PORT=N puts the gateway on 127.0.0.1:N (default: a free port);
// TG_DEMO_KEEP=1 keeps the scratch directory (logs, store, configuration); NO_COLOR disables color.
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, readdirSync, rmSync, existsSync, mkdirSync, copyFileSync, chmodSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createPublicClient, createWalletClient, http, parseAbi, defineChain } from 'viem';
import { privateKeyToAccount, generatePrivateKey } from 'viem/accounts';
import { wrapFetchWithPaymentFromConfig } from '@x402/fetch';
import { ExactEvmScheme } from '@x402/evm';
import OpenAI from 'openai';

const root = process.env.TG_ROOT || resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const build = process.env.TG_BUILD || join(root, 'build');
const BIN = join(root, 'node_modules/.bin');
const SERVE = !!process.env.TG_DEMO_SERVE && process.env.TG_DEMO_SERVE !== '0';
const T0 = Date.now();

// anvil's default dev accounts ("test test ... junk"): public keys of a throwaway local chain.
const KEYS = [
  '0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80',
  '0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d',
  '0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a',
  '0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6',
  '0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a',
];
// TG_DEMO_SERVE: the running demo's addresses and keys, for the README's tour (`. build/demo.env`).
const ENV_FILE = process.env.TG_DEMO_ENV || join(build, 'demo.env');
let envWritten = false;

// ---- output -------------------------------------------------------------------------------------
const TTY = process.stdout.isTTY && !process.env.NO_COLOR && process.env.TERM !== 'dumb';
const sgr = (code) => (s) => (TTY ? `\x1b[${code}m${s}\x1b[0m` : String(s));
const bold = sgr('1'), dim = sgr('2'), green = sgr('32'), red = sgr('31'), cyan = sgr('36'), yellow = sgr('33');
const out = (s = '') => process.stdout.write(s + '\n');
const line = (label, value) => out(`  ${label.padEnd(27)} ${value}`);
const ok = (s) => out(`  ${green('ok')}  ${s}`);
const secs = () => ((Date.now() - T0) / 1000).toFixed(1) + 's';
let step = 'setup';
const header = (n, title) => { step = n ? `${n}. ${title}` : title; out(''); out(bold(cyan(n ? `[${n}/6] ${title}` : title)) + dim(`  (${secs()})`)); };
class DemoError extends Error {}
const must = (cond, what) => { if (!cond) throw new DemoError(what); };

// ---- processes ----------------------------------------------------------------------------------
const scratch = mkdtempSync(join(tmpdir(), 'tg-demo-'));
const procs = new Set();
// Each child is the leader of its own process group; a group kill reaches anything it started.
function killGroups(sig) {
  for (const p of procs) { try { process.kill(-p.pid, sig); } catch { /* gone */ } }
}
function killAllNow() { killGroups('SIGKILL'); procs.clear(); }
process.on('exit', killAllNow);
let finishing = false;
async function finish(code) {
  if (finishing) return;
  finishing = true;
  // Gentle first (tollgated drains and closes its store), then SIGKILL after 3 s.
  killGroups('SIGTERM');
  const end = Date.now() + 3000;
  while ([...procs].some((p) => !p.exited) && Date.now() < end) await sleep(50);
  killAllNow();
  if (envWritten) rmSync(ENV_FILE, { force: true });
  if (code !== 0 || process.env.TG_DEMO_KEEP) out(dim(`  scratch kept (logs, store, configuration): ${scratch}`));
  else rmSync(scratch, { recursive: true, force: true });
  process.exit(code);
}
function fail(e) {
  if (finishing) return;
  const msg = e instanceof DemoError ? e.message : (e?.stack || String(e));
  out('');
  out(red(bold(`demo FAILED at step "${step}": `)) + msg);
  for (const p of procs) {
    const tail = p.logText.trim().split('\n').slice(-8).join('\n    ');
    if (tail) out(dim(`  last lines of ${p.name}:\n    ${tail}`));
  }
  finish(1);
}
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    if (finishing) return;
    out('');
    if (SERVE && step === 'serving') { out('stopping: every process the demo started is being stopped'); finish(0); return; }
    out(yellow(`interrupted by ${sig} during step "${step}": stopping every process the demo started`));
    finish(sig === 'SIGINT' ? 130 : 143);
  });
}
process.on('uncaughtException', fail);
process.on('unhandledRejection', fail);
setTimeout(() => { if (!SERVE || step !== 'serving') fail(new DemoError('the demo took over 240 s (watchdog)')); }, 240000).unref();

function start(name, cmd, args) {
  const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true, env: { ...process.env, HOME: scratch, ETH_RPC_URL: '' } });
  p.name = name;
  p.logText = '';
  const add = (b) => { p.logText += b.toString(); if (p.logText.length > 4e6) p.logText = p.logText.slice(-2e6); };
  p.stdout.on('data', add);
  p.stderr.on('data', add);
  p.on('exit', (code, sig) => { p.exited = { code, sig }; procs.delete(p); try { writeFileSync(join(scratch, `${name}.log`), p.logText); } catch { /* */ } });
  p.on('error', (e) => { p.logText += `spawn error: ${e}\n`; });
  procs.add(p);
  return p;
}
// A command run to completion (asynchronously, so that a signal is handled at once).
function run(cmd, args, timeoutMs = 90000) {
  return new Promise((res) => {
    const p = start(cmd.split('/').pop() + '-' + args[0], cmd, args);
    let out = '', err = '';
    p.stdout.on('data', (b) => { out += b; });
    p.stderr.on('data', (b) => { err += b; });
    const t = setTimeout(() => { try { process.kill(-p.pid, 'SIGKILL'); } catch { /* */ } }, timeoutMs);
    p.on('close', (code, sig) => { clearTimeout(t); res({ code: code ?? (sig ? 128 : 1), out, err }); });
  });
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.on('error', rej);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => res(port)); });
  });
}
async function waitHttp(url, proc, ms = 20000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (proc.exited) throw new DemoError(`${proc.name} exited (${JSON.stringify(proc.exited)}): ${proc.logText.slice(-1500)}`);
    try { await fetch(url, { signal: AbortSignal.timeout(1000) }); return; } catch { await sleep(100); }
  }
  throw new DemoError(`${url} did not answer within ${ms / 1000} s`);
}
async function rpc(url, method, params = []) {
  const r = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }) });
  const j = await r.json();
  if (j.error) throw new Error(`${method}: ${j.error.message}`);
  return j.result;
}
// Private copies of the binaries: a rebuild during the demo cannot swap them, and every process
// the demo starts has the scratch directory in its command line (tests/integration/demo.sh).
function binCopy(rel) {
  const src = join(build, rel), dst = join(scratch, 'bin', rel.split('/').pop());
  must(existsSync(src), `${src} is missing: run make demo (it builds the binaries and tools)`);
  mkdirSync(join(scratch, 'bin'), { recursive: true });
  copyFileSync(src, dst);
  chmodSync(dst, 0o755);
  return dst;
}
const unb64json = (s) => JSON.parse(Buffer.from(s, 'base64').toString('utf8'));
const short = (h) => (h && h.length > 20 ? `${h.slice(0, 10)}…${h.slice(-6)}` : h);

// ---- the tour -----------------------------------------------------------------------------------
async function main() {
  out(bold('tollgate demo') + ': a pay-per-call gateway for AI APIs, settling on a local Ethereum chain');
  header(0, 'Setting up');
  const TOLLGATE = binCopy('tollgate'), TOLLGATED = binCopy('tollgated'), UPSTREAM = binCopy('tools/tg_upstream');
  must(existsSync(join(BIN, 'anvil')), `${join(BIN, 'anvil')} is missing: run tests/deps.sh (npm ci)`);
  must(existsSync(join(root, 'contracts/artifacts/TollgateChannels.json')), 'contracts/artifacts is missing: run contracts/export-artifacts.sh --build');
  const CH_ABI = JSON.parse(readFileSync(join(root, 'contracts/artifacts/TollgateChannels.json'), 'utf8')).abi;

  // anvil: a block every second (automine stalls under bursts, see DESIGN.md)
  const anvilPort = await freePort();
  const RPC = `http://127.0.0.1:${anvilPort}`;
  const anvil = start('anvil', join(BIN, 'anvil'), ['--host', '127.0.0.1', '--port', String(anvilPort), '--block-time', '1', '--silent', '--config-out', join(scratch, 'anvil.json')]);
  for (let i = 0; ; i++) {
    try { await rpc(RPC, 'eth_chainId'); break; } catch {
      if (anvil.exited || i > 150) throw new DemoError(`anvil did not start: ${anvil.logText.slice(-1000)}`);
      await sleep(100);
    }
  }
  const chainId = Number(await rpc(RPC, 'eth_chainId'));
  line('local chain (anvil)', `${RPC}  chain id ${chainId}, a block every second`);

  const depFile = join(scratch, 'deployment.json');
  const dep = await run(TOLLGATE, ['deploy', '--rpc-url', RPC, '--out', depFile]);
  must(dep.code === 0 && existsSync(depFile), `tollgate deploy failed (exit ${dep.code}): ${dep.err.trim()}`);
  const deployment = JSON.parse(readFileSync(depFile, 'utf8'));
  const USDC = deployment.contracts.TestUSDC.address;
  const CHANNELS = deployment.contracts.TollgateChannels.address;
  const PASSES = deployment.contracts.TollgatePasses.address;
  const PASS_ABI = JSON.parse(readFileSync(join(root, 'contracts/artifacts/TollgatePasses.json'), 'utf8')).abi;
  for (const [name, c] of Object.entries(deployment.contracts)) line(`contract ${name}`, `${c.address}  (block ${c.block}, tx ${short(c.txHash)})`);

  const chain = defineChain({ id: chainId, name: 'anvil', nativeCurrency: { name: 'Ether', symbol: 'ETH', decimals: 18 }, rpcUrls: { default: { http: [RPC] } } });
  const pub = createPublicClient({ chain, transport: http(RPC), pollingInterval: 200 });
  const ERC20 = parseAbi([
    'function balanceOf(address) view returns (uint256)', 'function decimals() view returns (uint8)',
    'function symbol() view returns (string)', 'function mint(address to, uint256 amount)',
  ]);
  const bal = (a) => pub.readContract({ address: USDC, abi: ERC20, functionName: 'balanceOf', args: [a] });
  const DEC = Number(await pub.readContract({ address: USDC, abi: ERC20, functionName: 'decimals' }));
  const SYM = await pub.readContract({ address: USDC, abi: ERC20, functionName: 'symbol' });
  const fmt = (u) => {
    const neg = u < 0n, a = neg ? -u : u, d = 10n ** BigInt(DEC);
    return `${neg ? '-' : ''}${a / d}.${(a % d).toString().padStart(DEC, '0')} ${SYM}`;
  };
  const amt = (u) => `${fmt(BigInt(u)).padStart(15)}  ${dim(`(${u} units)`)}`;

  // keys: the gateway (a keystore), an exact payer, a channel payer, and a fresh receiver
  const ksDir = join(scratch, 'keys');
  mkdirSync(ksDir);
  const pwFile = join(scratch, 'password');
  writeFileSync(pwFile, 'demo-' + Math.random().toString(36).slice(2) + '\n', { mode: 0o600 });
  const imp = await run(TOLLGATE, ['wallet', 'import', ksDir, 'gateway', '--private-key', KEYS[1], '--password-file', pwFile]);
  must(imp.code === 0, `tollgate wallet import failed: ${imp.err.trim()}`);
  const keystore = join(ksDir, readdirSync(ksDir)[0]);
  const gatewayAcct = privateKeyToAccount(KEYS[1]);
  const exactPayer = privateKeyToAccount(KEYS[2]);
  const chanPayer = privateKeyToAccount(KEYS[3]);
  const receiver = privateKeyToAccount(generatePrivateKey()).address;
  line('gateway key', `${gatewayAcct.address}  (keystore v3, signs the gateway's transactions)`);
  line('receiver (pay_to)', `${receiver}  (a fresh address: it starts at ${fmt(await bal(receiver))})`);

  // the stand-in model server and the gateway
  const upPort = await freePort();
  const upstream = start('tg_upstream', UPSTREAM, [String(upPort), '2']);
  await waitHttp(`http://127.0.0.1:${upPort}/v1/models`, upstream);
  line('model server', `http://127.0.0.1:${upPort}  (tg_upstream: an OpenAI-compatible stand-in)`);
  const gwPort = Number(process.env.TG_DEMO_PORT) || await freePort();
  if (process.env.TG_DEMO_PORT) {
    const busy = await new Promise((res) => { const t = createServer(); t.once('error', () => res(true)); t.listen(gwPort, '127.0.0.1', () => t.close(() => res(false))); });
    must(!busy, `TG_DEMO_PORT ${gwPort} is in use on 127.0.0.1: pick another port`);
  }
  const GW = `http://127.0.0.1:${gwPort}`;
  const storePath = join(scratch, 'store.db');
  const PRICE = { flat: '0.001', in: '2.50', out: '10', max: '0.01' }; // in USDC: the gateway's configuration
  const conf = join(scratch, 'tollgated.conf');
  writeFileSync(conf, [
    `listen 127.0.0.1:${gwPort}`,
    'workers 2',
    `upstream llm http://127.0.0.1:${upPort} timeout=30s`,
    'route chat   POST /v1/chat/completions upstream=llm price=chat',
    'route paid   *    /paid/v1/*           upstream=llm price=flat strip_prefix=/paid',
    'route models GET  /v1/models           upstream=llm',
    `price flat call ${PRICE.flat}`,
    `price chat token model=* input_per_mtok=${PRICE.in} output_per_mtok=${PRICE.out} max_per_call=${PRICE.max}`,
    'plan pro id=1 routes=chat quota=100 unit=calls period=720h',
    'passes session_ttl=1h',
    'schemes exact channel',
    `chain_id ${chainId}`,
    `rpc_url ${RPC}`,
    `deployment ${depFile}`,
    `keystore ${keystore} password_file=${pwFile}`,
    `pay_to ${receiver}`,
    'asset decimals=6 name="USD Coin" version=2',
    'exact_wait submission',
    'exact_validity 120s',
    'channel withdraw_delay=15m',
    `store sqlite ${storePath}`,
    `access_log ${join(scratch, 'access.log')}`,
    '',
  ].join('\n'));
  const cc = await run(TOLLGATED, ['--check-config', conf]);
  must(cc.code === 0, `tollgated --check-config refused the configuration: ${cc.err.trim()}`);
  const gw = start('tollgated', TOLLGATED, ['-c', conf]);
  await waitHttp(`${GW}/healthz`, gw);
  line('gateway (tollgated)', `${GW}  (SQLite store, schemes exact + channel)`);
  line('routes', `GET /paid/v1/* ${PRICE.flat} a call; POST /v1/chat/completions ${PRICE.in}/${PRICE.out} per M tokens in/out, at most ${PRICE.max}`);

  const sql = async (q) => {
    const r = await run('sqlite3', ['-json', storePath, q]);
    if (r.code !== 0) throw new DemoError(`sqlite3 ${storePath}: ${r.err.trim()}`);
    return r.out.trim() ? JSON.parse(r.out) : [];
  };
  const storeTotals = async () => {
    const rows = await sql('SELECT scheme, hex(amount) AS amount FROM charges');
    const t = { exact: 0n, channel: 0n, other: 0n, nExact: 0, nChannel: 0, nOther: 0 };
    for (const r of rows) {
      const a = BigInt('0x' + (r.amount || '0'));
      if (r.scheme === 0) { t.exact += a; t.nExact++; } else if (r.scheme === 1) { t.channel += a; t.nChannel++; } else { t.other += a; t.nOther++; }
    }
    return t;
  };
  const walletOf = (acct) => createWalletClient({ account: acct, chain, transport: http(RPC) });
  const gatewayIdle = async () => {
    for (let t = 0; t < 150; t++) {
      const [p, l] = await Promise.all(['pending', 'latest'].map((b) => rpc(RPC, 'eth_getTransactionCount', [gatewayAcct.address, b])));
      if (p === l) return;
      await sleep(200);
    }
    throw new DemoError('the gateway account still has pending transactions after 30 s');
  };

  // ============ 1. an unpaid call is refused with 402 and the offers
  header(1, 'An unpaid call is refused with 402 Payment Required');
  const PAID_URL = `${GW}/paid/v1/models`, CHAT_URL = `${GW}/v1/chat/completions`;
  const unpaid = await fetch(PAID_URL);
  const prHeader = unpaid.headers.get('payment-required');
  await unpaid.text();
  must(unpaid.status === 402 && prHeader, `GET /paid/v1/models answered ${unpaid.status}, not 402 with PAYMENT-REQUIRED`);
  const pr = unb64json(prHeader);
  line('GET /paid/v1/models', `${bold('402')}  PAYMENT-REQUIRED: x402Version ${pr.x402Version}, ${pr.accepts.length} offers, error "${pr.error ?? ''}"`);
  const showOffers = (accepts) => {
    for (const a of accepts) {
      line(`  offer ${a.scheme}`, `${fmt(BigInt(a.amount))} ${dim(`(${a.amount} units${a.scheme === 'exact' ? '' : ', max per call'})`)} on ${a.network}, asset ${short(a.asset)}, pay to ${short(a.payTo)}`);
      if (a.extra?.channelContract) line('', dim(`channel contract ${short(a.extra.channelContract)}, receiverAuthorizer ${short(a.extra.receiverAuthorizer)}, withdraw delay ${a.extra.withdrawDelay} s`));
    }
  };
  showOffers(pr.accepts);
  const chat402 = await fetch(CHAT_URL, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"model":"demo","messages":[]}' });
  const prChat = unb64json(chat402.headers.get('payment-required') || 'e30=');
  await chat402.text();
  must(chat402.status === 402, `POST /v1/chat/completions answered ${chat402.status}, not 402`);
  line('POST /v1/chat/completions', `${bold('402')}  ${prChat.accepts?.length ?? 0} offers (priced by tokens: the offer is the most a call can cost)`);
  showOffers(prChat.accepts || []);
  const exactOffer = pr.accepts.find((a) => a.scheme === 'exact');
  must(exactOffer, 'the 402 offers no exact payment');

  // ============ 2. exact: one on-chain transaction per call
  header(2, 'Paid calls with exact (EIP-3009): one on-chain transaction per call');
  {
    const h = await walletOf(exactPayer).writeContract({ address: USDC, abi: ERC20, functionName: 'mint', args: [exactPayer.address, 10n ** BigInt(DEC)], gas: 200000n });
    must((await pub.waitForTransactionReceipt({ hash: h, timeout: 30000 })).status === 'success', 'minting test USDC to the payer reverted');
  }
  await gatewayIdle();
  const payerB0 = await bal(exactPayer.address), recvB0 = await bal(receiver);
  line('payer', `${exactPayer.address}  balance ${fmt(payerB0)}`);
  line('receiver', `${receiver}  balance ${fmt(recvB0)}`);
  const exactTxs = [];
  // (a) the official x402 client (@x402/fetch + @x402/evm ExactEvmScheme)
  const payFetch = wrapFetchWithPaymentFromConfig(fetch, { schemes: [{ network: 'eip155:*', client: new ExactEvmScheme(exactPayer) }], spendControls: false });
  for (let i = 0; i < 2; i++) {
    const r = await payFetch(PAID_URL);
    const body = await r.text();
    const resp = r.headers.get('payment-response');
    must(r.status === 200 && resp, `the official x402 client's call answered ${r.status}: ${body.slice(0, 200)}`);
    const j = unb64json(resp);
    must(j.success && j.transaction, `PAYMENT-RESPONSE is not a success: ${JSON.stringify(j)}`);
    exactTxs.push({ client: '@x402/fetch', tx: j.transaction, charged: BigInt(j.extra?.chargedAmount ?? exactOffer.amount) });
    line(`call ${exactTxs.length} @x402/fetch`, `200  transaction ${j.transaction}`);
  }
  // (b) the C payer: build/tollgate pay --no-channel
  const exState = join(scratch, 'exact-payer-state');
  for (let i = 0; i < 2; i++) {
    const r = await run(TOLLGATE, ['pay', '--private-key', KEYS[2], '--state', exState, '--no-channel', PAID_URL]);
    const m = /^charged (\d+) \(exact, transaction (0x[0-9a-f]{64})/m.exec(r.err);
    must(r.code === 0 && m, `tollgate pay --no-channel failed (exit ${r.code}): ${r.err.trim()}`);
    exactTxs.push({ client: 'tollgate pay', tx: m[2], charged: BigInt(m[1]) });
    line(`call ${exactTxs.length} tollgate pay`, `200  transaction ${m[2]}`);
  }
  const rcpts = await Promise.all(exactTxs.map((e) => pub.waitForTransactionReceipt({ hash: e.tx, timeout: 30000 })));
  must(rcpts.every((r) => r.status === 'success'), `a transferWithAuthorization failed on-chain: ${rcpts.map((r) => r.status).join(',')}`);
  must(new Set(exactTxs.map((e) => e.tx)).size === exactTxs.length, 'two calls share a transaction');
  for (const [i, r] of rcpts.entries()) line(`  mined tx ${i + 1}`, `block ${r.blockNumber}, gas ${r.gasUsed}, from gateway ${short(r.from)}`);
  await gatewayIdle();
  const payerB1 = await bal(exactPayer.address), recvB1 = await bal(receiver);
  const exactSum = exactTxs.reduce((a, e) => a + e.charged, 0n);
  line('payer balance', `${fmt(payerB0)} -> ${fmt(payerB1)}  (${fmt(payerB1 - payerB0)})`);
  line('receiver balance', `${fmt(recvB0)} -> ${fmt(recvB1)}  (+${fmt(recvB1 - recvB0)})`);
  must(payerB0 - payerB1 === exactSum && recvB1 - recvB0 === exactSum, `balances moved by ${payerB0 - payerB1}/${recvB1 - recvB0}, the calls were charged ${exactSum}`);
  ok(`${exactTxs.length} calls, ${exactTxs.length} transactions, ${fmt(exactSum)} moved on-chain: exactly the charges announced`);

  // ============ 3. a channel and a burst of voucher-paid calls
  header(3, 'A payment channel: one deposit, then a burst of calls paid by off-chain vouchers');
  const chState = join(scratch, 'channel-payer-state');
  {
    const h = await walletOf(chanPayer).writeContract({ address: USDC, abi: ERC20, functionName: 'mint', args: [chanPayer.address, 10n ** BigInt(DEC)], gas: 200000n });
    must((await pub.waitForTransactionReceipt({ hash: h, timeout: 30000 })).status === 'success', 'minting test USDC to the channel payer reverted');
  }
  const DEPOSIT = 10n ** BigInt(DEC) / 2n; // half of what was minted
  const nonce0 = await pub.getTransactionCount({ address: chanPayer.address });
  const cp0 = await bal(chanPayer.address), cc0 = await bal(CHANNELS);
  const N_BURST = 50, PAR = 8;
  const tB = Date.now();
  const burst = await run(TOLLGATE, ['pay', '--private-key', KEYS[3], '--state', chState, '--open-channel', String(DEPOSIT), '--rpc-url', RPC,
    '--count', String(N_BURST), '--parallel', String(PAR), PAID_URL]);
  const burstMs = Date.now() - tB;
  const mb = /calls (\d+) ok (\d+) failed (\d+) charged (\d+)/.exec(burst.err);
  must(burst.code === 0 && mb && mb[2] === String(N_BURST), `tollgate pay --open-channel --count ${N_BURST} failed (exit ${burst.code}): ${burst.err.trim()}`);
  const nonce1 = await pub.getTransactionCount({ address: chanPayer.address });
  const cp1 = await bal(chanPayer.address), cc1 = await bal(CHANNELS);
  const st = JSON.parse(readFileSync(join(chState, 'state.json'), 'utf8'));
  const ch = st.channels[0];
  must(ch, 'the payer state has no channel');
  line('command', dim(`tollgate pay --open-channel ${DEPOSIT} --count ${N_BURST} --parallel ${PAR} ${PAID_URL}`));
  line('channel opened', `${ch.id}`);
  line('  payer transactions', `${nonce1 - nonce0} (approve + deposit), then none`);
  line('  deposit on-chain', `${fmt(cc1 - cc0)}  (channel contract ${short(CHANNELS)} now holds ${fmt(cc1)})`);
  line('  payer balance', `${fmt(cp0)} -> ${fmt(cp1)}`);
  line('burst', `${mb[1]} calls, ${PAR} in parallel: ${mb[2]} ok, ${mb[3]} failed, charged ${fmt(BigInt(mb[4]))} in ${burstMs} ms (incl. opening)`);

  // Streamed chat calls paid by vouchers on the same channel (SSE; the charge of a stream is its delivered usage).
  const chatBody = (i, stream) => JSON.stringify({ model: 'demo-model', max_tokens: 8 + i * 4, stream, ...(stream ? { stream_options: { include_usage: true } } : {}),
    messages: [{ role: 'user', content: 'Say something about tollgates and micropayments, briefly.' }] });
  const chatLines = [];
  for (let i = 0; i < 4; i++) {
    const stream = i % 2 === 0;
    const r = await run(TOLLGATE, ['pay', '--private-key', KEYS[3], '--state', chState, '-X', 'POST', '-H', 'Content-Type: application/json', '-d', chatBody(i, stream), CHAT_URL]);
    const m = /^charged (\d+) \(channel (0x[0-9a-f]{64}), cumulative (\d+)/m.exec(r.err);
    must(r.code === 0, `a ${stream ? 'streamed ' : ''}chat call failed (exit ${r.code}): ${r.err.trim()}`);
    const chunks = stream ? (r.out.match(/^data: \{/gm) || []).length : 0;
    const trailer = stream ? /^: x402-charge (\{.*\})$/m.exec(r.out) : null;
    const charged = m ? m[1] : trailer ? JSON.parse(trailer[1]).chargedAmount : null;
    must(charged !== null, `no charge reported for a ${stream ? 'streamed ' : ''}chat call: ${r.err.trim()} ${r.out.slice(-300)}`);
    chatLines.push({ stream, charged: BigInt(charged), cum: m ? m[3] : trailer ? JSON.parse(trailer[1]).chargedCumulativeAmount : '?' });
    line(`chat call ${i + 1}${stream ? ' (streamed)' : ''}`, `200  ${stream ? `${chunks} SSE chunks, ` : ''}charged ${fmt(BigInt(charged))} by usage, channel cumulative ${fmt(BigInt(chatLines.at(-1).cum))}`);
  }
  const chRow = (await sql(`SELECT hex(charged) AS c, charge_count AS n FROM channels WHERE lower(hex(id)) = '${ch.id.slice(2).toLowerCase()}'`))[0];
  must(chRow, 'the store has no row for the channel');
  const storeChanCharged = BigInt('0x' + chRow.c);
  line('store', `channel charged ${fmt(storeChanCharged)} over ${chRow.n} calls; the payer signed vouchers up to ${fmt(BigInt(ch.signedMax))}`);
  const nonce2 = await pub.getTransactionCount({ address: chanPayer.address });
  must(nonce2 === nonce1, 'the payer sent a transaction after opening the channel');
  must((await bal(receiver)) === recvB1, 'the receiver balance moved before any settlement');
  must(storeChanCharged === BigInt(mb[4]) + chatLines.reduce((a, c) => a + c.charged, 0n), `the store's channel total ${storeChanCharged} differs from the charges announced`);
  ok(`${chRow.n} calls paid off-chain: 0 transactions, nothing moved on-chain yet (owed to the receiver: ${fmt(storeChanCharged)})`);

  // ============ 4. an access pass: bought, used through an OpenAI SDK, transferred
  header(4, 'An access pass (ERC-1155): bought, used with an OpenAI SDK, transferred to someone else');
  const PASS_PRICE = 5n * 10n ** BigInt(DEC);
  {
    const owner = privateKeyToAccount(KEYS[0]); // deployed the contracts: defines the plans
    const h = await walletOf(owner).writeContract({ address: PASSES, abi: PASS_ABI, functionName: 'createPlan', gas: 500000n,
      args: [{ token: USDC, price: PASS_PRICE, period: 30 * 86400, quota: 100n, maxSupply: 0, transferable: true, active: true }] });
    must((await pub.waitForTransactionReceipt({ hash: h, timeout: 30000 })).status === 'success', 'createPlan reverted');
  }
  const planId = await pub.readContract({ address: PASSES, abi: PASS_ABI, functionName: 'planCount' });
  must(planId === 1n, `the demo's plan got id ${planId}, the gateway's configuration says 1`);
  line('plan 1 "pro"', `${fmt(PASS_PRICE)} for 30 days, 100 calls included; the gateway maps it to POST /v1/chat/completions`);
  const aliceKey = generatePrivateKey(), bobKey = generatePrivateKey();
  const alice = privateKeyToAccount(aliceKey), bob = privateKeyToAccount(bobKey);
  await rpc(RPC, 'anvil_setBalance', [alice.address, '0x8AC7230489E80000']); // 10 ETH for gas
  {
    const h = await walletOf(alice).writeContract({ address: USDC, abi: ERC20, functionName: 'mint', args: [alice.address, PASS_PRICE], gas: 200000n });
    must((await pub.waitForTransactionReceipt({ hash: h, timeout: 30000 })).status === 'success', 'minting test USDC to the pass buyer reverted');
  }
  const passArgs = ['--plan', '1', '--deployment', depFile, '--rpc-url', RPC];
  const buy = await run(TOLLGATE, ['pass', 'buy', ...passArgs, '--private-key', aliceKey]);
  must(buy.code === 0, `tollgate pass buy failed (exit ${buy.code}): ${buy.err.trim()}`);
  line('command', dim('tollgate pass buy --plan 1 --deployment deployment.json --rpc-url … --private-key ALICE'));
  for (const l of (buy.out + buy.err).trim().split('\n')) out('    ' + l);
  // entitled(holder, plan) returns (ok, until, via): true while `holder` holds or is delegated a live pass.
  const entitled = async (who) => (await pub.readContract({ address: PASSES, abi: PASS_ABI, functionName: 'entitled', args: [who, 1n] }))[0];
  must(await entitled(alice.address), 'alice bought a pass but the contract does not entitle her');
  const login = async (key) => {
    const r = await run(TOLLGATE, ['login', '--private-key', key, GW]);
    must(r.code === 0 && /^tgs_\S+$/.test(r.out.trim()), `tollgate login failed (exit ${r.code}): ${r.err.trim()}`);
    return r.out.trim();
  };
  const aliceToken = await login(aliceKey);
  line('tollgate login', `alice signs in (Sign-In with Ethereum): session token ${aliceToken.slice(0, 12)}…`);
  const chatAs = async (token, stream) => {
    const ai = new OpenAI({ baseURL: `${GW}/v1`, apiKey: token, maxRetries: 0 });
    const req = { model: 'demo-model', max_tokens: 12, messages: [{ role: 'user', content: 'Hello from a pass holder' }] };
    if (!stream) {
      const { data, response } = await ai.chat.completions.create(req).withResponse();
      return { text: data.choices[0].message.content, pass: response.headers.get('x-tollgate-pass') };
    }
    const { data, response } = await ai.chat.completions.create({ ...req, stream: true, stream_options: { include_usage: true } }).withResponse();
    let text = '', chunks = 0;
    for await (const c of data) { chunks++; text += c.choices[0]?.delta?.content ?? ''; }
    return { text, chunks, pass: response.headers.get('x-tollgate-pass') };
  };
  const recvP0 = await bal(receiver), totP0 = await storeTotals();
  const a1 = await chatAs(aliceToken, false);
  line('openai SDK, apiKey = token', `200  "${a1.text.slice(0, 40)}"`);
  line('  X-Tollgate-Pass', a1.pass || '(missing)');
  must(a1.pass && a1.pass.includes('plan=pro'), 'the answer does not name the pass in X-Tollgate-Pass');
  const a2 = await chatAs(aliceToken, true);
  line('openai SDK, streamed', `200  ${a2.chunks} chunks, "${a2.text.slice(0, 40)}"`);
  const usage = await sql(`SELECT calls FROM pass_usage WHERE lower(hex(holder)) = '${alice.address.slice(2).toLowerCase()}'`);
  const aliceCalls = usage.reduce((a, r) => a + Number(r.calls), 0);
  must(aliceCalls === 2, `the store counted ${aliceCalls} pass calls for alice, she made 2`);
  line('store', `alice's pass used for ${aliceCalls} of 100 included calls; nothing charged per call`);
  const tr = await run(TOLLGATE, ['pass', 'transfer', ...passArgs, '--to', bob.address, '--private-key', aliceKey]);
  must(tr.code === 0, `tollgate pass transfer failed (exit ${tr.code}): ${tr.err.trim()}`);
  line('command', dim(`tollgate pass transfer --plan 1 --to ${short(bob.address)} … --private-key ALICE`));
  for (const l of (tr.out + tr.err).trim().split('\n')) out('    ' + l);
  {
    const ea = await entitled(alice.address), eb = await entitled(bob.address);
    must(!ea && eb, `after the transfer the contract should entitle bob, not alice: entitled(alice)=${ea}, entitled(bob)=${eb}`);
  }
  let refused = null;
  for (let i = 0; i < 40 && !refused; i++) {
    try { await chatAs(aliceToken, false); await sleep(100); } catch (e) { if (e.status === 403) refused = e; else throw e; }
  }
  must(refused, "alice's token was still admitted 4 s after she transferred her pass");
  line('alice again', `${bold('403')}  ${refused.message.replace(/^403 /, '')}`);
  const bobToken = await login(bobKey);
  const b1 = await chatAs(bobToken, false);
  line('bob signs in and calls', `200  X-Tollgate-Pass ${b1.pass}`);
  must(b1.pass && b1.pass.toLowerCase().includes(bob.address.toLowerCase()), 'bob\'s answer does not name him as the holder');
  const totP1 = await storeTotals();
  must((await bal(receiver)) === recvP0 && totP1.exact + totP1.channel + totP1.other === totP0.exact + totP0.channel + totP0.other,
    'calls on a pass changed the charges or the receiver balance');
  ok(`pass bought on-chain for ${fmt(PASS_PRICE)}, used by alice, transferred: alice refused within a block, bob admitted; no per-call charge`);

  // ============ 5. settlement
  header(5, 'A settlement batch: tollgate settle claims the channel totals and sweeps them to the receiver');
  await gatewayIdle(); // the settle run sends from the gateway key too
  const recvS0 = await bal(receiver);
  const settle = await run(TOLLGATE, ['settle', '--store', `sqlite:${storePath}`, '--deployment', depFile, '--rpc-url', RPC,
    '--keystore', keystore, '--password-file', pwFile, '--journal', `${storePath}.settle.txm`, '--confirmations', '1'], 120000);
  line('command', dim('tollgate settle --store sqlite:store.db --deployment deployment.json --rpc-url … --keystore … --journal store.db.settle.txm'));
  for (const l of settle.out.trimEnd().split('\n')) out('    ' + l);
  must(settle.code === 0, `tollgate settle failed (exit ${settle.code}): ${settle.err.trim()}`);
  const recvS1 = await bal(receiver);
  line('receiver balance', `${fmt(recvS0)} -> ${fmt(recvS1)}  (+${fmt(recvS1 - recvS0)})`);
  must(recvS1 - recvS0 === storeChanCharged, `the settlement moved ${recvS1 - recvS0} to the receiver, the store charged ${storeChanCharged} on the channel`);
  ok(`claimed and swept exactly the channel's charged total, ${fmt(storeChanCharged)}`);

  // ============ 5. reconciliation
  header(6, 'Reconciliation: on-chain balances against the store\'s charges');
  const rep = await run(TOLLGATE, ['report', '--store', `sqlite:${storePath}`, '--rpc-url', RPC, '--deployment', depFile]);
  line('command', dim('tollgate report --store sqlite:store.db --rpc-url … --deployment deployment.json'));
  for (const l of rep.out.trimEnd().split('\n')) out('    ' + l);
  must(rep.code === 0, `tollgate report found a mismatch or failed (exit ${rep.code}): ${rep.err.trim()}`);
  const tot = await storeTotals();
  const recvF = await bal(receiver), chanF = await bal(CHANNELS);
  out('');
  line('store: exact charges', `${amt(tot.exact)}  ${dim(`${tot.nExact} calls`)}`);
  line('store: channel charges', `${amt(tot.channel)}  ${dim(`${tot.nChannel} calls`)}`);
  line('store: total charged', `${amt(tot.exact + tot.channel)}`);
  line('chain: receiver balance', `${amt(recvF)}`);
  line('chain: channel deposit left', `${amt(chanF)}  ${dim('(the payer\'s, withdrawable after the delay)')}`);
  line('chain: payers', `exact payer ${fmt(await bal(exactPayer.address))}, channel payer ${fmt(await bal(chanPayer.address))}`);
  must(recvF === tot.exact + tot.channel, `the receiver holds ${recvF} on-chain, the store charged ${tot.exact + tot.channel}`);
  must(chanF === DEPOSIT - tot.channel, `the channel contract holds ${chanF}, expected deposit ${DEPOSIT} minus charges ${tot.channel}`);
  ok(green(bold(`every unit charged is on-chain: receiver ${fmt(recvF)} = store ${fmt(tot.exact + tot.channel)}`)));

  // ============ the end
  out('');
  out(bold(cyan('Keep it running and point a real client at it')) + dim(`  (${secs()})`));
  const G = SERVE ? GW : 'http://127.0.0.1:8402';
  if (!SERVE) line('keep it running', `TG_DEMO_SERVE=1 TG_DEMO_PORT=8402 make demo   ${dim('(the same tour, then everything stays up until Ctrl-C)')}`);
  line('base URL', `${G}   ${dim('(OpenAI-compatible: POST /v1/chat/completions, GET /v1/models; GET /paid/v1/* priced per call)')}`);
  line('pay one call', `build/tollgate pay --private-key KEY --state /tmp/my-payer ${G}/paid/v1/models`);
  line('a chat call, by voucher', `build/tollgate pay --private-key KEY --state /tmp/my-payer --open-channel 100000 --rpc-url ${SERVE ? RPC : 'RPC'} \\`);
  line('', `  -X POST -H 'Content-Type: application/json' -d '{"model":"m","messages":[{"role":"user","content":"hi"}]}' ${G}/v1/chat/completions`);
  line('', dim(`KEY: a funded key, e.g. anvil's dev key ${KEYS[3]}${SERVE ? '' : '; RPC: the chain URL printed'}`));
  line('an OpenAI SDK', `build/tollgate proxy --listen 127.0.0.1:8403 --target ${G} --private-key KEY --state /tmp/my-payer`);
  line('', dim('then give the SDK base URL http://127.0.0.1:8403/v1: every call it makes is paid'));
  line('with an access pass', `build/tollgate login --private-key KEY ${G}   ${dim('(prints a session token: use it as the API key)')}`);
  line('any x402 v2 client', dim('pays too: @x402/fetch with @x402/evm ExactEvmScheme registered for eip155:*'));
  if (SERVE) {
    line('settle by hand', `build/tollgate settle --store sqlite:${storePath} --deployment ${depFile} \\`);
    line('', `  --rpc-url ${RPC} --keystore ${keystore} --password-file ${pwFile} --journal ${storePath}.settle.txm`);
  }
  line('your own model server', dim('set `upstream llm http://HOST:PORT` in tollgated.conf (docs/tollgated.conf.sample)'));
  if (SERVE) {
    // A funded payer for the README's tour, and the running demo's coordinates in build/demo.env.
    const tourPayer = privateKeyToAccount(KEYS[4]);
    const h = await walletOf(tourPayer).writeContract({ address: USDC, abi: ERC20, functionName: 'mint', args: [tourPayer.address, 10n * 10n ** BigInt(DEC)], gas: 200000n });
    must((await pub.waitForTransactionReceipt({ hash: h, timeout: 30000 })).status === 'success', 'minting test USDC to the tour payer reverted');
    const q = (v) => `'${String(v).replace(/'/g, "'\\''")}'`;
    const vars = {
      TG_GATEWAY: GW, ETH_RPC_URL: RPC, TG_PAYER_KEY: KEYS[4], TG_PAYER_STATE: join(scratch, 'tour-payer'),
      TG_PROXY_PORT: await freePort(), TG_STORE: `sqlite:${storePath}`, TG_DEPLOYMENT: depFile,
      TG_KEYSTORE: keystore, TG_PASSWORD_FILE: pwFile, TG_JOURNAL: `${storePath}.settle.txm`,
    };
    writeFileSync(ENV_FILE, '# The running `TG_DEMO_SERVE=1 make demo` (removed when it stops): . build/demo.env\n' +
      Object.entries(vars).map(([k, v]) => `export ${k}=${q(v)}`).join('\n') + '\n');
    envWritten = true;
    line('the tour payer', `${tourPayer.address}  ${fmt(await bal(tourPayer.address))}  (TG_PAYER_KEY)`);
    line('environment', `. ${ENV_FILE}   ${dim('(TG_GATEWAY, ETH_RPC_URL, TG_PAYER_KEY, ...: the README tour uses them)')}`);
    step = 'serving';
    out('');
    out(green(bold(`serving: gateway ${GW}, chain ${RPC}; press Ctrl-C to stop everything`)));
    await new Promise((res) => {
      const iv = setInterval(() => {
        for (const p of [anvil, upstream, gw]) if (p.exited) { clearInterval(iv); out(red(`${p.name} exited: ${JSON.stringify(p.exited)}`)); res(); }
      }, 500);
    });
    throw new DemoError('a process of the running demo exited');
  }
  out('');
  out(green(bold(`demo finished in ${secs()}`)) + ': every process it started is stopped.');
}

main().then(() => finish(0), fail);
