// Paid calls/s through tollgated: SQLite (one instance) beside PostgreSQL (one and three
// instances on one server), channel scheme, wrk with one voucher header per wrk process (a
// ceiling signed far ahead; three channels, each of its own payer), against anvil and the stand-in upstream's GET /v1/models.
//
//   node tests/bench/bench_paid_pg.mjs              # 64 connections, 10 s per case
//   CONNS=32 SECS=5 node tests/bench/bench_paid_pg.mjs
//
// Cases: sqlite x1; postgres x1; postgres x3 with every instance on the same 3 channels (hot
// channels: each call's hold and charge lock the same rows from three writers); postgres x3
// with each instance's calls on a channel of its own (what routing a payer to one instance
// gives). Each case reports calls/s (sum over the wrk processes), p50/p99 of the slowest wrk,
// non-2xx answers, and checks the store: charges recorded == 2xx answers counted by wrk (wrk
// may cut a few calls at the end: the difference is printed, not hidden). Load-independent
// figures from the instances' /metrics: the store writers' round trips to PostgreSQL per paid
// call (under the case's load, and for a lone caller, one call at a time, where no group commit
// shares them) and commits per paid call. Two more cases run the single instance with headroom
// leases off (`headroom=off`: a hold per call in the store, docs/STORE.md) and with the
// pipelined batch turned off (TG_STORE_PG_PIPELINE=0), for the comparison in the same run.
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync, readdirSync, existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { cpus } from 'node:os';
import { createPublicClient, createWalletClient, http, parseAbi, defineChain } from 'viem';
import { privateKeyToAccount, generatePrivateKey } from 'viem/accounts';
import { harness, root, BIN, KEYS, sleep, freePort, waitHttp, rpc, b64json, unb64json, randSalt, signVoucher } from '../integration/lib/harness.mjs';
import { startPg } from '../integration/lib/pg.mjs';

const h = harness('bench_paid_pg', 900000);
const CONNS = Number(process.env.CONNS || 64), SECS = Number(process.env.SECS || 10);
const TOLLGATE = h.binCopy('tollgate'), TOLLGATED = h.binCopy('tollgated'), UPSTREAM = h.binCopy('tools/tg_upstream');

