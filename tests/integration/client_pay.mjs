// Integration test of the payer's side (`tollgate pay`, `tollgate channel`) against anvil, the
// contracts, tg_upstream and tollgated: exact first, then 1,000 calls by voucher only, 64 parallel
// calls on one channel, a corrective 402 adopted, a retried payment (connection cut after the
// charge) charged once, caps refused locally; the official openai client through `tollgate proxy`
// (plain and streamed chat completions, paid by voucher); `tollgate settle` moves exactly the
// charged totals on-chain.
import { spawn, spawnSync } from 'node:child_process';
import { openSync, closeSync, mkdtempSync, writeFileSync, readFileSync, readdirSync, rmSync, existsSync, mkdirSync, cpSync } from 'node:fs';
import { createServer, connect as netConnect } from 'node:net';
import OpenAI from 'openai';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createPublicClient, createWalletClient, http, parseAbi, defineChain } from 'viem';
import { privateKeyToAccount, generatePrivateKey } from 'viem/accounts';
import { KEYS, sleep, freePort, waitHttp, rpc } from './lib/harness.mjs';

const root = process.env.TG_ROOT || process.cwd();
const build = process.env.TG_BUILD || join(root, 'build');
const BIN = join(root, 'node_modules/.bin');
const scratch = mkdtempSync(join(tmpdir(), 'tg-client-'));
const TOLLGATE = join(build, 'tollgate');
const TOLLGATED = join(build, 'tollgated');
const UPSTREAM = join(build, 'tools/tg_upstream');
const T0 = Date.now();
const elapsed = () => ((Date.now() - T0) / 1000).toFixed(1) + 's';

let passed = 0, failed = 0;
function check(name, ok, detail = '') {
  if (ok) { passed++; console.log(`PASS ${name}`); }
  else { failed++; console.log(`FAIL ${name}${detail ? ' -- ' + detail : ''}`); }
  return ok;
}
const info = (msg) => console.log(`# ${msg}`);
const procs = new Set();
function killAll() { for (const p of procs) { try { process.kill(p.pid, 'SIGKILL'); } catch { /* gone */ } } procs.clear(); }
function summary() { console.log(`${passed} passed, ${failed} failed (${elapsed()})`); }
let finishing = false;
function finish(code) {
  if (finishing) return;
  finishing = true;
  killAll();
  if (code !== 0 || process.env.TG_CLIENT_KEEP) info(`scratch kept: ${scratch}`);
  else rmSync(scratch, { recursive: true, force: true });
  process.exit(code);
}
process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, () => { console.log(`FAIL interrupted by ${sig}`); failed++; summary(); finish(1); });
process.on('uncaughtException', (e) => { console.log(`FAIL uncaught: ${e?.stack || e}`); failed++; summary(); finish(1); });
process.on('unhandledRejection', (e) => { console.log(`FAIL unhandled rejection: ${e?.stack || e}`); failed++; summary(); finish(1); });
setTimeout(() => { console.log('FAIL watchdog: the test took over 600 s'); failed++; summary(); finish(1); }, 600000).unref();

function start(name, cmd, args) {
  const fd = openSync(join(scratch, `${name}.log`), 'a');
  const p = spawn(cmd, args, { stdio: ['ignore', fd, fd], env: { ...process.env, HOME: scratch } });
  closeSync(fd);
  p.logText = '';
  p.on('exit', (code, sig) => { procs.delete(p); p.exited = { code, sig }; });
  procs.add(p);
  return p;
}
function run(cmd, args, timeout = 60000) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', env: { ...process.env, HOME: scratch, ETH_RPC_URL: '' }, maxBuffer: 1 << 26, timeout });
  return { code: r.status, out: r.stdout || '', err: r.stderr || '' };
}

