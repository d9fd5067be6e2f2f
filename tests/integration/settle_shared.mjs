// A gateway that accepts `exact` and channels at once (docs/SETTLEMENT.md, "One key, one nonce
// sequence"): exact payments by the official x402 client keep arriving while the scheduler
// claims one channel near its balance and the watchtower claims another being withdrawn.
// Every transaction the gateway key sent is mined, its nonces are 0..n-1 with no gap, no
// duplicate and no filler, and every balance is exact. A `tollgate settle` by hand next to the
// running daemon is refused with a clear message. One PASS/FAIL line per check, then
// "N passed, N failed"; every process is killed on exit, failure and interruption.
import { readFileSync, writeFileSync, readdirSync, existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { createPublicClient, createWalletClient, http, parseAbi, defineChain } from 'viem';
import { privateKeyToAccount, generatePrivateKey } from 'viem/accounts';
import { wrapFetchWithPaymentFromConfig } from '@x402/fetch';
import { ExactEvmScheme } from '@x402/evm';
import { harness, startAnvil, root, BIN, KEYS, sleep, freePort, waitHttp, rpc, b64json, unb64json, randSalt, signVoucher } from './lib/harness.mjs';

const h = harness('settle-shared', 170000);
const { check, info } = h;
const TOLLGATE = h.binCopy('tollgate');
const TOLLGATED = h.binCopy('tollgated');
const UPSTREAM = h.binCopy('tools/tg_upstream');
const DELAY = 900;

async function main() {
  for (const f of [TOLLGATE, TOLLGATED, UPSTREAM, join(BIN, 'anvil')]) {
    if (!existsSync(f)) { check(`setup: ${f} exists (run make -j2 unit; npm ci)`, false); return; }
  }
  const artPath = ['contracts/out/TollgateChannels.sol/TollgateChannels.json', 'contracts/artifacts/TollgateChannels.json'].map((p) => join(root, p)).find(existsSync);
  if (!check('setup: contract artifacts exist', !!artPath, 'build them with contracts/check.sh')) return;
  const CH_ABI = JSON.parse(readFileSync(artPath, 'utf8')).abi;

  const { anvil, anvilPort, RPC } = await startAnvil(h);
  const depFile = join(h.scratch, 'deployment.json');
  const dep = h.run(TOLLGATE, ['deploy', '--rpc-url', RPC, '--out', depFile]);
  if (!check('setup: contracts deployed with tollgate deploy', dep.code === 0 && existsSync(depFile), dep.err.trim())) return;
  const deployment = JSON.parse(readFileSync(depFile, 'utf8'));
  const USDC = deployment.contracts.TestUSDC.address;
  const CHANNELS = deployment.contracts.TollgateChannels.address;
  const ksDir = join(h.scratch, 'keys');
  mkdirSync(ksDir);
  const pwFile = join(h.scratch, 'password');
  writeFileSync(pwFile, 'ss-password-' + Math.random().toString(36).slice(2) + '\n');
  const imp = h.run(TOLLGATE, ['wallet', 'import', ksDir, 'gateway', '--private-key', KEYS[1], '--password-file', pwFile]);
  if (!check('setup: gateway keystore imported', imp.code === 0, imp.err.trim())) return;
  const keystore = join(ksDir, readdirSync(ksDir)[0]);
  const gatewayAcct = privateKeyToAccount(KEYS[1]);
  const GWADDR = gatewayAcct.address.toLowerCase();
  const exactPayer = privateKeyToAccount(KEYS[2]);
  const payerA = privateKeyToAccount(KEYS[3]);
  const payerB = privateKeyToAccount(KEYS[4]);
  const receiver = privateKeyToAccount(generatePrivateKey()).address;

  const upPort = await freePort();
  const upstream = h.start('upstream', UPSTREAM, [String(upPort), '2']);
  await waitHttp(`http://127.0.0.1:${upPort}/v1/models`, upstream);
  const gwPort = await freePort();
  const GW = `http://127.0.0.1:${gwPort}`;
  const storePath = join(h.scratch, 'store.db');
  const conf = join(h.scratch, 'tollgated.conf');
  writeFileSync(conf, [
    `listen 127.0.0.1:${gwPort}`,
    'workers 2',
    `upstream llm http://127.0.0.1:${upPort} timeout=30s`,
    'route paid  *    /paid/v1/*           upstream=llm price=flat strip_prefix=/paid',
    'price flat call 0.001',
    'schemes exact channel',
    'chain_id 31337',
    `rpc_url ${RPC}`,
    `deployment ${depFile}`,
    `keystore ${keystore} password_file=${pwFile}`,
    `pay_to ${receiver}`,
    'asset decimals=6 name="USD Coin" version=2',
    'exact_wait submission',
    'exact_validity 120s',
    `channel withdraw_delay=${DELAY / 60}m`,
    // channel A is claimed near its balance, channel B by the watchtower once withdrawn; the
    // interval and the minimum alone would claim nothing during the test
    'settle interval=1h min_amount=1000.00 max_age=24h',
    `store sqlite ${storePath}`,
    '',
  ].join('\n'));
  const cc = h.run(TOLLGATED, ['--check-config', conf]);
  if (!check('setup: tollgated --check-config accepts the configuration', cc.code === 0, cc.err.trim())) return;
  const gw = h.start('tollgated', TOLLGATED, ['-c', conf]);
  await waitHttp(`${GW}/healthz`, gw);
  info(`setup done in ${h.elapsed()}: anvil ${RPC}, gateway ${GW}`);
  check('the scheduler runs although `exact` is accepted (no "scheduler and watchtower are off" warning)',
    !/watchtower are off/.test(gw.logText), gw.logText.slice(-400));

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

  const unpaid = await fetch(`${GW}/paid/v1/models`);
  await unpaid.text();
  const req = unb64json(unpaid.headers.get('payment-required') || 'e30=').accepts?.find((a) => a.scheme === 'batch-settlement');
  if (!check('setup: the gateway offers exact and batch-settlement', unpaid.status === 402 && !!req, JSON.stringify(req))) return;
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
  const call = async (ch) => { const r = await fetch(`${GW}/paid/v1/models`, { headers: { 'payment-signature': ch.hdr } }); await r.text(); return r.status; };
  const calls = async (ch, n) => { let ok = 0; for (let i = 0; i < n; i++) if ((await call(ch)) === 200) ok++; return ok; };

  // The channels first (their deposits are the payers' own transactions), then exact payments
  // in flight the whole time the two settlement runs happen.
  const DEPOSIT = 1_000_000n;
  const A = await open(payerA, 10_500n);
  const B = await open(payerB, DEPOSIT);
  await send(exactPayer, { address: USDC, abi: ERC20, functionName: 'mint', args: [exactPayer.address, 1_000_000n] });
  const exactPayer0 = await bal(exactPayer.address);
  const payFetch = wrapFetchWithPaymentFromConfig(fetch, { schemes: [{ network: 'eip155:*', client: new ExactEvmScheme(exactPayer) }], spendControls: false });
  let stopExact = false, exactOk = 0, exactBad = 0;
  const exactErrors = [];
  const worker = async () => {
    while (!stopExact && exactOk + exactBad < 600) {
      await sleep(150);
      try {
        const r = await payFetch(`${GW}/paid/v1/models`);
        await r.text();
        if (r.status === 200 && r.headers.get('payment-response')) exactOk++;
        else { exactBad++; exactErrors.push(r.status); }
      } catch (e) { exactBad++; exactErrors.push(String(e).slice(0, 120)); }
    }
  };
  const workers = [worker(), worker(), worker()];
  await sleep(1500);
  const okB = await calls(B, 3);
  const okA = await calls(A, 10);
  const cA = charged(A.id), cB = charged(B.id);
  check('channel calls are answered while exact payments are in flight (A: 10 x 1000, B: 3 x 1000 charged)',
    okA === 10 && okB === 3 && cA.sum === 10000n && cB.sum === 3000n, `A ${okA} ${cA.sum}, B ${okB} ${cB.sum}`);
  // A's 10th call passes 90 % of its 10,500 deposit: a settlement run claims it at once; B waits.
  const claimedA = await until(async () => (await state(A.id)).claimed === cA.sum, 30000);
  check('a settlement run (near balance) claims A (on-chain totalClaimed == charged) while exact calls go on; B waits',
    claimedA && (await state(B.id)).claimed === 0n, `A claimed ${(await state(A.id)).claimed}, B claimed ${(await state(B.id)).claimed}; exact so far ${exactOk}`);
  // B's withdrawal makes it a deadline: the watchtower claims it at once.
  await send(payerB, { address: CHANNELS, abi: CH_ABI, functionName: 'initiateWithdraw', args: [B.cfg, DEPOSIT] });
  const claimedB = await until(async () => (await state(B.id)).claimed === cB.sum, 30000);
  check('after initiateWithdraw the watchtower claims B while exact calls go on',
    claimedB, `B claimed ${(await state(B.id)).claimed}; exact so far ${exactOk}`);
  const swept = await until(async () => (await bal(receiver)) >= cA.sum + cB.sum, 30000);
  await sleep(3000); // a few more exact payments after the claims and sweeps
  stopExact = true;
  await Promise.all(workers);
  check(`every exact call was paid (${exactOk} x 1000, none refused)`, exactOk >= 10 && exactBad === 0, `${exactOk} ok, ${exactBad} bad: ${exactErrors.slice(0, 5).join(' | ')}`);
  info(`exact payments during the runs: ${exactOk}`);

  // Everything the key sent is mined: the pending nonce equals the mined one.
  const settledNonce = await until(async () => {
    const [l, p] = await Promise.all([pub.getTransactionCount({ address: gatewayAcct.address, blockTag: 'latest' }), pub.getTransactionCount({ address: gatewayAcct.address, blockTag: 'pending' })]);
    return l === p ? l : 0;
  }, 40000);
  const head = await pub.getBlockNumber();
  const txs = [];
  for (let b = 0n; b <= head; b++) {
    const blk = await pub.getBlock({ blockNumber: b, includeTransactions: true });
    for (const t of blk.transactions) if (t.from.toLowerCase() === GWADDR) txs.push(t);
  }
  const nonces = txs.map((t) => t.nonce).sort((x, y) => x - y);
  const contiguous = nonces.every((n, i) => n === i);
  check(`the gateway key's ${txs.length} transactions have nonces 0..${txs.length - 1}, no gap, no duplicate, and nothing is pending`,
    contiguous && settledNonce === txs.length && txs.length > 0, `nonces ${nonces.slice(0, 40).join(',')}; latest=pending=${settledNonce}`);
  const rcpts = await Promise.all(txs.map((t) => pub.getTransactionReceipt({ hash: t.hash })));
  check('every one of them succeeded (no revert)', rcpts.every((r) => r.status === 'success'), rcpts.filter((r) => r.status !== 'success').map((r) => r.transactionHash).join(','));
  const sel = (t) => t.input.slice(0, 10).toLowerCase();
  const exactTx = txs.filter((t) => t.to?.toLowerCase() === USDC.toLowerCase() && sel(t) === '0xe3ee160e');
  const chTx = txs.filter((t) => t.to?.toLowerCase() === CHANNELS.toLowerCase());
  const fillers = txs.filter((t) => t.to?.toLowerCase() === GWADDR);
  check(`the key sent exactly the ${exactOk} exact transfers and the settlement transactions (claims and sweeps), no filler`,
    exactTx.length === exactOk && chTx.length >= 4 && fillers.length === 0 && exactTx.length + chTx.length === txs.length,
    `${exactTx.length} transfers, ${chTx.length} settlement, ${fillers.length} fillers, ${txs.length} in all`);
  const exN = exactTx.map((t) => t.nonce), stN = chTx.map((t) => t.nonce);
  const interleaved = stN.some((n) => n > Math.min(...exN) && n < Math.max(...exN));
  check('settlement nonces sit between exact nonces: one sequence shared by both', interleaved, `exact ${Math.min(...exN)}..${Math.max(...exN)}, settlement ${stN.join(',')}`);
  info(`nonces: ${exN.length} exact, settlement at ${stN.join(',')}`);

  // Balances: the receiver got the exact payments and the swept claims, to the unit.
  const recv = await bal(receiver);
  check('swept: the receiver holds exactly exact payments + channel charges', swept && recv === BigInt(exactOk) * 1000n + cA.sum + cB.sum,
    `receiver ${recv}, expected ${BigInt(exactOk) * 1000n + cA.sum + cB.sum}`);
  check('the exact payer paid exactly 1000 per call', exactPayer0 - (await bal(exactPayer.address)) === BigInt(exactOk) * 1000n);
  const exRows = sql('SELECT count(*) AS n FROM charges WHERE scheme = 0')[0].n;
  check('the store has one exact charge per paid call', exRows === exactOk, `${exRows} rows`);
  const settledAll = await until(async () => charged(A.id).settled === 10 && charged(B.id).settled === 3, 10000);
  check('every channel charge is marked settled', settledAll);
  check('the daemon logged a near-balance run and a watchtower run', /settlement \(near balance\): done/.test(gw.logText) && /settlement \(watchtower: withdrawal\): done/.test(gw.logText), gw.logText.slice(-800));

  // Reconciliation: every exact payment listed with its transaction, per payer to the unit.
  const rep = h.run(TOLLGATE, ['report', '--store', `sqlite:${storePath}`, '--deployment', depFile, '--rpc-url', RPC, '--json']);
  let repOk = null;
  try { repOk = JSON.parse(rep.out); } catch { /* checked below */ }
  const exRowsSum = sql('SELECT hex(amount) AS a FROM charges WHERE scheme = 0').reduce((a, r) => a + BigInt('0x' + r.a), 0n);
  const exTx = new Set(exactTx.map((t) => t.hash.toLowerCase()));
  const rp = repOk?.payers?.find((p) => p.payer.toLowerCase() === exactPayer.address.toLowerCase());
  check('report --json lists every exact payment with the transaction the key sent, its store status and its receipt (success)',
    rep.code === 0 && repOk && repOk.exactPayments.length === exactOk && repOk.exactPayments.every((e) => e.amount === '1000' && exTx.has(e.txHash) &&
      ['submitted', 'mined', 'confirmed'].includes(e.status) && e.onchain === 'success' && e.payTo.toLowerCase() === receiver.toLowerCase()),
    `exit ${rep.code} ${rep.err.trim()} ${JSON.stringify(repOk?.exactPayments?.slice(0, 2))}`);
  check('report --json: the exact payer\'s totals equal its charge rows and its mined payments to the unit, no mismatch',
    rp && BigInt(rp.exactTotal) === exRowsSum && exRowsSum === BigInt(exactOk) * 1000n && rp.exactChargedRows === rp.exactTotal &&
      rp.exactCharges === exactOk && rp.exactPayments === exactOk && BigInt(rp.exactOnchain) === exRowsSum &&
      BigInt(rp.exactConfirmed) + BigInt(rp.exactPending) === exRowsSum && rp.exactFailed === '0' && repOk.mismatches === 0,
    JSON.stringify(rp));
  const csv = h.run(TOLLGATE, ['report', '--store', `sqlite:${storePath}`, '--csv']);
  const lines = csv.out.trim().split('\n');
  const exLines = lines.filter((l) => l.startsWith('exact,'));
  const pLine = lines.find((l) => l.startsWith('payer,') && l.toLowerCase().includes(exactPayer.address.toLowerCase()));
  check('report --csv: one exact line per payment (status, transaction) and the payer line with its exact figures',
    csv.code === 0 && exLines.length === exactOk && exLines.every((l) => /,(submitted|mined|confirmed),0x[0-9a-f]{64},/.test(l)) &&
      pLine?.split(',')[10] === String(exRowsSum) && pLine?.split(',')[11] === String(exactOk),
    `${exLines.length} lines; ${pLine}`);

  // A manual run next to the daemon: refused, with a message naming what holds the key.
  const man = h.run(TOLLGATE, ['settle', '--store', `sqlite:${storePath}`, '--deployment', depFile, '--rpc-url', RPC, '--keystore', keystore, '--password-file', pwFile]);
  check('tollgate settle next to the running daemon is refused (exit 1) with a message naming tollgated',
    man.code === 1 && /tollgated/.test(man.err), `exit ${man.code}: ${man.err.trim()}`);
  const after = await pub.getTransactionCount({ address: gatewayAcct.address, blockTag: 'pending' });
  check('and it sent nothing', after === settledNonce, `${after} vs ${settledNonce}`);

  // Receipt outcomes in the store (no --rpc-url): once mined and confirmed, every exact row
  // says `confirmed` (the chain thread writes it), and the report shows it from the store alone.
  const exStatus = () => sql('SELECT status, count(*) AS n FROM exact_payments GROUP BY status');
  const allConfirmed = await until(async () => { const g = exStatus(); return g.length === 1 && g[0].status === 3 && g[0].n === exactOk; }, 30000);
  check(`the store marks all ${exactOk} exact payments confirmed after their receipts`, allConfirmed, JSON.stringify(exStatus()));
  const rep2 = h.run(TOLLGATE, ['report', '--store', `sqlite:${storePath}`, '--json']);
  let rep2Ok = null;
  try { rep2Ok = JSON.parse(rep2.out); } catch { /* checked below */ }
  const rp2 = rep2Ok?.payers?.find((p) => p.payer.toLowerCase() === exactPayer.address.toLowerCase());
  check('report --json without --rpc-url: every exact payment confirmed, its amount in exactConfirmed, nothing pending',
    rep2.code === 0 && rep2Ok?.exactPayments?.length === exactOk && rep2Ok.exactPayments.every((e) => e.status === 'confirmed' && exTx.has(e.txHash)) &&
      rp2 && BigInt(rp2.exactConfirmed) === exRowsSum && rp2.exactPending === '0' && rp2.exactFailed === '0',
    `exit ${rep2.code} ${rep2.err.trim()} ${JSON.stringify(rp2)}`);
  const exUnsettled = sql('SELECT count(*) AS n FROM charges WHERE scheme = 0 AND settled = 0')[0].n;
  check('and every exact charge is marked settled with it', exUnsettled === 0, `${exUnsettled} unsettled`);

  // A transfer that reverts after the call was answered: mining paused, a payer holding exactly
  // one call's price pays (answered on submission), then moves its tokens away with a higher tip
  // before the block; the gateway's transfer reverts in it and the row says `failed`.
  const rev = privateKeyToAccount(generatePrivateKey());
  await rpc(RPC, 'anvil_setBalance', [rev.address, '0x56bc75e2d63100000']);
  await send(payerA, { address: USDC, abi: ERC20, functionName: 'mint', args: [rev.address, 1000n] });
  const revHeaders = []; // the payment header the client sent, to present it again below
  const spyFetch = (input, init) => {
    const hd = new Headers(init?.headers ?? (input instanceof Request ? input.headers : undefined));
    if (hd.get('payment-signature')) revHeaders.push(hd.get('payment-signature'));
    return fetch(input, init);
  };
  const revFetch = wrapFetchWithPaymentFromConfig(spyFetch, { schemes: [{ network: 'eip155:*', client: new ExactEvmScheme(rev) }], spendControls: false });
  await rpc(RPC, 'evm_setIntervalMining', [0]);
  let revPaid = false, drainOk = false;
  try {
    const r = await revFetch(`${GW}/paid/v1/models`);
    await r.text();
    revPaid = r.status === 200;
    const drain = await walletOf(rev).writeContract({ address: USDC, abi: parseAbi(['function transfer(address to, uint256 amount) returns (bool)']),
      functionName: 'transfer', args: [receiver, 1000n], gas: 100000n, maxPriorityFeePerGas: 50_000_000_000n, maxFeePerGas: 100_000_000_000n });
    await rpc(RPC, 'evm_mine', []);
    drainOk = (await pub.waitForTransactionReceipt({ hash: drain, timeout: 30000 })).status === 'success';
  } finally {
    await rpc(RPC, 'evm_setIntervalMining', [1]);
  }
  check('setup: the call was paid on submission and the payer moved its tokens away first', revPaid && drainOk, `paid ${revPaid}, drain ${drainOk}`);
  const revRow = () => sql(`SELECT status, hex(tx_hash) AS tx FROM exact_payments WHERE lower(hex(payer)) = '${rev.address.slice(2).toLowerCase()}'`);
  const revFailed = await until(async () => revRow()[0]?.status === 4, 30000);
  const revTx = revRow()[0]?.tx;
  const revRcpt = revTx ? await pub.getTransactionReceipt({ hash: '0x' + revTx.toLowerCase() }).catch(() => null) : null;
  check('the reverted transfer is recorded `failed` in the store, with its mined (reverted) transaction',
    revFailed && revRcpt?.status === 'reverted', `${JSON.stringify(revRow())} receipt ${revRcpt?.status}`);
  const rep3 = h.run(TOLLGATE, ['report', '--store', `sqlite:${storePath}`, '--json']);
  let rp3 = null;
  try { rp3 = JSON.parse(rep3.out).payers.find((p) => p.payer.toLowerCase() === rev.address.toLowerCase()); } catch { /* checked below */ }
  check('report --json without --rpc-url: that payer\'s 1000 is in exactFailed, nothing confirmed or pending',
    rp3 && rp3.exactFailed === '1000' && rp3.exactConfirmed === '0' && rp3.exactPending === '0', JSON.stringify(rp3));
  // Its call was served and charged: the authorization is not reopened by the `failed` row
  // (the payer holds the price again, so only that rule can refuse it).
  await send(payerA, { address: USDC, abi: ERC20, functionName: 'mint', args: [rev.address, 1000n] });
  const again = revHeaders.length ? await fetch(`${GW}/paid/v1/models`, { headers: { 'payment-signature': revHeaders[revHeaders.length - 1] } }) : null;
  const againBody = again ? await again.text() : '';
  check('that authorization presented again is refused (409), its charge kept once',
    again?.status === 409 && sql(`SELECT count(*) AS n FROM charges WHERE lower(hex(payer)) = '${rev.address.slice(2).toLowerCase()}'`)[0].n === 1,
    `${again?.status} ${againBody.slice(0, 160)} (${revHeaders.length} headers seen)`);

  await h.stop(gw);
  check('tollgated stops cleanly on SIGTERM', gw.exited?.code === 0, JSON.stringify(gw.exited));
  // exact_wait receipt: the call is answered from the receipt and the payment layer's
  // `submitted` commit (with the charge) comes after the answer, so the receipt writer may
  // find the row still `verified`: it waits for the commit, then marks the row `confirmed`.
  writeFileSync(conf, readFileSync(conf, 'utf8').replace('exact_wait submission', 'exact_wait receipt'));
  const gw2 = h.start('tollgated', TOLLGATED, ['-c', conf]);
  await waitHttp(`${GW}/healthz`, gw2);
  let rOk = 0;
  for (let i = 0; i < 3; i++) {
    const r = await payFetch(`${GW}/paid/v1/models`);
    await r.text();
    if (r.status === 200 && r.headers.get('payment-response')) rOk++;
  }
  const rcvRows = () => sql(`SELECT status, count(*) AS n FROM exact_payments WHERE lower(hex(payer)) = '${exactPayer.address.slice(2).toLowerCase()}' GROUP BY status`);
  const rcvDone = await until(async () => { const g = rcvRows(); return g.length === 1 && g[0].status === 3 && g[0].n === exactOk + 3; }, 30000);
  check('exact_wait receipt: 3 calls paid, and their rows end `confirmed` like the others (the writer waits for the charge commit)',
    rOk === 3 && rcvDone, `${rOk} paid; ${JSON.stringify(rcvRows())}; ${gw2.logText.match(/^.*exact: the outcome.*$/m)?.[0] || ''}`);
  await h.stop(gw2);
  check('tollgated (exact_wait receipt) stops cleanly on SIGTERM', gw2.exited?.code === 0, JSON.stringify(gw2.exited));
  const san = (gw.logText + gw2.logText).match(/^.*(runtime error|AddressSanitizer|LeakSanitizer|ThreadSanitizer).*$/m);
  check('tollgated logs have no sanitizer reports', !san, san?.[0]);
  info(`total ${h.elapsed()}`);
}

main().then(() => { h.summary(); h.finish(h.failed ? 1 : 0); }, (e) => { console.log(`FAIL ${e?.stack || e}`); h.failed++; h.summary(); h.finish(1); });