const wrk = (url, conns, secs, hdr) => new Promise((resolve) => {
  const p = spawn('wrk', ['-t1', `-c${conns}`, `-d${secs}s`, '--latency', '-H', `payment-signature: ${hdr}`, url], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  p.stdout.on('data', (b) => { out += b; });
  p.stderr.on('data', (b) => { out += b; });
  p.on('exit', () => {
    const num = (re) => { const m = out.match(re); return m ? m[1] : null; };
    const ms = (v) => (v == null ? NaN : v.endsWith('us') ? parseFloat(v) / 1000 : v.endsWith('ms') ? parseFloat(v) : parseFloat(v) * 1000);
    const n = Number(num(/(\d+) requests in/) || 0), bad = Number(num(/Non-2xx or 3xx responses: (\d+)/) || 0);
    resolve({ rps: Number(num(/Requests\/sec:\s+([\d.]+)/) || 0), n, ok: n - bad, bad, p50: ms(num(/\n\s+50%\s+(\S+)/)), p99: ms(num(/\n\s+99%\s+(\S+)/)), out });
  });
});

async function main() {
  const pg = await startPg(h);
  if (pg.skip) { console.log(`SKIP bench_paid_pg: ${pg.skip}`); return; }
  const CH_ABI = JSON.parse(readFileSync(['contracts/out/TollgateChannels.sol/TollgateChannels.json', 'contracts/artifacts/TollgateChannels.json'].map((p) => join(root, p)).find(existsSync), 'utf8')).abi;
  const anvilPort = await freePort();
  const RPC = `http://127.0.0.1:${anvilPort}`;
  h.start('anvil', join(BIN, 'anvil'), ['--host', '127.0.0.1', '--port', String(anvilPort), '--block-time', '1', '--silent']);
  for (let i = 0; ; i++) { try { await rpc(RPC, 'eth_chainId'); break; } catch { if (i > 100) throw new Error('anvil'); await sleep(100); } }
  const depFile = join(h.scratch, 'deployment.json');
  if (h.run(TOLLGATE, ['deploy', '--rpc-url', RPC, '--out', depFile]).code !== 0) throw new Error('deploy');
  const deployment = JSON.parse(readFileSync(depFile, 'utf8'));
  const USDC = deployment.contracts.TestUSDC.address, CHANNELS = deployment.contracts.TollgateChannels.address;
  const ksDir = join(h.scratch, 'keys');
  mkdirSync(ksDir);
  const pwFile = join(h.scratch, 'password');
  writeFileSync(pwFile, 'bench\n');
  h.run(TOLLGATE, ['wallet', 'import', ksDir, 'gateway', '--private-key', KEYS[1], '--password-file', pwFile]);
  const keystore = join(ksDir, readdirSync(ksDir)[0]);
  const payers = [KEYS[2], KEYS[3], KEYS[4]].map((k) => privateKeyToAccount(k)); // a payer per channel: no shared totals row
  const receiver = privateKeyToAccount(generatePrivateKey()).address;
  const upPort = await freePort();
  const up = h.start('upstream', UPSTREAM, [String(upPort), '2']);
  await waitHttp(`http://127.0.0.1:${upPort}/v1/models`, up);

  const chain = defineChain({ id: 31337, name: 'anvil', nativeCurrency: { name: 'Ether', symbol: 'ETH', decimals: 18 }, rpcUrls: { default: { http: [RPC] } } });
  const pub = createPublicClient({ chain, transport: http(RPC), pollingInterval: 200 });
  const ERC20 = parseAbi(['function mint(address to, uint256 amount)', 'function approve(address spender, uint256 amount) returns (bool)']);
  const send = async (payer, req) => { const hash = await createWalletClient({ account: payer, chain, transport: http(RPC) }).writeContract({ gas: 400000n, ...req }); await pub.waitForTransactionReceipt({ hash }); };

  let n = 0;
  // The store writers' counters, summed over the instances (/metrics).
  const metrics = async (ports) => {
    const sum = { rt: 0, commits: 0 };
    for (const port of ports) {
      const t = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      const val = (k) => Number((t.match(new RegExp(`^${k} (\\S+)$`, 'm')) || [0, 0])[1]);
      sum.rt += val('tollgate_store_round_trips_total');
      sum.commits += val('tollgate_store_commits_total');
    }
    return sum;
  };
  const runCase = async (name, kind, instances, sameChannels, env = {}, storeOpts = '') => {
    const store = kind === 'sqlite' ? join(h.scratch, `case${++n}.db`) : pg.newdb();
    const ports = [], gws = [];
    for (let i = 0; i < instances; i++) {
      ports.push(await freePort());
      const dir = join(h.scratch, `state-${n}-${i}`);
      mkdirSync(dir, { recursive: true });
      const f = join(h.scratch, `case${n}-${i}.conf`);
      writeFileSync(f, [`listen 127.0.0.1:${ports[i]}`, 'workers 2', `upstream llm http://127.0.0.1:${upPort} timeout=30s`,
        'route paid  *    /paid/v1/*           upstream=llm price=flat strip_prefix=/paid', 'price flat call 0.000001', 'schemes channel',
        'chain_id 31337', `rpc_url ${RPC}`, `deployment ${depFile}`, `keystore ${keystore} password_file=${pwFile}`, `pay_to ${receiver}`,
        'asset decimals=6 name="USD Coin" version=2', 'channel withdraw_delay=15m', 'settle interval=1h min_amount=1000000.00 max_age=24h', 'access_log off',
        kind === 'sqlite' ? `store sqlite ${store}` : `store postgres "${store}" state_dir=${dir} instance=b${n}-${i}${storeOpts}`, ''].join('\n'));
      gws.push(h.start(`case${n}-gw${i}`, TOLLGATED, ['-c', f], env));
      await waitHttp(`http://127.0.0.1:${ports[i]}/healthz`, gws[i], 30000);
    }
    const GW = (i) => `http://127.0.0.1:${ports[i]}/paid/v1/models`;
    const r0 = await fetch(GW(0));
    await r0.text();
    const req = unb64json(r0.headers.get('payment-required')).accepts.find((a) => a.scheme === 'batch-settlement');
    const D = 10n ** 12n;
    const hdrs = [];
    for (let i = 0; i < 3; i++) {
      const payer = payers[i];
      const cfg = { payer: payer.address, payerAuthorizer: '0x0000000000000000000000000000000000000000', receiver, receiverAuthorizer: req.extra.receiverAuthorizer, token: USDC, withdrawDelay: 900, salt: randSalt() };
      await send(payer, { address: USDC, abi: ERC20, functionName: 'mint', args: [payer.address, D] });
      await send(payer, { address: USDC, abi: ERC20, functionName: 'approve', args: [CHANNELS, D] });
      await send(payer, { address: CHANNELS, abi: CH_ABI, functionName: 'deposit', args: [cfg, D] });
      const id = await pub.readContract({ address: CHANNELS, abi: CH_ABI, functionName: 'getChannelId', args: [cfg] });
      const sig = await signVoucher(payer, id, D, 31337, CHANNELS);
      hdrs.push(b64json({ x402Version: 2, resource: { url: GW(0) }, accepted: req, payload: { type: 'voucher', channelConfig: cfg, voucher: { channelId: id, maxClaimableAmount: String(D), signature: sig } } }));
    }
    // one wrk per (instance, channel); connections split evenly
    const jobs = [];
    if (instances === 1) for (let c = 0; c < 3; c++) jobs.push([0, c]);
    else if (sameChannels) for (let i = 0; i < 3; i++) for (let c = 0; c < 3; c++) jobs.push([i, c]);
    else for (let i = 0; i < 3; i++) jobs.push([i, i]);
    const per = Math.max(1, Math.floor(CONNS / jobs.length));
    await Promise.all(jobs.map(([i, c]) => wrk(GW(i), per, 2, hdrs[c]))); // warm-up
    const countCharges = () => (kind === 'sqlite'
      ? Number(h.run('sqlite3', [store, 'SELECT count(*) FROM charges']).out.trim())
      : Number(pg.psql(store, 'SELECT count(*) FROM charges')));
    await sleep(300);
    // A lone caller first (one connection, one call at a time): the round trips of one paid
    // call when no group commit shares them.
    let c0 = countCharges(), m0 = await metrics(ports);
    await wrk(GW(0), 1, 2, hdrs[0]);
    await sleep(300);
    let m1 = await metrics(ports);
    const lone = (m1.rt - m0.rt) / Math.max(1, countCharges() - c0);
    c0 = countCharges();
    m0 = await metrics(ports);
    const rs = await Promise.all(jobs.map(([i, c]) => wrk(GW(i), per, SECS, hdrs[c])));
    await sleep(500);
    const charged = countCharges() - c0;
    m1 = await metrics(ports);
    const ok = rs.reduce((a, r) => a + r.ok, 0), bad = rs.reduce((a, r) => a + r.bad, 0);
    const rps = rs.reduce((a, r) => a + r.rps, 0);
    const p50 = Math.max(...rs.map((r) => r.p50)), p99 = Math.max(...rs.map((r) => r.p99));
    const perCall = (x) => (kind === 'sqlite' ? '-' : (x / Math.max(1, charged)).toFixed(2));
    console.log(`| ${name} | ${Math.round(rps).toLocaleString('en-US')} | ${p50.toFixed(1)} ms | ${p99.toFixed(1)} ms | ${bad} | ${charged} / ${ok} | ${perCall(m1.rt - m0.rt)} | ${kind === 'sqlite' ? '-' : lone.toFixed(2)} | ${((m1.commits - m0.commits) / Math.max(1, charged)).toFixed(3)} |`);
    if (bad || Math.abs(charged - ok) > jobs.length * per) console.log(`# ${name}: ${bad} non-2xx, ${charged} charges for ${ok} 2xx answers: ${rs[0].out.slice(-600)}`);
    for (const g of gws) await h.stop(g);
  };
  console.log(`# bench_paid_pg: ${cpus().length} cores, wrk ${CONNS} connections in all, ${SECS} s per case, channel scheme, flat price, GET /paid/v1/models (tg_upstream x2), PostgreSQL ${pg.port} (fsync on, synchronous_commit on), ${new Date().toISOString()}`);
  console.log('| case | paid calls/s | p50 | p99 | non-2xx | charges recorded / 2xx answers | DB round trips per paid call | ... with one caller | commits per paid call |');
  console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|');
  await runCase('sqlite, 1 instance', 'sqlite', 1, true);
  await runCase('postgres, 1 instance', 'pg', 1, true);
  await runCase('postgres, 1 instance, a hold per call (headroom=off)', 'pg', 1, true, {}, ' headroom=off');
  await runCase('postgres, 1 instance, statement by statement (TG_STORE_PG_PIPELINE=0)', 'pg', 1, true, { TG_STORE_PG_PIPELINE: '0' });
  await runCase('postgres, 3 instances, same 3 channels', 'pg', 3, true);
  await runCase('postgres, 3 instances, a channel per instance', 'pg', 3, false);
  await pg.stop();
}

main().then(() => h.finish(0), (e) => { console.log(`FAIL ${e?.stack || e}`); h.finish(1); });