async function main() {
  for (const f of [TOLLGATE, TOLLGATED, UPSTREAM, join(BIN, 'anvil')]) {
    if (!existsSync(f)) { check(`setup: ${f} exists (run make -j2 unit; npm ci)`, false); return; }
  }
  const art = ['contracts/artifacts', 'contracts/out'].map((d) => join(root, d))
    .find((d) => existsSync(join(d, 'TollgateChannels.sol/TollgateChannels.json')) || existsSync(join(d, 'TollgateChannels.json')));
  if (!check('setup: contract artifacts present', !!art)) return;
  const CH_ABI = JSON.parse(readFileSync(existsSync(join(art, 'TollgateChannels.json')) ? join(art, 'TollgateChannels.json') : join(art, 'TollgateChannels.sol/TollgateChannels.json'), 'utf8')).abi;

  const anvilPort = await freePort();
  const RPC = `http://127.0.0.1:${anvilPort}`;
  const anvil = start('anvil', join(BIN, 'anvil'), ['--host', '127.0.0.1', '--port', String(anvilPort), '--block-time', '1', '--silent']);
  for (let i = 0; ; i++) {
    try { await rpc(RPC, 'eth_chainId'); break; } catch {
      if (anvil.exited || i > 100) throw new Error(`anvil did not start: ${anvil.logText.slice(-1000)}`);
      await sleep(100);
    }
  }
  const depFile = join(scratch, 'deployment.json');
  const dep = run(TOLLGATE, ['deploy', '--rpc-url', RPC, '--out', depFile]);
  if (!check('setup: contracts deployed with tollgate deploy', dep.code === 0 && existsSync(depFile), dep.err.trim())) return;
  const deployment = JSON.parse(readFileSync(depFile, 'utf8'));
  const USDC = deployment.contracts.TestUSDC.address;
  const CHANNELS = deployment.contracts.TollgateChannels.address;
  const ksDir = join(scratch, 'keys');
  mkdirSync(ksDir);
  const pwFile = join(scratch, 'password');
  writeFileSync(pwFile, 'client-test-' + Math.random().toString(36).slice(2) + '\n');
  const imp = run(TOLLGATE, ['wallet', 'import', ksDir, 'gateway', '--private-key', KEYS[1], '--password-file', pwFile]);
  if (!check('setup: gateway keystore imported', imp.code === 0, imp.err.trim())) return;
  const keystore = join(ksDir, readdirSync(ksDir)[0]);
  const payer = privateKeyToAccount(KEYS[3]);
  const receiver = privateKeyToAccount(generatePrivateKey()).address;

  const upPort = await freePort();
  const upstream = start('upstream', UPSTREAM, [String(upPort), '2']);
  await waitHttp(`http://127.0.0.1:${upPort}/v1/models`, upstream);
  const gwPort = await freePort();
  const GW = `http://127.0.0.1:${gwPort}`;
  const storePath = join(scratch, 'store.db');
  const conf = join(scratch, 'tollgated.conf');
  writeFileSync(conf, [
    `listen 127.0.0.1:${gwPort}`, 'workers 2', 'max_header_bytes 64k',
    `upstream llm http://127.0.0.1:${upPort} timeout=30s`,
    'route chat  POST /v1/chat/completions upstream=llm price=chat',
    'route paid  *    /paid/v1/*           upstream=llm price=flat strip_prefix=/paid',
    'route models GET /v1/models           upstream=llm',
    'price flat call 0.001',
    'price chat token model=* input_per_mtok=2.50 output_per_mtok=10 max_per_call=0.01',
    'schemes exact channel', 'chain_id 31337', `rpc_url ${RPC}`, `deployment ${depFile}`,
    `keystore ${keystore} password_file=${pwFile}`, `pay_to ${receiver}`,
    'asset decimals=6 name="USD Coin" version=2', 'exact_wait submission', 'exact_validity 120s',
    'channel withdraw_delay=15m', `store sqlite ${storePath}`, '',
  ].join('\n'));
  const gw = start('tollgated', TOLLGATED, ['-c', conf]);
  await waitHttp(`${GW}/healthz`, gw);
  info(`setup done in ${elapsed()}: anvil ${RPC}, gateway ${GW}`);

  const chain = defineChain({ id: 31337, name: 'anvil', nativeCurrency: { name: 'Ether', symbol: 'ETH', decimals: 18 }, rpcUrls: { default: { http: [RPC] } } });
  const pub = createPublicClient({ chain, transport: http(RPC), pollingInterval: 200 });
  const w = createWalletClient({ account: payer, chain, transport: http(RPC) });
  const ERC20 = parseAbi(['function balanceOf(address) view returns (uint256)', 'function mint(address to, uint256 amount)', 'function approve(address spender, uint256 amount) returns (bool)']);
  const bal = (a) => pub.readContract({ address: USDC, abi: ERC20, functionName: 'balanceOf', args: [a] });
  const nonce = () => pub.getTransactionCount({ address: payer.address });
  const sql = (q) => { const r = run('sqlite3', ['-json', storePath, q]); if (r.code !== 0) throw new Error(`sqlite3: ${r.err}`); return r.out.trim() ? JSON.parse(r.out) : []; };
  const nCharges = () => sql('SELECT count(*) AS n FROM charges')[0].n;

  const STATE = join(scratch, 'payer-state');
  const URL = `${GW}/paid/v1/models`;
  const pay = (...args) => run(TOLLGATE, ['pay', '--private-key', KEYS[3], '--state', STATE, ...args]);
  const chan = (...args) => run(TOLLGATE, ['channel', ...args, '--private-key', KEYS[3], '--state', STATE]);
  const stateJson = () => JSON.parse(readFileSync(join(STATE, 'state.json'), 'utf8'));

  // ---- exact first (no channel known: policy falls back to exact)
  {
    const h = await w.writeContract({ address: USDC, abi: ERC20, functionName: 'mint', args: [payer.address, 10_000_000n], gas: 200000n });
    await pub.waitForTransactionReceipt({ hash: h });
  }
  const b0 = await bal(payer.address);
  const r1 = pay(URL);
  const m1 = /^charged (\d+) \(exact, transaction (0x[0-9a-f]{64})\)$/m.exec(r1.err);
  check('exact: the first call pays exact (200, body passed through, charge 1000 with its transaction on stderr)',
    r1.code === 0 && m1 && m1[1] === '1000' && r1.out.includes('"object":"list"'), `${r1.code} ${r1.err} ${r1.out.slice(0, 200)}`);
  if (m1) {
    const rc = await pub.waitForTransactionReceipt({ hash: m1[2], timeout: 30000 });
    check('exact: the transferWithAuthorization was mined and moved exactly the price', rc.status === 'success' && b0 - (await bal(payer.address)) === 1000n);
  }

  // ---- a channel opened on-chain (approve + deposit), registered with `tollgate channel add`
  const DEPOSIT = 5_000_000n;
  const salt = '0x' + Buffer.from(Array.from({ length: 32 }, () => Math.floor(Math.random() * 256))).toString('hex');
  const terms = JSON.parse(Buffer.from((await fetch(URL)).headers.get('payment-required'), 'base64').toString()).accepts.find((a) => a.scheme === 'batch-settlement');
  const cfg = { payer: payer.address, payerAuthorizer: '0x0000000000000000000000000000000000000000', receiver, receiverAuthorizer: terms.extra.receiverAuthorizer, token: USDC, withdrawDelay: terms.extra.withdrawDelay, salt };
  const nOpen0 = await nonce();
  const op = run(TOLLGATE, ['channel', 'open', '--deposit', String(DEPOSIT), '--salt', salt, '--rpc-url', RPC, '--private-key', KEYS[3], '--state', STATE, URL]);
  check('channel open: approve + deposit sent from C and mined (two payer transactions)', op.code === 0 && (await nonce()) === nOpen0 + 2, `${op.code} ${op.err}`);
  const channelId = await pub.readContract({ address: CHANNELS, abi: CH_ABI, functionName: 'getChannelId', args: [cfg] });
  const onchain = await bal(CHANNELS);
  const add = chan('add', '--salt', salt, '--deposit', String(DEPOSIT), URL);
  check('channel open/add: the channel is registered under the id the contract computes, with the deposit on-chain', op.out.startsWith(channelId + ' ') && onchain === DEPOSIT && add.code === 0 && add.out === op.out, `${op.out} | ${add.code} ${add.err} ${add.out} vs ${channelId}`);

  // ---- vouchers only from now on: the payer's nonce and token balance do not move
  const n0 = await nonce(), bal0 = await bal(payer.address), c0 = nCharges();
  let cums = [];
  for (let i = 0; i < 3; i++) {
    const r = pay(URL);
    const m = /^charged (\d+) \(channel (0x[0-9a-f]{64}), cumulative (\d+)\)$/m.exec(r.err);
    cums.push(m ? [m[1], m[2], BigInt(m[3])] : r.err);
  }
  check('channel: three separate processes pay with vouchers (charge 1000 each, cumulative 1000, 2000, 3000 confirmed by the gateway)',
    cums.every((c, i) => Array.isArray(c) && c[0] === '1000' && c[1] === channelId && c[2] === BigInt(1000 * (i + 1))), JSON.stringify(cums, (k, v) => typeof v === 'bigint' ? String(v) : v));
  const snapshot = join(scratch, 'state-snapshot');
  cpSync(STATE, snapshot, { recursive: true });
  const t1000 = Date.now();
  // (a loaded machine: up to 60 ms a call; the bound is for a hung run, not a speed check)
  const r1000 = run(TOLLGATE, ['pay', '--private-key', KEYS[3], '--state', STATE, '--count', '1000', URL], 300000);
  check('channel: the next 1,000 calls in one process all pay with vouchers, charged 1000 x 1000', r1000.code === 0 && /calls 1000 ok 1000 failed 0 charged 1000000$/m.test(r1000.err), r1000.err);
  info(`1,000 voucher calls in ${Date.now() - t1000} ms`);
  const r64 = pay('--count', '64', '--parallel', '64', URL);
  check('channel: 64 parallel calls on one channel through the library all succeed', r64.code === 0 && /calls 64 ok 64 failed 0 charged 64000$/m.test(r64.err), r64.err);
  let st = stateJson();
  const ch = st.channels.find((c) => c.id === channelId);
  check('state: the channel charged total is 1,067 x 1000 and the signed ceiling is ahead of it, within the deposit',
    ch && BigInt(ch.charged) === 1067000n && BigInt(ch.signedMax) > 1067000n && BigInt(ch.signedMax) <= DEPOSIT, JSON.stringify(ch));
  check('gateway: 1,067 channel charges recorded, each the price', nCharges() - c0 === 1067 && sql("SELECT count(*) AS n FROM charges WHERE scheme = 1 AND hex(amount) <> '" + (1000).toString(16).toUpperCase().padStart(64, '0') + "'")[0].n === 0, `${nCharges() - c0}`);
  check('chain: no payer transaction and no token movement after the opening (nonce and balance unchanged)', (await nonce()) === n0 && (await bal(payer.address)) === bal0);

  // ---- a retried request (same payment-identifier) is charged once
  const PID = 'retry_' + Math.random().toString(36).slice(2).padEnd(12, '0');
  const cA = nCharges();
  const ra = pay('--payment-id', PID, URL), rb = pay('--payment-id', PID, '-v', URL);
  const ma = /cumulative (\d+)\)/.exec(ra.err), mb = /cumulative (\d+), replayed\)/.exec(rb.err);
  check('retry: the same payment-identifier sent twice is charged once (one charge, same cumulative, second marked replayed)',
    ra.code === 0 && rb.code === 0 && ma && mb && ma[1] === mb[1] && nCharges() - cA === 1, `${ra.err} | ${rb.err} | charges +${nCharges() - cA}`);
  info(`retry: first body ${ra.out.length} bytes, replayed body ${rb.out.length} bytes`);
  st = stateJson();
  check('retry: the caps counters hold the retried call once', BigInt(st.spent.total) === 1000n * 1069n, st.spent.total);

  // ---- a retried request whose connection was cut after the gateway charged: charged once.
  //      A relay cuts the paid exchange as soon as the gateway's answer starts (the charge is
  //      committed before the answer); the CLI names the payment id, the retry with it replays.
  {
    const relayPort = await freePort();
    let cuts = 0;
    const relay = createServer((cs) => {
      const us = netConnect(gwPort, '127.0.0.1');
      let paid = false;
      cs.on('data', (d) => { if (/payment-signature:/i.test(d.toString('latin1'))) paid = true; us.write(d); });
      us.on('data', (d) => { if (paid) { cuts++; cs.destroy(); us.destroy(); } else cs.write(d); });
      cs.on('error', () => us.destroy()); us.on('error', () => cs.destroy());
      cs.on('close', () => us.destroy()); us.on('close', () => cs.destroy());
    });
    await new Promise((r) => relay.listen(relayPort, '127.0.0.1', r));
    const cC0 = nCharges(), spent0 = BigInt(stateJson().spent.total);
    const cut = await new Promise((resolve) => {
      const p = spawn(TOLLGATE, ['pay', '--private-key', KEYS[3], '--state', STATE, `http://127.0.0.1:${relayPort}/paid/v1/models`], { env: { ...process.env, HOME: scratch } });
      let err = '';
      p.stderr.on('data', (d) => { err += d; });
      p.on('exit', (code) => resolve({ code, err }));
    });
    relay.close();
    const mid = /--payment-id (\S+)/.exec(cut.err);
    const charged1 = nCharges() - cC0;
    const again = mid ? pay('--payment-id', mid[1], URL) : { code: -1, err: '' };
    check('retry after a cut: the cut call fails naming its payment id; the gateway had charged it once',
      cut.code !== 0 && cuts === 1 && !!mid && charged1 === 1, `${cut.code} cuts=${cuts} ${cut.err.trim()} charges +${charged1}`);
    check('retry after a cut: the retry with that id is answered from the gateway\'s record (replayed, no second charge, counted once)',
      again.code === 0 && /charged 1000 \(channel 0x[0-9a-f]{64}, cumulative \d+, replayed\)/.test(again.err) && nCharges() - cC0 === 1 && BigInt(stateJson().spent.total) === spent0 + 1000n,
      `${again.code} ${again.err.trim()} charges +${nCharges() - cC0} spent ${BigInt(stateJson().spent.total) - spent0}`);
  }

  // ---- a corrective 402: the state rolled back (a restore), the gateway's total is adopted after
  //      checking that its voucher is one we signed
  rmSync(STATE, { recursive: true, force: true });
  cpSync(snapshot, STATE, { recursive: true });
  // 200 calls: more than any ceiling the gateway may hold beyond its charged total (headroom
  // 50 calls plus up to 64 in flight when it was signed), so the correction must come.
  const rc2 = run(TOLLGATE, ['pay', '--private-key', KEYS[3], '--state', STATE, '-v', '--count', '200', URL], 300000);
  st = stateJson();
  const ch2 = st.channels.find((c) => c.id === channelId);
  check('correction: after a state rollback the calls go on; a corrective 402 was adopted and the charged total caught up',
    rc2.code === 0 && /calls 200 ok 200 failed 0/.test(rc2.err) && /adopted the gateway's charged total/.test(rc2.err) && BigInt(ch2.charged) === 1269000n,
    `${rc2.err.split('\n').filter((l) => !l.startsWith('*') && !l.startsWith('<') && !l.startsWith('>')).join(' ')} charged ${ch2?.charged}`);

  // ---- caps: refused locally, nothing signed, no paid request seen by the gateway
  st = stateJson();
  const before = JSON.stringify(st.channels), cC = nCharges(), spent = BigInt(st.spent.total);
  const rcap = pay('--max-total', String(spent + 500n), URL);
  const rcall = pay('--max-per-call', '999', URL);
  const rday = pay('--max-per-day', String(spent), URL);
  st = stateJson();
  check('caps: total, per-call and per-day caps refuse the call locally with a clear error (exit 1, nothing charged)',
    rcap.code === 1 && /total cap would be exceeded/.test(rcap.err) && rcall.code === 1 && /per-call cap/.test(rcall.err) && rday.code === 1 && /per-day cap/.test(rday.err) && nCharges() === cC,
    `${rcap.err} | ${rcall.err} | ${rday.err}`);
  check('caps: nothing was signed (the channel state and the counters are unchanged)', JSON.stringify(st.channels) === before && BigInt(st.spent.total) === spent);
  const rok = pay('--max-total', String(spent + 1000n), URL);
  check('caps: a call within the cap goes through', rok.code === 0 && /charged 1000 /.test(rok.err), rok.err);

  // ---- policy: a payer without a channel opens one on-chain (--open-channel) and pays by voucher
  {
    const p2 = privateKeyToAccount(KEYS[2]);
    const w2 = createWalletClient({ account: p2, chain, transport: http(RPC) });
    await pub.waitForTransactionReceipt({ hash: await w2.writeContract({ address: USDC, abi: ERC20, functionName: 'mint', args: [p2.address, 100_000n], gas: 200000n }) });
    const nonce2 = () => pub.getTransactionCount({ address: p2.address });
    const STATE2 = join(scratch, 'payer2-state');
    const pay2 = (...args) => run(TOLLGATE, ['pay', '--private-key', KEYS[2], '--state', STATE2, '--open-channel', '50000', '--rpc-url', RPC, ...args]);
    const n2a = await nonce2();
    const o1 = pay2(URL);
    const n2b = await nonce2();
    const o2 = pay2(URL);
    const n2c = await nonce2();
    check('policy: the first call opens a channel on-chain (approve + deposit) and pays by voucher; the next pays by voucher only',
      o1.code === 0 && /charged 1000 \(channel 0x[0-9a-f]{64}, cumulative 1000\)/.test(o1.err) && n2b === n2a + 2 &&
      o2.code === 0 && /cumulative 2000\)/.test(o2.err) && n2c === n2b, `${o1.err} | ${o2.err} | nonces ${n2a} ${n2b} ${n2c}`);
  }

  // ---- status / list
  const ls = chan('list');
  const ss = chan('status', channelId);
  check('channel list/status show the channel with its deposit and charged total', ls.code === 0 && ss.code === 0 && ss.out.includes('deposit=5000000 charged=1270000'), ls.out + ss.out + ss.err);

  // ---- tollgate proxy: the official openai client, unmodified but for its base URL, pays per call
  {
    const pxPort = await freePort();
    const px = start('proxy', TOLLGATE, ['proxy', '--listen', `127.0.0.1:${pxPort}`, '--target', GW, '--private-key', KEYS[3], '--state', STATE]);
    await waitHttp(`http://127.0.0.1:${pxPort}/v1/models`, px);
    const spent0 = BigInt(stateJson().spent.total), n0p = await nonce();
    const chatRows0 = sql("SELECT count(*) AS n FROM charges WHERE route = 'chat'")[0].n;
    const openai = new OpenAI({ baseURL: `http://127.0.0.1:${pxPort}/v1`, apiKey: 'sk-not-needed', maxRetries: 0 });
    const chatPrice = (u) => (BigInt(u.prompt_tokens) * 2500000n + BigInt(u.completion_tokens) * 10000000n + 999999n) / 1000000n;
    let expected = 0n;
    const plain = await openai.chat.completions.create({ model: 'test-model', messages: [{ role: 'user', content: 'how much does a paid call cost' }], max_tokens: 7 });
    check('proxy: a plain chat completion through tollgate proxy answers (content and usage)', !!plain.choices?.[0]?.message?.content && plain.usage?.completion_tokens === 7, JSON.stringify(plain).slice(0, 300));
    expected += chatPrice(plain.usage);
    const t0 = Date.now();
    const stream = await openai.chat.completions.create({ model: 'test-model', messages: [{ role: 'user', content: 'stream me some words please' }], max_tokens: 6, stream: true, stream_options: { include_usage: true } },
      { headers: { 'X-Test-Chunk-Delay-Ms': '250' } });
    const arrivals = [];
    let text = '', usage = null;
    for await (const chunk of stream) {
      arrivals.push(Date.now() - t0);
      text += chunk.choices?.[0]?.delta?.content || '';
      if (chunk.usage) usage = chunk.usage;
    }
    check('proxy: a streamed chat completion arrives chunk by chunk (the first chunk long before the last: no whole-body buffering)',
      arrivals.length >= 6 && usage?.completion_tokens === 6 && text.length > 0 && arrivals[arrivals.length - 1] - arrivals[0] >= 1000, `chunks at ${arrivals.join(',')} ms, usage ${JSON.stringify(usage)}`);
    if (usage) expected += chatPrice(usage);
    // parallel calls on one channel through the proxy, streamed and not
    const par = await Promise.all(Array.from({ length: 16 }, (_, i) => i % 2
      ? openai.chat.completions.create({ model: 'test-model', messages: [{ role: 'user', content: `call ${i} in parallel` }], max_tokens: 3 }).then((r) => r.usage)
      : (async () => { let u = null; for await (const c of await openai.chat.completions.create({ model: 'test-model', messages: [{ role: 'user', content: `stream ${i}` }], max_tokens: 4, stream: true, stream_options: { include_usage: true } })) if (c.usage) u = c.usage; return u; })()));
    check('proxy: 16 parallel calls (half streamed) through the proxy all answer', par.every((u) => u && u.completion_tokens > 0), JSON.stringify(par));
    for (const u of par) if (u) expected += chatPrice(u);
    const rows = sql("SELECT hex(amount) AS a, scheme FROM charges WHERE route = 'chat'");
    const got = rows.reduce((t, r) => t + BigInt('0x' + r.a), 0n);
    check('proxy: the gateway charged each of the 18 chat calls by voucher, the sum equal to the prices of the usage delivered',
      rows.length - chatRows0 === 18 && rows.every((r) => r.scheme === 1) && got === expected, `rows +${rows.length - chatRows0}, charged ${got}, expected ${expected}`);
    await sleep(300);
    check('proxy: the payer counted exactly those charges (PAYMENT-RESPONSE and the : x402-charge stream trailer), and sent no transaction',
      BigInt(stateJson().spent.total) - spent0 === expected && (await nonce()) === n0p, `spent +${BigInt(stateJson().spent.total) - spent0} vs ${expected}`);
    const capped = await fetch(`http://127.0.0.1:${pxPort}/v1/models`);
    check('proxy: a free route passes through unpaid', capped.status === 200);
    // a stream the upstream cuts: the gateway charges nothing and cuts; the proxy passes the
    // failure on (a broken stream, or a 502 when it broke before the first byte), never a clean end
    const cutRows0 = sql("SELECT count(*) AS n FROM charges WHERE route = 'chat'")[0].n;
    let cutErr = null, cutChunks = 0;
    try {
      const st = await openai.chat.completions.create({ model: 'cut', messages: [{ role: 'user', content: 'this stream breaks' }], max_tokens: 8, stream: true, stream_options: { include_usage: true } });
      for await (const _ of st) cutChunks++;
    } catch (e) { cutErr = e; }
    await sleep(300);
    check('proxy: a stream the upstream cuts reaches the SDK as an error, never a clean end, and nothing is charged for it',
      !!cutErr && sql("SELECT count(*) AS n FROM charges WHERE route = 'chat'")[0].n === cutRows0, `chunks ${cutChunks} err ${cutErr?.message}`);
    px.kill('SIGTERM');
    for (let i = 0; i < 50 && !px.exited; i++) await sleep(100);
    check('proxy: stops cleanly on SIGTERM', px.exited && px.exited.code === 0, JSON.stringify(px.exited));
    // a cap reached in the proxy: refused locally with a clear OpenAI-style error, nothing signed
    const px2Port = await freePort();
    const before2 = JSON.stringify(stateJson().channels), nCh = nCharges();
    const px2 = start('proxy2', TOLLGATE, ['proxy', '--listen', `127.0.0.1:${px2Port}`, '--target', GW, '--private-key', KEYS[3], '--state', STATE, '--max-per-call', '5000']);
    await waitHttp(`http://127.0.0.1:${px2Port}/v1/models`, px2);
    const oa2 = new OpenAI({ baseURL: `http://127.0.0.1:${px2Port}/v1`, apiKey: 'sk-not-needed', maxRetries: 0 });
    let capErr = null;
    try { await oa2.chat.completions.create({ model: 'test-model', messages: [{ role: 'user', content: 'x' }] }); } catch (e) { capErr = e; }
    check('proxy: a call above --max-per-call is refused locally (402, per-call cap named), nothing signed or charged',
      capErr && capErr.status === 402 && /per-call cap/.test(capErr.message) && nCharges() === nCh && JSON.stringify(stateJson().channels) === before2, `${capErr?.status} ${capErr?.message}`);
    px2.kill('SIGTERM');
    for (let i = 0; i < 50 && !px2.exited; i++) await sleep(100);
  }

  // ---- settlement: tollgate settle claims the channels; the receiver holds exactly what was charged
  {
    const gwAddr = privateKeyToAccount(KEYS[1]).address;
    for (let t = 0; t < 150; t++) {
      const [p, l] = await Promise.all(['pending', 'latest'].map((b) => rpc(RPC, 'eth_getTransactionCount', [gwAddr, b])));
      if (p === l) break;
      await sleep(200);
    }
    const rows = sql('SELECT scheme, hex(amount) AS a FROM charges');
    const total = rows.reduce((t, r) => t + BigInt('0x' + r.a), 0n);
    const chTotal = rows.filter((r) => r.scheme === 1).reduce((t, r) => t + BigInt('0x' + r.a), 0n);
    const chan0 = await bal(CHANNELS);
    const se = run(TOLLGATE, ['settle', '--store', `sqlite:${storePath}`, '--deployment', depFile, '--rpc-url', RPC,
      '--keystore', keystore, '--password-file', pwFile, '--journal', `${storePath}.settle.txm`, '--confirmations', '1']);
    const recv = await bal(receiver);
    check('settle: after tollgate settle the receiver holds exactly every charge in the store (exact + channel), the channels gave exactly the channel charges',
      se.code === 0 && recv === total && chan0 - (await bal(CHANNELS)) === chTotal, `${se.code} ${se.err.trim().slice(-400)} receiver ${recv} total ${total} channel ${chTotal}`);
  }
}

main().then(() => { summary(); finish(failed ? 1 : 0); }, (e) => { console.log(`FAIL ${e?.stack || e}`); failed++; summary(); finish(1); });
