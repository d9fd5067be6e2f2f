// `exact` payments at the node's speed (docs/PERFORMANCE.md, "The exact pipeline"): 256 calls
// with pre-signed EIP-3009 authorizations from two payers sent at once (plus the same
// authorization twice in the burst), while the official x402 client (@x402/fetch) pays from a
// third payer, so that well over 64 `exact` calls are in flight in one tollgated. Checks that
// every 2xx answer was paid exactly on-chain (payers' and receiver's balances to the unit),
// that the gateway key's nonces are 0..n-1 with no gap, no duplicate and no filler, that each
// answer's transaction is one the key sent and it succeeded, that the store has one charge per
// paid call, that the duplicate was refused, and that the chain thread batched: fewer JSON-RPC
// exchanges and store commits than calls. One PASS/FAIL line per check, then
// "N passed, N failed"; every process is killed on exit, failure and interruption.
import { readFileSync, writeFileSync, readdirSync, existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { createPublicClient, createWalletClient, http, parseAbi, defineChain } from 'viem';
import { privateKeyToAccount, generatePrivateKey } from 'viem/accounts';
import { wrapFetchWithPaymentFromConfig } from '@x402/fetch';
import { ExactEvmScheme } from '@x402/evm';
import { harness, startAnvil, BIN, KEYS, sleep, freePort, waitHttp, rpc, b64json, unb64json, randSalt } from './lib/harness.mjs';

const h = harness('exact-pipeline', 170000);
const { check, info } = h;
const TOLLGATE = h.binCopy('tollgate');
const TOLLGATED = h.binCopy('tollgated');
const UPSTREAM = h.binCopy('tools/tg_upstream');
const PRICE = 1000n; // "price flat call 0.001" with 6 decimals
const N_A = 160, N_B = 96; // pre-signed calls of payers A and B, all sent at once

async function main() {
  for (const f of [TOLLGATE, TOLLGATED, UPSTREAM, join(BIN, 'anvil')]) {
    if (!existsSync(f)) { check(`setup: ${f} exists (run make -j2 unit; npm ci)`, false); return; }
  }
  const { anvil, anvilPort, RPC } = await startAnvil(h);
  const depFile = join(h.scratch, 'deployment.json');
  const dep = h.run(TOLLGATE, ['deploy', '--rpc-url', RPC, '--out', depFile]);
  if (!check('setup: contracts deployed with tollgate deploy', dep.code === 0 && existsSync(depFile), dep.err.trim())) return;
  const USDC = JSON.parse(readFileSync(depFile, 'utf8')).contracts.TestUSDC.address;
  const ksDir = join(h.scratch, 'keys');
  mkdirSync(ksDir);
  const pwFile = join(h.scratch, 'password');
  writeFileSync(pwFile, 'ep-password-' + Math.random().toString(36).slice(2) + '\n');
  const imp = h.run(TOLLGATE, ['wallet', 'import', ksDir, 'gateway', '--private-key', KEYS[1], '--password-file', pwFile]);
  if (!check('setup: gateway keystore imported', imp.code === 0, imp.err.trim())) return;
  const keystore = join(ksDir, readdirSync(ksDir)[0]);
  const gatewayAcct = privateKeyToAccount(KEYS[1]);
  const GWADDR = gatewayAcct.address.toLowerCase();
  const payerA = privateKeyToAccount(KEYS[2]), payerB = privateKeyToAccount(KEYS[3]), payerC = privateKeyToAccount(KEYS[4]);
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
    'access_log off',
    `upstream llm http://127.0.0.1:${upPort} timeout=30s`,
    'route paid  *    /paid/v1/*           upstream=llm price=flat strip_prefix=/paid',
    'price flat call 0.001',
    'schemes exact',
    'chain_id 31337',
    `rpc_url ${RPC}`,
    `deployment ${depFile}`,
    `keystore ${keystore} password_file=${pwFile}`,
    `pay_to ${receiver}`,
    'asset decimals=6 name="USD Coin" version=2',
    'exact_wait submission',
    'exact_validity 300s',
    `store sqlite ${storePath}`,
  ].join('\n') + '\n');
  const gw = h.start('tollgated', TOLLGATED, ['-c', conf]);
  await waitHttp(`${GW}/healthz`, gw);

  const chain = defineChain({ id: 31337, name: 'anvil', nativeCurrency: { name: 'Ether', symbol: 'ETH', decimals: 18 }, rpcUrls: { default: { http: [RPC] } } });
  const pub = createPublicClient({ chain, transport: http(RPC), pollingInterval: 200 });
  const ERC20 = parseAbi(['function balanceOf(address) view returns (uint256)', 'function mint(address to, uint256 amount)']);
  const bal = (a) => pub.readContract({ address: USDC, abi: ERC20, functionName: 'balanceOf', args: [a] });
  const minter = createWalletClient({ account: privateKeyToAccount(KEYS[0]), chain, transport: http(RPC) });
  for (const p of [payerA, payerB, payerC]) {
    const hash = await minter.writeContract({ address: USDC, abi: ERC20, functionName: 'mint', args: [p.address, 10_000_000n], gas: 200000n });
    const r = await pub.waitForTransactionReceipt({ hash, timeout: 30000 });
    if (!check(`setup: payer ${p.address} funded`, r.status === 'success')) return;
  }
  const sql = (q) => {
    const r = h.run('sqlite3', ['-json', storePath, q]);
    if (r.code !== 0) throw new Error(`sqlite3: exit ${r.code} ${r.err}`);
    return r.out.trim() ? JSON.parse(r.out) : [];
  };
  const metrics = async (settle = false) => {
    if (settle) await sleep(700); // the chain thread publishes its client's counters every 500 ms
    const t = await (await fetch(`${GW}/metrics`)).text();
    const v = (name) => Number((t.match(new RegExp(`^${name} (\\S+)$`, 'm')) || [])[1] || 0);
    return { rpc: v('tollgate_rpc_calls_total'), commits: v('tollgate_store_commits_total'), charged: v('tollgate_pay_charged_calls_total'), inflight: v('tollgate_http_inflight') };
  };

  const unpaid = await fetch(`${GW}/paid/v1/models`);
  await unpaid.text();
  const exactReq = unb64json(unpaid.headers.get('payment-required') || 'e30=').accepts?.find((a) => a.scheme === 'exact');
  if (!check('setup: the gateway offers exact', unpaid.status === 402 && !!exactReq, JSON.stringify(exactReq))) return;
  info(`setup done in ${h.elapsed()}: anvil ${RPC}, gateway ${GW}`);

  // Pre-signed authorizations, as the official client would sign them.
  const now = Math.floor(Date.now() / 1000);
  const sign = async (payer) => {
    const nonce = randSalt();
    const authorization = { from: payer.address, to: receiver, value: String(PRICE), validAfter: '0', validBefore: String(now + 600), nonce };
    const signature = await payer.signTypedData({
      domain: { name: 'USD Coin', version: '2', chainId: 31337, verifyingContract: USDC },
      types: { TransferWithAuthorization: [{ name: 'from', type: 'address' }, { name: 'to', type: 'address' }, { name: 'value', type: 'uint256' },
        { name: 'validAfter', type: 'uint256' }, { name: 'validBefore', type: 'uint256' }, { name: 'nonce', type: 'bytes32' }] },
      primaryType: 'TransferWithAuthorization',
      message: { ...authorization, value: PRICE, validAfter: 0n, validBefore: BigInt(now + 600) },
    });
    return { payer: payer.address, hdr: b64json({ x402Version: 2, resource: { url: `${GW}/paid/v1/models` }, accepted: exactReq, payload: { authorization, signature } }) };
  };
  const calls = [];
  for (let i = 0; i < N_A; i++) calls.push(await sign(payerA));
  for (let i = 0; i < N_B; i++) calls.push(await sign(payerB));
  const dupIndex = calls.length;
  calls.push({ ...calls[7], dup: true }); // the same authorization twice in the burst

  const bal0 = { A: await bal(payerA.address), B: await bal(payerB.address), C: await bal(payerC.address), R: await bal(receiver) };
  const m0 = await metrics(true);

  // The burst: every pre-signed call at once, the official client beside it, /metrics sampled.
  let sampling = true, maxInflight = 0;
  const sampler = (async () => { while (sampling) { try { maxInflight = Math.max(maxInflight, (await metrics()).inflight); } catch { /* */ } await sleep(5); } })();
  const payFetch = wrapFetchWithPaymentFromConfig(fetch, { schemes: [{ network: 'eip155:*', client: new ExactEvmScheme(payerC) }], spendControls: false });
  const official = Promise.all(Array.from({ length: 8 }, async () => {
    const out = [];
    for (let k = 0; k < 4; k++) {
      try {
        const r = await payFetch(`${GW}/paid/v1/models`);
        await r.text();
        out.push({ status: r.status, pr: r.headers.get('payment-response') });
      } catch (e) { out.push({ status: String(e).slice(0, 120) }); }
    }
    return out;
  }));
  const t0 = Date.now();
  const answers = await Promise.all(calls.map(async (c) => {
    try {
      const r = await fetch(`${GW}/paid/v1/models`, { headers: { 'payment-signature': c.hdr } });
      const body = await r.text();
      return { ...c, status: r.status, pr: r.headers.get('payment-response'), body };
    } catch (e) { return { ...c, status: String(e).slice(0, 120) }; }
  }));
  const burstMs = Date.now() - t0;
  const offAnswers = (await official).flat();
  sampling = false;
  await sampler;
  const m1 = await metrics(true);

  const ok = answers.filter((a) => a.status === 200 && a.pr);
  const okC = offAnswers.filter((a) => a.status === 200 && a.pr);
  const dupPair = [answers[7], answers[dupIndex]];
  const dupOk = dupPair.filter((a) => a.status === 200).length, dup409 = dupPair.filter((a) => a.status === 409).length;
  check(`every distinct pre-signed authorization was answered 200 with PAYMENT-RESPONSE (${ok.length} of ${calls.length} incl. the duplicate; burst ${burstMs} ms)`,
    ok.length === calls.length - 1 && dupOk === 1 && dup409 === 1,
    answers.filter((a) => a.status !== 200).slice(0, 5).map((a) => `${a.status} ${String(a.body).slice(0, 160)}`).join(' | '));
  check('the same authorization sent twice in the burst: one 200, one 409 invalid_exact_evm_nonce_already_used',
    dupOk === 1 && dup409 === 1 && /nonce_already_used/.test(dupPair.find((a) => a.status === 409)?.body || ''), JSON.stringify(dupPair.map((a) => a.status)));
  check(`the official x402 client paid all its calls meanwhile (${okC.length} of ${offAnswers.length})`, okC.length === offAnswers.length && okC.length === 32,
    offAnswers.filter((a) => a.status !== 200).slice(0, 3).map((a) => a.status).join(' | '));
  check(`at least 64 exact calls were in flight in tollgated at once (max seen ${maxInflight})`, maxInflight >= 64);

  // Every transaction the key sent is mined; nonces 0..n-1; each answer names one of them.
  const until = async (fn, ms) => { const end = Date.now() + ms; for (;;) { const v = await fn(); if (v || Date.now() > end) return v; await sleep(250); } };
  const settledNonce = await until(async () => {
    const [l, p] = await Promise.all([pub.getTransactionCount({ address: gatewayAcct.address, blockTag: 'latest' }), pub.getTransactionCount({ address: gatewayAcct.address, blockTag: 'pending' })]);
    return l === p && l > 0 ? l : 0;
  }, 60000);
  const head = await pub.getBlockNumber();
  const txs = [];
  for (let b = 0n; b <= head; b++) {
    const blk = await pub.getBlock({ blockNumber: b, includeTransactions: true });
    for (const t of blk.transactions) if (t.from.toLowerCase() === GWADDR) txs.push(t);
  }
  const nonces = txs.map((t) => t.nonce).sort((x, y) => x - y);
  const paid = ok.length + okC.length;
  check(`the gateway key sent ${txs.length} transactions for ${paid} paid calls: nonces 0..${txs.length - 1}, no gap, no duplicate, nothing pending`,
    txs.length === paid && nonces.every((n, i) => n === i) && settledNonce === txs.length, `nonces ${nonces.slice(0, 40).join(',')}...; latest=pending=${settledNonce}`);
  const fillers = txs.filter((t) => t.to?.toLowerCase() === GWADDR);
  const transfers = txs.filter((t) => t.to?.toLowerCase() === USDC.toLowerCase() && t.input.slice(0, 10).toLowerCase() === '0xe3ee160e');
  check('every one is a transferWithAuthorization of the token, no filler', transfers.length === txs.length && fillers.length === 0,
    `${transfers.length} transfers, ${fillers.length} fillers`);
  const rcpts = await Promise.all(txs.map((t) => pub.getTransactionReceipt({ hash: t.hash })));
  check('every one succeeded (no revert)', rcpts.every((r) => r.status === 'success'), rcpts.filter((r) => r.status !== 'success').map((r) => r.transactionHash).join(','));
  const sent = new Set(txs.map((t) => t.hash.toLowerCase()));
  const answered = [...ok, ...okC].map((a) => unb64json(a.pr).transaction?.toLowerCase());
  check('each answer\'s PAYMENT-RESPONSE names a distinct transaction the key sent',
    answered.every((x) => sent.has(x)) && new Set(answered).size === answered.length, answered.filter((x) => !sent.has(x)).slice(0, 3).join(','));
  const gas = rcpts.map((r) => Number(r.gasUsed));
  info(`blocks holding the transfers: ${new Set(rcpts.map((r) => r.blockNumber)).size}; gas used per transfer ${Math.min(...gas)}..${Math.max(...gas)}, limit ${txs[0].gas}`);

  // Balances to the unit.
  const nA = ok.filter((a) => a.payer === payerA.address).length, nB = ok.filter((a) => a.payer === payerB.address).length;
  const bal1 = { A: await bal(payerA.address), B: await bal(payerB.address), C: await bal(payerC.address), R: await bal(receiver) };
  check(`payer A paid exactly ${nA} x ${PRICE}`, bal0.A - bal1.A === BigInt(nA) * PRICE, `${bal0.A - bal1.A}`);
  check(`payer B paid exactly ${nB} x ${PRICE}`, bal0.B - bal1.B === BigInt(nB) * PRICE, `${bal0.B - bal1.B}`);
  check(`payer C (official client) paid exactly ${okC.length} x ${PRICE}`, bal0.C - bal1.C === BigInt(okC.length) * PRICE, `${bal0.C - bal1.C}`);
  check(`the receiver got exactly ${paid} x ${PRICE}`, bal1.R - bal0.R === BigInt(paid) * PRICE, `${bal1.R - bal0.R}`);

  // The store: one exact charge per paid call, each authorization recorded with its transaction.
  const rows = sql('SELECT count(*) AS n, sum(CASE WHEN lower(hex(amount)) LIKE \'%3e8\' THEN 1 ELSE 0 END) AS k FROM charges WHERE scheme = 0')[0];
  check(`the store has one exact charge of ${PRICE} per paid call (${rows.n})`, rows.n === paid && rows.k === paid, JSON.stringify(rows));
  const ex = sql('SELECT count(*) AS n, count(DISTINCT tx_hash) AS t FROM exact_payments WHERE tx_hash IS NOT NULL')[0];
  check('every authorization is recorded with its own transaction hash', ex.n === paid && ex.t === paid, JSON.stringify(ex));

  // Batching: the serial path cost >= 2 JSON-RPC exchanges (admission read, estimate, send...)
  // and 2 store commits per call; the pipeline shares them among the calls of a turn.
  const charged = m1.charged - m0.charged, perRpc = (m1.rpc - m0.rpc) / charged, perCommit = (m1.commits - m0.commits) / charged;
  info(`per exact call: ${perRpc.toFixed(3)} JSON-RPC exchanges, ${perCommit.toFixed(3)} store commits (${charged} calls)`);
  check(`the chain thread batched: fewer JSON-RPC exchanges than calls (${perRpc.toFixed(3)} per call)`, charged === paid && perRpc < 1, `${m1.rpc - m0.rpc} for ${charged}`);
  check(`the store group-committed: fewer commits than calls (${perCommit.toFixed(3)} per call)`, perCommit < 1, `${m1.commits - m0.commits} for ${charged}`);

  // A payer funded for one call sends three at once. Admission subtracts the payer's
  // transfers still in flight from the node's balance, checked and reserved atomically: one
  // call is answered and paid, two are refused 402 insufficient_funds before anything is
  // sent or charged, no transfer reverts, and exactly one price moves. Once the first
  // transfer's outcome is known, the payer (funded again for one) is admitted again.
  {
    const payerD = privateKeyToAccount(generatePrivateKey()); // gasless: it only signs
    const hash = await minter.writeContract({ address: USDC, abi: ERC20, functionName: 'mint', args: [payerD.address, PRICE], gas: 200000n });
    await pub.waitForTransactionReceipt({ hash, timeout: 30000 });
    const d0 = await bal(payerD.address), r0 = await bal(receiver);
    const charges0 = sql('SELECT count(*) AS n FROM charges WHERE scheme = 0')[0].n;
    const gauge = async (name) => Number(((await (await fetch(`${GW}/metrics`)).text()).match(new RegExp(`^${name} (\\d+)$`, 'm')) || [])[1] ?? -1);
    const refused0 = await gauge('tollgate_pay_exact_funds_refused_total');
    const three = [];
    for (let i = 0; i < 3; i++) three.push(await sign(payerD));
    const res = await Promise.all(three.map(async (c) => { const r = await fetch(`${GW}/paid/v1/models`, { headers: { 'payment-signature': c.hdr } }); return { status: r.status, pr: r.headers.get('payment-response'), body: await r.text() }; }));
    const okD = res.filter((r) => r.status === 200 && r.pr), refused = res.filter((r) => r.status === 402);
    const refused1 = await gauge('tollgate_pay_exact_funds_refused_total');
    check(`/metrics counts the two refusals for funds (tollgate_pay_exact_funds_refused_total +${refused1 - refused0})`, refused1 - refused0 === 2);
    check(`three calls of a payer funded for one: one answered 200 and paid, two refused 402 insufficient_funds (${res.map((r) => r.status).join(',')})`,
      okD.length === 1 && refused.length === 2 && refused.every((r) => /"insufficient_funds"/.test(r.body)),
      res.map((r) => `${r.status} ${r.body.slice(0, 120)}`).join(' | '));
    const pending = async () => Number(((await (await fetch(`${GW}/metrics`)).text()).match(/^tollgate_txm_pending (\d+)$/m) || [])[1] ?? -1);
    const mined = await until(async () => (await pub.getTransactionCount({ address: gatewayAcct.address, blockTag: 'latest' })) === txs.length + 1, 30000);
    await sleep(700); // the chain thread publishes tollgate_txm_pending every 500 ms
    const idle = mined && await until(async () => (await pending()) === 0, 20000);
    const n = await pub.getTransactionCount({ address: gatewayAcct.address, blockTag: 'latest' });
    check(`the gateway key sent one transfer for them, not three (nonce ${n} after ${txs.length}), nothing left pending`, idle && n === txs.length + 1, `pending ${await pending()}`);
    const rs = okD.length ? await pub.getTransactionReceipt({ hash: unb64json(okD[0].pr).transaction }) : null;
    check('that transfer succeeded (no transfer reverted)', rs?.status === 'success', rs?.status);
    check('exactly one price moved from the payer to the receiver', d0 - (await bal(payerD.address)) === PRICE && (await bal(receiver)) - r0 === PRICE);
    const charges1 = sql('SELECT count(*) AS n FROM charges WHERE scheme = 0')[0].n;
    const exD = sql(`SELECT count(*) AS n FROM exact_payments WHERE lower(hex(payer)) = '${payerD.address.slice(2).toLowerCase()}'`)[0].n;
    check(`one charge recorded for them, and one exact payment row (refused ones leave nothing): ${charges1 - charges0} charge(s), ${exD} row(s)`, charges1 - charges0 === 1 && exD === 1);
    // Funded again for one: admitted once the first transfer's outcome is known (the
    // pending value ends with it), then refused again while its own transfer is in flight.
    const hash2 = await minter.writeContract({ address: USDC, abi: ERC20, functionName: 'mint', args: [payerD.address, PRICE], gas: 200000n });
    await pub.waitForTransactionReceipt({ hash: hash2, timeout: 30000 });
    const again = await sign(payerD);
    let st = 0;
    await until(async () => {
      const r = await fetch(`${GW}/paid/v1/models`, { headers: { 'payment-signature': again.hdr } });
      await r.text();
      st = r.status;
      return st === 200;
    }, 15000);
    check(`funded again for one call: admitted again once the first transfer was mined (${st})`, st === 200);
    const drained = await until(async () => (await gauge('tollgate_pay_exact_pending_transfers')) === 0 && (await gauge('tollgate_pay_exact_pending_payers')) === 0, 20000);
    check('every transfer\'s outcome ended its pending value: tollgate_pay_exact_pending_transfers and _payers back to 0, none lapsed',
      drained && (await gauge('tollgate_pay_exact_pending_lapsed_total')) === 0,
      `${await gauge('tollgate_pay_exact_pending_transfers')} transfers, ${await gauge('tollgate_pay_exact_pending_payers')} payers`);
  }

  await h.stop(gw);
  check('tollgated stops cleanly on SIGTERM', gw.exited?.code === 0, JSON.stringify(gw.exited));
  const san = gw.logText.match(/^.*(runtime error|AddressSanitizer|LeakSanitizer|ThreadSanitizer).*$/m);
  check('tollgated logs have no sanitizer reports', !san, san?.[0]);
  info(`total ${h.elapsed()}`);
}

main().then(() => { h.summary(); h.finish(h.failed ? 1 : 0); }, (e) => { console.log(`FAIL ${e?.stack || e}`); h.failed++; h.summary(); h.finish(1); });
