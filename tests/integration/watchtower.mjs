// The settlement scheduler and watchtower of tollgated against anvil (docs/SETTLEMENT.md,
// "Scheduler and watchtower"): a payer who initiates a withdrawal on a channel with charges has
// everything charged claimed and swept long before the delay ends, and receives exactly the
// remainder after it; a channel whose charges approach its balance is claimed early; with
// `settle interval=2s` charges are claimed without any withdrawal. One PASS/FAIL line per
// check, then "N passed, N failed"; every process is killed on exit, failure and interruption.
import { readFileSync, writeFileSync, readdirSync, existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { createPublicClient, createWalletClient, http, parseAbi, defineChain } from 'viem';
import { privateKeyToAccount, generatePrivateKey } from 'viem/accounts';
import { harness, root, BIN, KEYS, sleep, freePort, waitHttp, rpc, b64json, unb64json, randSalt, signVoucher } from './lib/harness.mjs';

const h = harness('watchtower', 260000);
const { check, info } = h;
const TOLLGATE = h.binCopy('tollgate');
const TOLLGATED = h.binCopy('tollgated');
const UPSTREAM = h.binCopy('tools/tg_upstream');
const DELAY = 900; // channel withdraw_delay=15m

async function main() {
  for (const f of [TOLLGATE, TOLLGATED, UPSTREAM, join(BIN, 'anvil')]) {
    if (!existsSync(f)) { check(`setup: ${f} exists (run make -j2 unit; npm ci)`, false); return; }
  }
  const artPath = ['contracts/out/TollgateChannels.sol/TollgateChannels.json', 'contracts/artifacts/TollgateChannels.json'].map((p) => join(root, p)).find(existsSync);
  if (!check('setup: contract artifacts exist', !!artPath, 'build them with contracts/check.sh')) return;
  const CH_ABI = JSON.parse(readFileSync(artPath, 'utf8')).abi;

  // -- anvil, contracts, keys
  const anvilPort = await freePort();
  const RPC = `http://127.0.0.1:${anvilPort}`;
  const anvil = h.start('anvil', join(BIN, 'anvil'), ['--host', '127.0.0.1', '--port', String(anvilPort), '--block-time', '1', '--silent']);
  for (let i = 0; ; i++) {
    try { await rpc(RPC, 'eth_chainId'); break; } catch {
      if (anvil.exited || i > 100) throw new Error(`anvil did not start: ${anvil.logText.slice(-1000)}`);
      await sleep(100);
    }
  }
  const depFile = join(h.scratch, 'deployment.json');
  const dep = h.run(TOLLGATE, ['deploy', '--rpc-url', RPC, '--out', depFile]);
  if (!check('setup: contracts deployed with tollgate deploy', dep.code === 0 && existsSync(depFile), dep.err.trim())) return;
  const deployment = JSON.parse(readFileSync(depFile, 'utf8'));
  const USDC = deployment.contracts.TestUSDC.address;
  const CHANNELS = deployment.contracts.TollgateChannels.address;
  const ksDir = join(h.scratch, 'keys');
  mkdirSync(ksDir);
  const pwFile = join(h.scratch, 'password');
  writeFileSync(pwFile, 'wt-password-' + Math.random().toString(36).slice(2) + '\n');
  const imp = h.run(TOLLGATE, ['wallet', 'import', ksDir, 'gateway', '--private-key', KEYS[1], '--password-file', pwFile]);
  if (!check('setup: gateway keystore imported', imp.code === 0, imp.err.trim())) return;
  const keystore = join(ksDir, readdirSync(ksDir)[0]);
  const gatewayAcct = privateKeyToAccount(KEYS[1]);
  const payer = privateKeyToAccount(KEYS[3]);
  const payer2 = privateKeyToAccount(KEYS[4]);
  const receiver = privateKeyToAccount(generatePrivateKey()).address;

  // -- upstream and gateway (channel scheme only: the scheduler shares no nonces with `exact`)
  const upPort = await freePort();
  const upstream = h.start('upstream', UPSTREAM, [String(upPort), '2']);
  await waitHttp(`http://127.0.0.1:${upPort}/v1/models`, upstream);
  const gwPort = await freePort();
  const GW = `http://127.0.0.1:${gwPort}`;
  const storePath = join(h.scratch, 'store.db');
  const conf = join(h.scratch, 'tollgated.conf');
  const writeConf = (settle) => writeFileSync(conf, [
    `listen 127.0.0.1:${gwPort}`,
    'workers 2',
    `upstream llm http://127.0.0.1:${upPort} timeout=30s`,
    'route paid  *    /paid/v1/*           upstream=llm price=flat strip_prefix=/paid',
    'price flat call 0.001',
    'schemes channel',
    'chain_id 31337',
    `rpc_url ${RPC}`,
    `deployment ${depFile}`,
    `keystore ${keystore} password_file=${pwFile}`,
    `pay_to ${receiver}`,
    'asset decimals=6 name="USD Coin" version=2',
    `channel withdraw_delay=${DELAY / 60}m`,
    settle,
    `store sqlite ${storePath}`,
    '',
  ].join('\n'));
  // First the watchtower alone: the interval and the minimum would claim nothing for an hour.
  writeConf('settle interval=1h min_amount=1000.00 max_age=24h');
  const cc = h.run(TOLLGATED, ['--check-config', conf]);
  if (!check('setup: tollgated --check-config accepts the configuration', cc.code === 0, cc.err.trim())) return;
  let gw = null;
  const gwAll = [];
  const startGateway = async (n) => { gw = h.start(`tollgated-${n}`, TOLLGATED, ['-c', conf]); gwAll.push(gw); await waitHttp(`${GW}/healthz`, gw); };
  await startGateway(0);
  info(`setup done in ${h.elapsed()}: anvil ${RPC}, gateway ${GW}`);

  const chain = defineChain({ id: 31337, name: 'anvil', nativeCurrency: { name: 'Ether', symbol: 'ETH', decimals: 18 }, rpcUrls: { default: { http: [RPC] } } });
  const pub = createPublicClient({ chain, transport: http(RPC), pollingInterval: 200 });
  const ERC20 = parseAbi(['function balanceOf(address) view returns (uint256)', 'function mint(address to, uint256 amount)', 'function approve(address spender, uint256 amount) returns (bool)']);
  const bal = (a) => pub.readContract({ address: USDC, abi: ERC20, functionName: 'balanceOf', args: [a] });
  const state = async (id) => { const s = await pub.readContract({ address: CHANNELS, abi: CH_ABI, functionName: 'getChannelState', args: [id] }); return { balance: s.balance ?? s[0], claimed: s.totalClaimed ?? s[1] }; };
  const walletOf = (acct) => createWalletClient({ account: acct, chain, transport: http(RPC) });
  const send = async (acct, req) => {
    const hash = await walletOf(acct).writeContract({ gas: 400000n, ...req });
    const r = await pub.waitForTransactionReceipt({ hash, timeout: 30000 });
    if (r.status !== 'success') throw new Error(`${req.functionName} reverted`);
    return r;
  };
  const sql = (q) => {
    const r = h.run('sqlite3', ['-json', storePath, q]);
    if (r.code !== 0) throw new Error(`sqlite3: exit ${r.code} ${r.err}`);
    return r.out.trim() ? JSON.parse(r.out) : [];
  };
  const charged = (id) => sql(`SELECT hex(amount) AS a, settled FROM charges WHERE lower(hex(channel_id)) = '${id.slice(2).toLowerCase()}'`)
    .reduce((acc, r) => ({ sum: acc.sum + BigInt('0x' + r.a), n: acc.n + 1, settled: acc.settled + r.settled }), { sum: 0n, n: 0, settled: 0 });
  const until = async (fn, ms) => { const end = Date.now() + ms; for (;;) { const v = await fn(); if (v || Date.now() > end) return v; await sleep(250); } };

  // The route's terms, then a channel per case.
  const unpaid = await fetch(`${GW}/paid/v1/models`);
  await unpaid.text();
  const req = unb64json(unpaid.headers.get('payment-required') || 'e30=').accepts?.find((a) => a.scheme === 'batch-settlement');
  if (!check('setup: the gateway offers batch-settlement (receiverAuthorizer = gateway key)', unpaid.status === 402 && req?.extra?.receiverAuthorizer?.toLowerCase() === gatewayAcct.address.toLowerCase(), JSON.stringify(req))) return;
  const open = async (acct, deposit) => {
    const cfg = { payer: acct.address, payerAuthorizer: '0x0000000000000000000000000000000000000000', receiver, receiverAuthorizer: req.extra.receiverAuthorizer, token: USDC, withdrawDelay: DELAY, salt: randSalt() };
    await send(acct, { address: USDC, abi: ERC20, functionName: 'mint', args: [acct.address, deposit] });
    await send(acct, { address: USDC, abi: ERC20, functionName: 'approve', args: [CHANNELS, deposit] });
    await send(acct, { address: CHANNELS, abi: CH_ABI, functionName: 'deposit', args: [cfg, deposit] });
    const id = await pub.readContract({ address: CHANNELS, abi: CH_ABI, functionName: 'getChannelId', args: [cfg] });
    const sig = await signVoucher(acct, id, deposit, 31337, CHANNELS);
    const hdr = b64json({ x402Version: 2, resource: { url: `${GW}/paid/v1/models` }, accepted: req,
      payload: { type: 'voucher', channelConfig: cfg, voucher: { channelId: id, maxClaimableAmount: String(deposit), signature: sig } } });
    return { cfg, id, hdr };
  };
  const call = async (ch) => { const r = await fetch(`${GW}/paid/v1/models`, { headers: { 'payment-signature': ch.hdr } }); const t = await r.text(); return { status: r.status, text: t }; };
  const calls = async (ch, n) => { let ok = 0; for (let i = 0; i < n; i++) if ((await call(ch)).status === 200) ok++; return ok; };

  // ================= (a) the watchtower
  const DEPOSIT = 1_000_000n, N = 7;
  const w = await open(payer, DEPOSIT);
  const okW = await calls(w, N);
  const cW = charged(w.id);
  check(`a: ${N} paid calls on the channel, charged ${N} x 1000 in the store`, okW === N && cW.sum === BigInt(N) * 1000n && cW.n === N, `${okW} ok, ${cW.sum} in ${cW.n} rows`);
  await sleep(2500);
  check('a: without a withdrawal nothing is claimed (interval 1h, min_amount 1000.00)', (await state(w.id)).claimed === 0n);
  const payerBefore = await bal(payer.address);
  const wr = await send(payer, { address: CHANNELS, abi: CH_ABI, functionName: 'initiateWithdraw', args: [w.cfg, DEPOSIT] });
  const tWr = Date.now();
  const initTs = Number((await pub.getBlock({ blockNumber: wr.blockNumber })).timestamp);
  const finalizableAt = initTs + DELAY;
  const claimedW = await until(async () => (await state(w.id)).claimed === cW.sum, 30000);
  const claimMs = Date.now() - tWr;
  check('a: after initiateWithdraw the watchtower claims everything charged (on-chain totalClaimed == charged in the store)', claimedW, `claimed ${(await state(w.id)).claimed}, charged ${cW.sum}`);
  const logs = await pub.getContractEvents({ address: CHANNELS, abi: CH_ABI, eventName: 'Claimed', fromBlock: wr.blockNumber });
  const claimLog = logs.find((l) => (l.args.claims ?? '').toLowerCase().includes(w.id.slice(2).toLowerCase()));
  const claimTs = claimLog ? Number((await pub.getBlock({ blockNumber: claimLog.blockNumber })).timestamp) : NaN;
  check('a: the claim landed before the withdrawal delay ends', claimLog && claimTs < finalizableAt, `claim at ${claimTs}, finalizable at ${finalizableAt}`);
  info(`watchtower: claim mined ${claimMs} ms after the withdrawal's receipt, ${claimTs - initTs} s (chain time) after initiateWithdraw, ${finalizableAt - claimTs} s before the ${DELAY} s delay ends`);
  const swept = await until(async () => (await bal(receiver)) === cW.sum, 20000);
  check('a: the claimed amount is swept to the receiver (receiver balance == charged)', swept, `receiver ${await bal(receiver)}`);
  const settled = await until(async () => charged(w.id).settled === N, 10000);
  check('a: every charge of the channel is marked settled in the store', settled, JSON.stringify(charged(w.id), (k, v) => (typeof v === 'bigint' ? String(v) : v)));
  const refused = await call(w);
  check('a: a new call on the withdrawing channel is refused (402)', refused.status === 402, `${refused.status} ${refused.text.slice(0, 200)}`);
  // Chain time to just before the delay: still claimed, not yet finalizable.
  const latest = Number((await pub.getBlock()).timestamp);
  await rpc(RPC, 'evm_increaseTime', [finalizableAt - 5 - latest]);
  await rpc(RPC, 'evm_mine');
  const nearTs = Number((await pub.getBlock()).timestamp);
  let early = null;
  try { await pub.simulateContract({ account: payer, address: CHANNELS, abi: CH_ABI, functionName: 'finalizeWithdraw', args: [w.cfg] }); early = 'accepted'; } catch (e) { early = e.shortMessage || String(e); }
  check(`a: ${finalizableAt - nearTs} s before the delay ends: totalClaimed == charged, finalizeWithdraw not yet possible`,
    (await state(w.id)).claimed === cW.sum && early !== 'accepted', `claimed ${(await state(w.id)).claimed}; finalize: ${early}`);
  await rpc(RPC, 'evm_increaseTime', [10]);
  await rpc(RPC, 'evm_mine');
  await send(payer, { address: CHANNELS, abi: CH_ABI, functionName: 'finalizeWithdraw', args: [w.cfg] });
  const payerAfter = await bal(payer.address);
  const st = await state(w.id);
  check('a: after the delay the payer finalizes and receives exactly deposit minus charges',
    payerAfter - payerBefore === DEPOSIT - cW.sum && st.balance === cW.sum && st.claimed === cW.sum,
    `payer +${payerAfter - payerBefore}, expected ${DEPOSIT - cW.sum}; channel balance ${st.balance}, claimed ${st.claimed}`);
  check('a: receiver balance equals the charges exactly', (await bal(receiver)) === cW.sum);

  // ================= (b) early claim near the balance (90 %)
  const NB = 10_500n;
  const nb = await open(payer2, NB);
  const ok9 = await calls(nb, 9);
  await sleep(3000);
  check('b: 9 calls (9000 of 10500, 86 %): not claimed', ok9 === 9 && (await state(nb.id)).claimed === 0n, `${ok9} ok, claimed ${(await state(nb.id)).claimed}`);
  const ok10 = await calls(nb, 1);
  const tNb = Date.now();
  const nbClaimed = await until(async () => (await state(nb.id)).claimed === 10000n, 20000);
  check('b: the 10th call (10000 of 10500, 95 % > 90 %) is claimed early, without a withdrawal', ok10 === 1 && nbClaimed, `claimed ${(await state(nb.id)).claimed}`);
  info(`near balance: claimed ${Date.now() - tNb} ms after the call`);
  const recvB = await until(async () => (await bal(receiver)) === cW.sum + 10000n, 20000);
  check('b: and swept (receiver balance == all charges so far)', recvB, `receiver ${await bal(receiver)}`);

  // ================= (c) the scheduler: interval 2 s, no withdrawal
  await h.stop(gw);
  writeConf('settle interval=2s min_amount=0.000001 max_age=24h');
  await startGateway(1);
  const s = await open(payer, 100_000n);
  const okS = await calls(s, 5);
  const cS = charged(s.id);
  const tS = Date.now();
  const claimedS = await until(async () => (await state(s.id)).claimed === cS.sum, 20000);
  check('c: with settle interval=2s the 5 charges are claimed without any withdrawal', okS === 5 && cS.sum === 5000n && claimedS, `${okS} ok, charged ${cS.sum}, claimed ${(await state(s.id)).claimed}`);
  info(`scheduler: claimed ${Date.now() - tS} ms after the last charge`);
  const recvC = await until(async () => (await bal(receiver)) === cW.sum + 10000n + cS.sum, 20000);
  check('c: and swept: receiver balance == every charge in the store', recvC && (await bal(receiver)) === sql("SELECT hex(amount) AS a FROM charges").reduce((a, r) => a + BigInt('0x' + r.a), 0n), `receiver ${await bal(receiver)}`);
  const more = await calls(s, 2);
  const claimedS2 = await until(async () => (await state(s.id)).claimed === cS.sum + 2000n, 20000);
  check('c: later charges are claimed by a later run', more === 2 && claimedS2, `claimed ${(await state(s.id)).claimed}`);
  const logText = gw.logText;
  check('c: the runs are logged (settlement (interval): done ...)', /settlement \(interval\): done/.test(logText), logText.slice(-500));
  await h.stop(gw);
  check('c: tollgated stops cleanly on SIGTERM', gw.exited?.code === 0, JSON.stringify(gw.exited));

  // ================= (d) alerts: a deadline run that keeps failing, a claim past its margin
  writeConf('settle interval=1h min_amount=1000.00 max_age=24h margin=7m alert_after=2');
  await startGateway(2);
  const metric = async (name) => { const m = await (await fetch(`${GW}/metrics`)).text(); const l = m.split('\n').find((x) => x.startsWith(name + ' ')); return l ? Number(l.split(' ')[1]) : NaN; };
  const payer3 = privateKeyToAccount(generatePrivateKey());
  await rpc(RPC, 'anvil_setBalance', [payer3.address, '0x8ac7230489e80000']);
  const d = await open(payer3, DEPOSIT);
  const okD = await calls(d, 4);
  const cD = charged(d.id);
  const gwEth = await pub.getBalance({ address: gatewayAcct.address });
  await rpc(RPC, 'anvil_setBalance', [gatewayAcct.address, '0x0']); // the gateway cannot pay gas
  const wd = await send(payer3, { address: CHANNELS, abi: CH_ABI, functionName: 'initiateWithdraw', args: [d.cfg, DEPOSIT] });
  const dInit = Number((await pub.getBlock({ blockNumber: wd.blockNumber })).timestamp);
  const failAlert = await until(async () => /ALERT: watchtower: the claim of 1 channel\(s\) in withdrawal failed 2 times in a row/.test(gw.logText), 75000);
  check('d: with no ETH for gas, the watchtower\'s run fails, is retried, and after 2 failures in a row an ALERT is logged',
    okD === 4 && failAlert && (await state(d.id)).claimed === 0n, gw.logText.split('\n').filter((l) => /settlement|ALERT/.test(l)).slice(-4).join(' | '));
  check('d: /metrics shows the failures in a row and the alert', (await metric('tollgate_settlement_consecutive_failures')) >= 2 &&
    (await metric('tollgate_watchtower_alerts_total')) >= 1 && (await metric('tollgate_watchtower_channels')) === 1,
    `consecutive ${await metric('tollgate_settlement_consecutive_failures')}, alerts ${await metric('tollgate_watchtower_alerts_total')}, watched ${await metric('tollgate_watchtower_channels')}`);
  // Chain time to 6 minutes before the delay ends: inside the 7-minute margin, still owed.
  const nowTs = Number((await pub.getBlock()).timestamp);
  await rpc(RPC, 'evm_increaseTime', [dInit + DELAY - 360 - nowTs]);
  await rpc(RPC, 'evm_mine');
  const riskAlert = await until(async () => /ALERT: watchtower: channel 0x[0-9a-f]{64} still owes 4000 and its withdrawal can be finalized in \d+ s \(claim margin 420 s\)/.test(gw.logText), 15000);
  check('d: inside the margin with the claim still missing: an ALERT names the channel, what it owes and the time left; at_risk = 1',
    riskAlert && (await metric('tollgate_watchtower_channels_at_risk')) === 1, gw.logText.split('\n').filter((l) => /ALERT/.test(l)).slice(-2).join(' | '));
  await rpc(RPC, 'anvil_setBalance', [gatewayAcct.address, '0x' + gwEth.toString(16)]);
  const claimedD = await until(async () => (await state(d.id)).claimed === cD.sum, 30000);
  const recovered = await until(async () => (await metric('tollgate_settlement_consecutive_failures')) === 0 && (await metric('tollgate_watchtower_channels_at_risk')) === 0, 15000);
  check('d: with gas again the next retry claims everything charged before the delay ends; failures and at_risk back to 0',
    claimedD && cD.sum === 4000n && recovered, `claimed ${(await state(d.id)).claimed}, consecutive ${await metric('tollgate_settlement_consecutive_failures')}, at risk ${await metric('tollgate_watchtower_channels_at_risk')}`);
  await h.stop(gw);
  check('d: tollgated stops cleanly on SIGTERM', gw.exited?.code === 0, JSON.stringify(gw.exited));
  const san = gwAll.map((p) => p.logText).join('\n').match(/^.*(runtime error|AddressSanitizer|LeakSanitizer|ThreadSanitizer).*$/m);
  check('tollgated logs have no sanitizer reports', !san, san?.[0]);
  info(`total ${h.elapsed()}`);
}

main().then(() => { h.summary(); h.finish(h.failed ? 1 : 0); }, (e) => { console.log(`FAIL ${e?.stack || e}`); h.failed++; h.summary(); h.finish(1); });
