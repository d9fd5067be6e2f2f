// Integration test of the payer's on-chain commands against anvil, the contracts and tollgated:
// gasless channels (the payer signs an EIP-3009 deposit authorization, the gateway submits it),
// top-up by policy, `tollgate channel topup|withdraw|finalize`, and `tollgate pass ...`.
import { spawn, spawnSync } from 'node:child_process';
import { openSync, closeSync, mkdtempSync, writeFileSync, readFileSync, readdirSync, rmSync, existsSync, mkdirSync, cpSync } from 'node:fs';
import { createServer, connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createPublicClient, createWalletClient, http, parseAbi, defineChain } from 'viem';
import { privateKeyToAccount, generatePrivateKey } from 'viem/accounts';
import { KEYS, sleep, freePort, waitHttp, rpc } from './lib/harness.mjs';

const root = process.env.TG_ROOT || process.cwd();
const build = process.env.TG_BUILD || join(root, 'build');
const BIN = join(root, 'node_modules/.bin');
const scratch = mkdtempSync(join(tmpdir(), 'tg-onchain-'));
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
  if (code !== 0 || process.env.TG_ONCHAIN_KEEP) info(`scratch kept: ${scratch}`);
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
function run(cmd, args) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', env: { ...process.env, HOME: scratch, ETH_RPC_URL: '' }, maxBuffer: 1 << 26, timeout: 180000 });
  return { code: r.status, out: r.stdout || '', err: r.stderr || '' };
}


async function main() {
  for (const f of [TOLLGATE, TOLLGATED, UPSTREAM, join(BIN, 'anvil')]) {
    if (!existsSync(f)) { check(`setup: ${f} exists (run make -j2 unit; npm ci)`, false); return; }
  }
  const art = ['contracts/artifacts', 'contracts/out'].map((d) => join(root, d))
    .find((d) => existsSync(join(d, 'TollgateChannels.sol/TollgateChannels.json')) || existsSync(join(d, 'TollgateChannels.json')));
  if (!check('setup: contract artifacts present', !!art)) return;
  const abiOf = (n) => JSON.parse(readFileSync(existsSync(join(art, `${n}.json`)) ? join(art, `${n}.json`) : join(art, `${n}.sol/${n}.json`), 'utf8')).abi;
  const CH_ABI = abiOf('TollgateChannels');

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
  writeFileSync(pwFile, 'onchain-test-' + Math.random().toString(36).slice(2) + '\n');
  const imp = run(TOLLGATE, ['wallet', 'import', ksDir, 'gateway', '--private-key', KEYS[1], '--password-file', pwFile]);
  if (!check('setup: gateway keystore imported', imp.code === 0, imp.err.trim())) return;
  const keystore = join(ksDir, readdirSync(ksDir)[0]);
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
    'route paid  *    /paid/v1/*           upstream=llm price=flat strip_prefix=/paid',
    'route models GET /v1/models           upstream=llm',
    'route chat  POST /v1/chat/completions upstream=llm price=flat',
    'plan pro id=1 routes=chat quota=1000 unit=calls period=1h', 'passes session_ttl=1h nonce_ttl=5m',
    'price flat call 0.001',
    'schemes exact channel', 'chain_id 31337', `rpc_url ${RPC}`, `deployment ${depFile}`,
    `keystore ${keystore} password_file=${pwFile}`, `pay_to ${receiver}`,
    'asset decimals=6 name="USD Coin" version=2', 'exact_wait submission', 'exact_validity 120s',
    'channel withdraw_delay=15m min_deposit=0.01 gasless=yes', `store sqlite ${storePath}`, '',
  ].join('\n'));
  const gw = start('tollgated', TOLLGATED, ['-c', conf]);
  await waitHttp(`${GW}/healthz`, gw);
  info(`setup done in ${elapsed()}: anvil ${RPC}, gateway ${GW}`);

  const chain = defineChain({ id: 31337, name: 'anvil', nativeCurrency: { name: 'Ether', symbol: 'ETH', decimals: 18 }, rpcUrls: { default: { http: [RPC] } } });
  const pub = createPublicClient({ chain, transport: http(RPC), pollingInterval: 200 });
  const minter = createWalletClient({ account: privateKeyToAccount(KEYS[0]), chain, transport: http(RPC) });
  const ERC20 = parseAbi(['function balanceOf(address) view returns (uint256)', 'function mint(address to, uint256 amount)']);
  const bal = (a) => pub.readContract({ address: USDC, abi: ERC20, functionName: 'balanceOf', args: [a] });
  const mint = async (to, n) => pub.waitForTransactionReceipt({ hash: await minter.writeContract({ address: USDC, abi: ERC20, functionName: 'mint', args: [to, n], gas: 200000n }) });
  const nonceOf = (a) => pub.getTransactionCount({ address: a });
  const onchain = (id) => pub.readContract({ address: CHANNELS, abi: CH_ABI, functionName: 'channels', args: [id] });
  const sql = (q) => { const r = run('sqlite3', ['-json', storePath, q]); if (r.code !== 0) throw new Error(`sqlite3: ${r.err}`); return r.out.trim() ? JSON.parse(r.out) : []; };
  const gatewayIdle = async () => {
    const g = privateKeyToAccount(KEYS[1]).address;
    for (let t = 0; t < 150; t++) {
      const [p, l] = await Promise.all(['pending', 'latest'].map((b) => rpc(RPC, 'eth_getTransactionCount', [g, b])));
      if (p === l) return;
      await sleep(200);
    }
  };
  const URL = `${GW}/paid/v1/models`;

  // ---- gasless: a payer with tokens and no ether opens and tops up a channel through the gateway
  {
    const key = generatePrivateKey();
    const acct = privateKeyToAccount(key);
    await mint(acct.address, 1_000_000n);
    const STATE = join(scratch, 'gasless-state');
    const pay = (...a) => run(TOLLGATE, ['pay', '--private-key', key, '--state', STATE, '--no-exact', '--open-channel', '100000', '--gasless', ...a]);
    const ethBal = await pub.getBalance({ address: acct.address });
    const chBefore = await bal(CHANNELS);
    const r1 = pay('-v', URL);
    const m1 = /^charged (\d+) \(channel (0x[0-9a-f]{64}), cumulative (\d+)\)$/m.exec(r1.err);
    const st = JSON.parse(readFileSync(join(STATE, 'state.json'), 'utf8'));
    const id = m1 ? m1[2] : '0x' + '00'.repeat(32);
    const [b1] = await onchain(id);
    check('gasless: the first call of a payer without ether opens its channel: the gateway submitted depositWithAuthorization, the call paid by voucher',
      r1.code === 0 && m1 && m1[1] === '1000' && m1[3] === '1000' && b1 === 100000n && (await bal(CHANNELS)) - chBefore === 100000n && (await bal(acct.address)) === 900000n,
      `${r1.code} ${r1.err.split('\n').filter((l) => !l.startsWith('* P') && !l.startsWith('>')).join(' | ').slice(0, 1500)} onchain ${b1}`);
    check('gasless: the payer sent no transaction and spent no ether; the deposit is confirmed in its state',
      (await nonceOf(acct.address)) === 0 && (await pub.getBalance({ address: acct.address })) === ethBal && ethBal === 0n &&
      st.channels.length === 1 && !st.channels[0].pendingDeposit && st.channels[0].deposit === '100000', JSON.stringify(st.channels));
    const dep = sql(`SELECT count(*) AS n FROM channels WHERE lower(hex(id)) = '${id.slice(2)}'`)[0].n;
    check('gasless: the gateway recorded the channel for settlement', dep === 1, String(dep));
    // 99 more calls use up the deposit exactly; the 101st tops it up, gasless, by policy
    const r99 = pay('--count', '99', URL);
    const r101 = pay('--count', '2', URL);
    const [b2] = await onchain(id);
    const st2 = JSON.parse(readFileSync(join(STATE, 'state.json'), 'utf8'));
    check('gasless: a used-up channel is topped up by the deposit the next payment carries (policy), not paid with exact',
      r99.code === 0 && /calls 99 ok 99 failed 0 charged 99000$/m.test(r99.err) && r101.code === 0 && /calls 2 ok 2 failed 0 charged 2000$/m.test(r101.err) &&
      b2 === 200000n && (await bal(acct.address)) === 800000n && (await nonceOf(acct.address)) === 0 && st2.channels[0].deposit === '200000' && st2.channels[0].charged === '102000' && !st2.channels[0].pendingDeposit,
      `${r99.err.trim()} | ${r101.err.trim()} | onchain ${b2} ${JSON.stringify(st2.channels[0])}`);
    const exactRows = sql('SELECT count(*) AS n FROM charges WHERE scheme = 0')[0].n;
    check('gasless: all 102 calls were charged on the channel, none by exact', exactRows === 0 && sql(`SELECT count(*) AS n FROM charges WHERE lower(hex(channel_id)) = '${id.slice(2)}'`)[0].n === 102);
    // bad input: a deposit authorization for more than the payer holds is refused, nothing lost
    const poor = generatePrivateKey();
    await mint(privateKeyToAccount(poor).address, 5000n);
    const PSTATE = join(scratch, 'poor-state');
    const rp = run(TOLLGATE, ['pay', '--private-key', poor, '--state', PSTATE, '--no-exact', '--open-channel', '100000', '--gasless', URL]);
    const pst = JSON.parse(readFileSync(join(PSTATE, 'state.json'), 'utf8'));
    check('gasless: a deposit the payer cannot fund is refused by the gateway (insufficient_funds) before any transaction; the client forgets it',
      rp.code !== 0 && /insufficient_funds/.test(rp.err) && (await bal(privateKeyToAccount(poor).address)) === 5000n && pst.channels.every((c) => c.deposit === '0' && !c.pendingDeposit),
      `${rp.code} ${rp.err.trim()} ${JSON.stringify(pst.channels)}`);
    const rb = run(TOLLGATE, ['pay', '--private-key', poor, '--state', PSTATE, '--no-exact', '--open-channel', '1000', '--gasless', URL]);
    check('gasless: a deposit below the gateway\'s minDeposit is refused locally, saying so, nothing signed', rb.code !== 0 && /below the gateway's minDeposit 10000/.test(rb.err) &&
      JSON.parse(readFileSync(join(PSTATE, 'state.json'), 'utf8')).channels.every((c) => c.deposit === '0' && !c.pendingDeposit), rb.err.trim());
    // cooperative refund: the gateway returns what it has not charged, at once and gasless
    const pb = await bal(acct.address);
    const rf = run(TOLLGATE, ['channel', 'refund', '-v', id, URL, '--private-key', key, '--state', STATE]);
    const [b3, claimed3] = await onchain(id);
    const st3 = JSON.parse(readFileSync(join(STATE, 'state.json'), 'utf8'));
    check('channel refund: the gateway refunds balance minus what it charged (200000 - 102000) in a transaction of its own; its charges stay claimable',
      rf.code === 0 && /refunded 98000 \(transaction 0x[0-9a-f]{64}\)/.test(rf.err) && (await bal(acct.address)) - pb === 98000n && b3 === 102000n && claimed3 <= 102000n /* the watchtower may have claimed near the balance */ &&
      st3.channels[0].deposit === '102000' && (await nonceOf(acct.address)) === 0, `${rf.code} ${rf.err.trim().slice(-600)} onchain ${b3}/${claimed3} ${st3.channels[0].deposit}`);
    const rf2 = run(TOLLGATE, ['channel', 'refund', id, URL, '--private-key', key, '--state', STATE]);
    check('channel refund: a second refund has nothing to return (409 nothing_to_refund), nothing sent', rf2.code === 1 && /nothing to refund/.test(rf2.err) && (await onchain(id))[0] === 102000n, rf2.err.trim());
    const r103 = pay(URL);
    const [b4] = await onchain(id);
    check('channel refund: the channel reopens; the next call tops it up gasless and pays by voucher', r103.code === 0 && /cumulative 103000\)/.test(r103.err) && b4 === 202000n, `${r103.err.trim()} onchain ${b4}`);
    // a payer that goes away while its refund is being mined: the gateway carries on, unharmed
    const killed = spawn(TOLLGATE, ['channel', 'refund', id, URL, '--private-key', key, '--state', STATE], { stdio: 'ignore' });
    await sleep(150);
    killed.kill('SIGKILL');
    let b5 = 0n;
    for (let i = 0; i < 50; i++) { [b5] = await onchain(id); if (b5 === 103000n) break; await sleep(200); }
    const alive = await fetch(`${GW}/healthz`).then((r) => r.status, () => 0);
    check('channel refund: a payer that disconnects mid-refund still gets it; the gateway stays up', b5 === 103000n && alive === 200 && !gw.exited, `onchain ${b5} healthz ${alive}`);
    const poorId = JSON.parse(readFileSync(join(PSTATE, 'state.json'), 'utf8')).channels[0]?.id;
    const rf3 = poorId ? run(TOLLGATE, ['channel', 'refund', '-v', poorId, URL, '--private-key', poor, '--state', PSTATE]) : { code: -1, err: 'no channel' };
    check('channel refund: a channel never funded is refused by the gateway (channel_not_found)', rf3.code === 1 && /channel_not_found/.test(rf3.err), rf3.err.trim().slice(-400));
  }

  // ---- on-chain channel operations: open, top up, withdraw (refused before the delay), finalize
  {
    const key = KEYS[3];
    const acct = privateKeyToAccount(key);
    await mint(acct.address, 1_000_000n);
    const STATE = join(scratch, 'chain-state');
    const tg = (...a) => run(TOLLGATE, [...a, '--private-key', key, '--state', STATE]);
    const op = tg('channel', 'open', '--deposit', '50000', '--rpc-url', RPC, URL);
    const id = (op.out.match(/^(0x[0-9a-f]{64}) /) || [])[1];
    const p5 = run(TOLLGATE, ['pay', '--private-key', key, '--state', STATE, '--no-exact', '--count', '5', URL]);
    check('channel: opened on-chain, 5 calls paid by voucher', op.code === 0 && !!id && p5.code === 0 && /calls 5 ok 5 failed 0 charged 5000$/m.test(p5.err), `${op.err} ${p5.err}`);
    const b0 = await bal(acct.address), n0 = await nonceOf(acct.address);
    const tu = tg('channel', 'topup', '--deposit', '20000', '--rpc-url', RPC, id);
    const [cb1] = await onchain(id);
    check('channel topup: approve + deposit from the payer (two transactions), 20000 more on-chain and in the state',
      tu.code === 0 && cb1 === 70000n && (await nonceOf(acct.address)) === n0 + 2 && b0 - (await bal(acct.address)) === 20000n && /deposit=70000 /.test(tu.out), `${tu.code} ${tu.err} ${tu.out} onchain ${cb1}`);
    const wd = tg('channel', 'withdraw', '--rpc-url', RPC, id);
    const pw = await pub.readContract({ address: CHANNELS, abi: CH_ABI, functionName: 'pendingWithdrawals', args: [id] });
    check('channel withdraw: initiateWithdraw of everything unclaimed (70000); the state marks the channel withdrawing',
      wd.code === 0 && pw[0] === 70000n && /withdrawing=finalizable_at_\d+/.test(wd.out) && /finalizable at \d+/.test(wd.err), `${wd.code} ${wd.err} ${wd.out} ${pw}`);
    const after = run(TOLLGATE, ['pay', '--private-key', key, '--state', STATE, '--no-exact', URL]);
    check('channel withdraw: the client no longer pays on a withdrawing channel (refused locally, no scheme)', after.code !== 0 && /no payment scheme/.test(after.err), after.err.trim());
    const early = tg('channel', 'finalize', '--rpc-url', RPC, id);
    check('channel finalize: refused before the withdraw delay, saying when', early.code !== 0 && /not finalizable before \d+/.test(early.err), early.err.trim());
    // the gateway claims what it charged during the delay (what its watchtower does; here by hand)
    // The withdrawal also wakes the gateway's watchtower, whose run may hold the settlement lease:
    // a manual run is then refused ("holds the lease") and tried again once the lease is free.
    let se;
    for (let t = 0; t < 60; t++) {
      await gatewayIdle();
      se = run(TOLLGATE, ['settle', '--store', `sqlite:${storePath}`, '--deployment', depFile, '--rpc-url', RPC,
        '--keystore', keystore, '--password-file', pwFile, '--journal', `${storePath}.settle.txm`, '--confirmations', '1']);
      if (se.code === 0 || !/holds the lease/.test(se.err)) break;
      await sleep(500);
    }
    const [, claimedSe] = await onchain(id);
    check('settle during the delay: the gateway claims its charges (5000 claimed on-chain)', se.code === 0 && claimedSe === 5000n,
      `${se.code} claimed ${claimedSe} ${se.err.trim().slice(-300)}`);
    await rpc(RPC, 'evm_increaseTime', [15 * 60 + 5]);
    await rpc(RPC, 'evm_mine', []);
    const bb = await bal(acct.address);
    const fin = tg('channel', 'finalize', '--rpc-url', RPC, id);
    const [cb2, claimed2] = await onchain(id);
    check('channel finalize: after the delay the payer gets back exactly the deposit minus what was charged (70000 - 5000)',
      fin.code === 0 && /withdrawn 65000 back/.test(fin.err) && (await bal(acct.address)) - bb === 65000n && cb2 === 5000n && claimed2 === 5000n && /deposit=5000 /.test(fin.out) && !/withdrawing/.test(fin.out),
      `${fin.code} ${fin.err} ${fin.out} onchain ${cb2}/${claimed2}`);
  }

  // ---- access passes: tollgate pass buy | show | renew | delegate | revoke | transfer
  {
    const PASSES = deployment.contracts.TollgatePasses.address;
    const PA = abiOf('TollgatePasses');
    const owner = createWalletClient({ account: privateKeyToAccount(KEYS[0]), chain, transport: http(RPC) });
    await pub.waitForTransactionReceipt({ hash: await owner.writeContract({ address: PASSES, abi: PA, functionName: 'createPlan',
      args: [{ token: USDC, price: 1_000_000n, period: 3600, quota: 100n, maxSupply: 0, transferable: true, active: true }], gas: 500000n }) });
    const planId = await pub.readContract({ address: PASSES, abi: PA, functionName: 'planCount' });
    const A = privateKeyToAccount(KEYS[2]);
    const Bkey = generatePrivateKey();
    const B = privateKeyToAccount(Bkey).address;
    const chatCall = async (token) => {
      const r = await fetch(`${GW}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body: JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'hello pass' }], max_tokens: 3 }) });
      return { status: r.status, pass: r.headers.get('x-tollgate-pass') || '', text: await r.text() };
    };
    const D = privateKeyToAccount(generatePrivateKey()).address;
    await mint(A.address, 5_000_000n);
    const pass = (...a) => run(TOLLGATE, ['pass', ...a, '--plan', String(planId), '--deployment', depFile, '--rpc-url', RPC, '--private-key', KEYS[2]]);
    const ent = (u) => pub.readContract({ address: PASSES, abi: PA, functionName: 'entitled', args: [u, planId] });
    const exp = (u) => pub.readContract({ address: PASSES, abi: PA, functionName: 'expiresAt', args: [u, planId] });
    const a0 = await bal(A.address);
    const buy = pass('buy');
    const e1 = await exp(A.address);
    const blk = await pub.getBlock();
    const [ok1, , h1] = await ent(A.address);
    check('pass buy: approve + purchase from C; the pass is minted, valid one period from the purchase, paid the plan price',
      buy.code === 0 && ok1 && h1 === A.address && e1 > blk.timestamp && e1 <= blk.timestamp + 3600n && a0 - (await bal(A.address)) === 1_000_000n &&
      buy.out.includes(`expires_at=${e1} entitled=yes`), `${buy.code} ${buy.err} ${buy.out} expiry ${e1} block ${blk.timestamp}`);
    // the pass through the gateway: tollgate login (SIWE) gives a session token, a plain API key
    const loginA = run(TOLLGATE, ['login', '--private-key', KEYS[2], GW]);
    const tokA = loginA.out.trim();
    const useA = loginA.code === 0 ? await chatCall(tokA) : { status: 0, pass: '', text: loginA.err };
    check('pass through the gateway: the buyer signs in with tollgate login and its token is admitted on the pass (no payment)',
      useA.status === 200 && useA.pass.includes(A.address), `${loginA.code} ${loginA.err} ${useA.status} ${useA.pass} ${useA.text.slice(0, 200)}`);
    const show = run(TOLLGATE, ['pass', 'show', A.address, '--plan', String(planId), '--deployment', depFile, '--rpc-url', RPC]);
    check('pass show: the holder\'s expiry as the contract has it, and the plan\'s terms', show.code === 0 && show.out.includes(`holds=yes expires_at=${e1} entitled=yes`) &&
      /price=1000000 period=3600 quota=100 .*transferable=yes active=yes/.test(show.out), show.out + show.err);
    const ren = pass('renew', '--periods', '2');
    const e2 = await exp(A.address);
    check('pass renew: extends from the current expiry, without a gap (expiry + 2 periods exactly)', ren.code === 0 && e2 === e1 + 7200n && new RegExp(`renewed: expiry ${e1} -> ${e2}`).test(ren.err), `${ren.err} ${e1} ${e2}`);
    const del = pass('delegate', '--to', D, '--for', '30m');
    const [okD, untilD, hD] = await ent(D);
    check('pass delegate: the delegate is entitled through the holder until the delegation ends', del.code === 0 && okD && hD === A.address && untilD < e2 && /delegated_to=/.test(del.out), `${del.code} ${del.err} ${okD} ${untilD}`);
    const rev = pass('revoke');
    const [okD2] = await ent(D);
    check('pass revoke: the delegate is no longer entitled', rev.code === 0 && !okD2, `${rev.code} ${rev.err}`);
    const tr = pass('transfer', '--to', B);
    const [okA] = await ent(A.address);
    const [okB, , hB] = await ent(B);
    check('pass transfer: the pass and its expiry move to the new holder; the old holder is no longer entitled',
      tr.code === 0 && !okA && okB && hB === B && (await exp(B)) === e2 && (await exp(A.address)) === 0n && tr.out.includes(`holds=yes expires_at=${e2} entitled=yes`), `${tr.code} ${tr.err} ${tr.out}`);
    let lastA = null;
    for (let i = 0; i < 50; i++) { lastA = await chatCall(tokA); if (lastA.status === 403) break; await sleep(100); }
    check('pass through the gateway: after tollgate pass transfer the old holder\'s token is refused (403 with a reason)',
      lastA?.status === 403 && /no live pass/.test(lastA.text), `${lastA?.status} ${lastA?.text}`);
    const loginB = run(TOLLGATE, ['login', '--private-key', Bkey, GW]);
    const useB = loginB.code === 0 ? await chatCall(loginB.out.trim()) : { status: 0, pass: '', text: loginB.err };
    check('pass through the gateway: the new holder signs in and is admitted on the transferred pass',
      useB.status === 200 && useB.pass.includes(B), `${loginB.code} ${useB.status} ${useB.pass} ${useB.text.slice(0, 200)}`);
    const nA = await nonceOf(A.address);
    const again = pass('transfer', '--to', D);
    check('pass transfer: a key without the pass is refused with the contract\'s reason, nothing sent', again.code === 1 && /refuses: ERC1155InsufficientBalance/.test(again.err) && (await nonceOf(A.address)) === nA, again.err.trim());
    const bad = pass('renew');
    check('pass renew: nothing to renew is refused locally', bad.code === 1 && /no pass of plan/.test(bad.err), bad.err.trim());
  }
}

main().then(() => { summary(); finish(failed ? 1 : 0); }, (e) => { console.log(`FAIL ${e?.stack || e}`); failed++; summary(); finish(1); });
