// The operations endpoints of tollgated against anvil (docs/OPERATIONS.md): the x402 facilitator
// endpoints (GET /supported, POST /verify, POST /settle: exact only, idempotent settlement), the
// admin API behind its bearer token (channels, charges, pending settlements), and /metrics and the
// access log after paid calls. One PASS/FAIL line per check, then "N passed, N failed"; every
// process is killed on exit, failure and interruption.
import { readFileSync, writeFileSync, readdirSync, existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { createPublicClient, createWalletClient, http, parseAbi, defineChain } from 'viem';
import { privateKeyToAccount, generatePrivateKey } from 'viem/accounts';
import { harness, root, BIN, KEYS, sleep, freePort, waitHttp, rpc, b64json, unb64json, randSalt, signVoucher, hangUp } from './lib/harness.mjs';

const h = harness('facilitator', 110000);
const { check, info } = h;
const TOLLGATE = h.binCopy('tollgate');
const TOLLGATED = h.binCopy('tollgated');
const UPSTREAM = h.binCopy('tools/tg_upstream');
const ADMIN_TOKEN = 'adm-' + generatePrivateKey().slice(2, 34);
const FAC_TOKEN = 'fac-' + generatePrivateKey().slice(2, 34);

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
  writeFileSync(pwFile, 'fac-password-' + Math.random().toString(36).slice(2) + '\n');
  const imp = h.run(TOLLGATE, ['wallet', 'import', ksDir, 'gateway', '--private-key', KEYS[1], '--password-file', pwFile]);
  if (!check('setup: gateway keystore imported', imp.code === 0, imp.err.trim())) return;
  const keystore = join(ksDir, readdirSync(ksDir)[0]);
  const gatewayAcct = privateKeyToAccount(KEYS[1]);
  const payer = privateKeyToAccount(KEYS[2]);       // pays through the facilitator and the gateway
  const chanPayer = privateKeyToAccount(KEYS[3]);   // one channel, for the admin API
  const broke = privateKeyToAccount(generatePrivateKey()); // no tokens
  const receiver = privateKeyToAccount(generatePrivateKey()).address;    // the gateway's pay_to
  const otherServer = privateKeyToAccount(generatePrivateKey()).address; // another x402 server

  // -- upstream and gateway
  const upPort = await freePort();
  const upstream = h.start('upstream', UPSTREAM, [String(upPort), '2']);
  await waitHttp(`http://127.0.0.1:${upPort}/v1/models`, upstream);
  const gwPort = await freePort();
  const GW = `http://127.0.0.1:${gwPort}`;
  const storePath = join(h.scratch, 'store.db');
  const accessLog = join(h.scratch, 'access.log');
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
    'channel withdraw_delay=15m',
    'admin prefix=/admin/ token_env=TG_FAC_ADMIN_TOKEN',
    'facilitator token_env=TG_FAC_TOKEN',
    `store sqlite ${storePath}`,
    `access_log ${accessLog}`,
    '',
  ].join('\n'));
  const cc = h.run(TOLLGATED, ['--check-config', conf], { env: { ...process.env, TG_FAC_ADMIN_TOKEN: ADMIN_TOKEN, TG_FAC_TOKEN: FAC_TOKEN } });
  if (!check('setup: tollgated --check-config accepts the configuration', cc.code === 0, cc.err.trim())) return;
  const gw = h.start('tollgated', TOLLGATED, ['-c', conf], { TG_FAC_ADMIN_TOKEN: ADMIN_TOKEN, TG_FAC_TOKEN: FAC_TOKEN });
  await waitHttp(`${GW}/healthz`, gw);
  info(`setup done in ${h.elapsed()}: anvil ${RPC}, gateway ${GW}`);

  const chain = defineChain({ id: 31337, name: 'anvil', nativeCurrency: { name: 'Ether', symbol: 'ETH', decimals: 18 }, rpcUrls: { default: { http: [RPC] } } });
  const pub = createPublicClient({ chain, transport: http(RPC), pollingInterval: 200 });
  const ERC20 = parseAbi(['function balanceOf(address) view returns (uint256)', 'function mint(address to, uint256 amount)', 'function approve(address spender, uint256 amount) returns (bool)']);
  const bal = (a) => pub.readContract({ address: USDC, abi: ERC20, functionName: 'balanceOf', args: [a] });
  const walletOf = (acct) => createWalletClient({ account: acct, chain, transport: http(RPC) });
  const send = async (acct, req) => {
    const hash = await walletOf(acct).writeContract({ gas: 400000n, ...req });
    const r = await pub.waitForTransactionReceipt({ hash, timeout: 30000 });
    if (r.status !== 'success') throw new Error(`${req.functionName} reverted`);
    return r;
  };
  await send(payer, { address: USDC, abi: ERC20, functionName: 'mint', args: [payer.address, 1_000_000n] });

  const now = () => Math.floor(Date.now() / 1000);
  const randNonce = () => randSalt();
  const signAuth = async ({ from = payer, signer = from, to = otherServer, value = 5000n, validAfter = 0, validBefore = now() + 600, nonce = randNonce() } = {}) => {
    const authorization = { from: from.address, to, value: String(value), validAfter: String(validAfter), validBefore: String(validBefore), nonce };
    const signature = await signer.signTypedData({
      domain: { name: 'USD Coin', version: '2', chainId: 31337, verifyingContract: USDC },
      types: { TransferWithAuthorization: [{ name: 'from', type: 'address' }, { name: 'to', type: 'address' }, { name: 'value', type: 'uint256' },
        { name: 'validAfter', type: 'uint256' }, { name: 'validBefore', type: 'uint256' }, { name: 'nonce', type: 'bytes32' }] },
      primaryType: 'TransferWithAuthorization',
      message: { ...authorization, value, validAfter: BigInt(validAfter), validBefore: BigInt(validBefore) },
    });
    return { authorization, signature };
  };
  // Another server's terms: it is paid (payTo), the gateway only verifies and submits.
  const reqs = (over = {}) => ({ scheme: 'exact', network: 'eip155:31337', amount: '5000', asset: USDC, payTo: otherServer,
    maxTimeoutSeconds: 60, extra: { name: 'USD Coin', version: '2' }, ...over });
  const body = (payload, requirements = reqs(), accepted = requirements) => ({ x402Version: 2,
    paymentPayload: { x402Version: 2, resource: { url: 'https://other.example/data' }, accepted, payload }, paymentRequirements: requirements });
  const post = async (path, b, token = FAC_TOKEN) => {
    const headers = { 'content-type': 'application/json' };
    if (token) headers.authorization = `Bearer ${token}`;
    const r = await fetch(`${GW}${path}`, { method: 'POST', headers, body: typeof b === 'string' ? b : JSON.stringify(b) });
    const t = await r.text();
    let j = null;
    try { j = JSON.parse(t); } catch { /* not JSON */ }
    return { status: r.status, j, t };
  };

  // ================= (a) GET /supported
  {
    const r = await fetch(`${GW}/supported`);
    const j = await r.json().catch(() => null);
    const k = j?.kinds;
    check('a: GET /supported: exactly one kind {x402Version 2, exact, eip155:31337}, no extensions, the gateway as eip155:* signer',
      r.status === 200 && Array.isArray(k) && k.length === 1 && k[0].x402Version === 2 && k[0].scheme === 'exact' && k[0].network === 'eip155:31337' &&
      Array.isArray(j.extensions) && j.extensions.length === 0 && Array.isArray(j.signers?.['eip155:*']) &&
      j.signers['eip155:*'].length === 1 && j.signers['eip155:*'][0] === gatewayAcct.address, JSON.stringify(j));
    const p = await post('/supported', {});
    check('a: POST /supported is 405', p.status === 405, `got ${p.status}`);
  }

  // ================= (b) POST /verify
  const good = await signAuth();
  {
    // `facilitator token_env=...`: /verify and /settle need the bearer token, /supported does not.
    const gwN = await pub.getTransactionCount({ address: gatewayAcct.address, blockTag: 'pending' });
    const none = await post('/settle', body(good), null);
    const wrong = await post('/settle', body(good), FAC_TOKEN.slice(0, -1) + (FAC_TOKEN.endsWith('0') ? '1' : '0'));
    const vnone = await post('/verify', body(good), null);
    await sleep(300);
    check('b: facilitator token: /settle and /verify without it or with a wrong one are 401 (WWW-Authenticate: Bearer), nothing sent',
      none.status === 401 && wrong.status === 401 && vnone.status === 401 && /bearer token/.test(none.j?.error || '') &&
      (await pub.getTransactionCount({ address: gatewayAcct.address, blockTag: 'pending' })) === gwN, `${none.status} ${wrong.status} ${vnone.status} ${none.t}`);
    const sup = await fetch(`${GW}/supported`);
    check('b: facilitator token: GET /supported stays open', sup.status === 200);
  }
  {
    const r = await post('/verify', body(good));
    check('b: /verify of a valid authorization: isValid true, payer, no invalidReason',
      r.status === 200 && r.j?.isValid === true && r.j?.payer === payer.address && !('invalidReason' in r.j), r.t);
  }
  const invalid = async (what, b, reason, status = 200) => {
    const r = await post('/verify', b);
    check(`b: /verify ${what}: isValid false, ${reason}`, r.status === status && r.j?.isValid === false && r.j?.invalidReason === reason, `${r.status} ${r.t}`);
  };
  await invalid('underpaying authorization (4000 of 5000)', body(await signAuth({ value: 4000n })), 'invalid_exact_evm_payload_authorization_value_mismatch');
  await invalid('authorization paying someone else', body(await signAuth({ to: receiver })), 'invalid_exact_evm_payload_recipient_mismatch');
  await invalid('forged signature (another key)', body(await signAuth({ signer: chanPayer })), 'invalid_exact_evm_payload_signature');
  await invalid('expired authorization', body(await signAuth({ validBefore: now() - 5 })), 'invalid_exact_evm_payload_authorization_valid_before');
  await invalid('authorization valid only in the future', body(await signAuth({ validAfter: now() + 3600, validBefore: now() + 7200 })), 'invalid_exact_evm_payload_authorization_valid_after');
  await invalid('payer without funds', body(await signAuth({ from: broke })), 'insufficient_funds');
  await invalid('another network', body(good, reqs({ network: 'eip155:1' })), 'invalid_network');
  await invalid('another scheme', body(good, reqs({ scheme: 'upto' })), 'unsupported_scheme');
  await invalid('an asset the gateway does not know', body(good, reqs({ asset: CHANNELS })), 'invalid_payment_requirements');
  await invalid('accepted terms that differ from the requirements', body(good, reqs(), reqs({ amount: '1' })), 'invalid_payment_requirements');
  await invalid('x402Version 1', { ...body(good), x402Version: 1 }, 'invalid_x402_version', 400);
  await invalid('malformed JSON', '{"x402Version":2,', 'invalid_payload', 400);

  // ================= (c) POST /settle: exactly once
  {
    const p0 = await bal(payer.address), o0 = await bal(otherServer);
    const gwNonce0 = await pub.getTransactionCount({ address: gatewayAcct.address, blockTag: 'pending' });
    const s1 = await post('/settle', body(good));
    const tx = s1.j?.transaction;
    check('c: /settle: success, a transaction hash, network eip155:31337, payer',
      s1.status === 200 && s1.j?.success === true && /^0x[0-9a-f]{64}$/.test(tx || '') && s1.j?.network === 'eip155:31337' && s1.j?.payer === payer.address, s1.t);
    const s2 = await post('/settle', body(good));
    check('c: /settle again with the same authorization: success with the same transaction', s2.j?.success === true && s2.j?.transaction === tx, s2.t);
    const rc = tx ? await pub.waitForTransactionReceipt({ hash: tx, timeout: 30000 }).catch((e) => ({ status: String(e) })) : { status: 'none' };
    check('c: the settlement transaction is mined successfully', rc.status === 'success', rc.status);
    const s3 = await post('/settle', body(good));
    check('c: a third /settle after it was mined: the same transaction again', s3.j?.success === true && s3.j?.transaction === tx, s3.t);
    await sleep(1500);
    const gwNonce1 = await pub.getTransactionCount({ address: gatewayAcct.address, blockTag: 'pending' });
    check('c: the gateway sent exactly one transaction for the three /settle calls', gwNonce1 - gwNonce0 === 1, `nonce ${gwNonce0} -> ${gwNonce1}`);
    const p1 = await bal(payer.address), o1 = await bal(otherServer);
    check('c: on-chain: the payer paid exactly 5000 once, the other server received exactly 5000',
      p0 - p1 === 5000n && o1 - o0 === 5000n, `payer -${p0 - p1}, other +${o1 - o0}`);
    const v = await post('/verify', body(good));
    check('c: /verify of the settled authorization: invalid_exact_evm_nonce_already_used', v.j?.isValid === false && v.j?.invalidReason === 'invalid_exact_evm_nonce_already_used', v.t);
    const bad = await post('/settle', body(await signAuth({ value: 4000n })));
    check('c: /settle of an invalid authorization: success false, errorReason, empty transaction, nothing sent',
      bad.status === 200 && bad.j?.success === false && bad.j?.errorReason === 'invalid_exact_evm_payload_authorization_value_mismatch' && bad.j?.transaction === '' &&
      (await pub.getTransactionCount({ address: gatewayAcct.address, blockTag: 'pending' })) === gwNonce1, bad.t);
    const poor = await post('/settle', body(await signAuth({ from: broke })));
    check('c: /settle for a payer without funds: insufficient_funds', poor.j?.success === false && poor.j?.errorReason === 'insufficient_funds', poor.t);
    // EIP-3009 nonces are per authorizer: another payer's authorization with the same nonce is
    // its own payment (exact_payments is keyed by (token, payer, nonce)).
    const twin = privateKeyToAccount(generatePrivateKey());
    await send(payer, { address: USDC, abi: ERC20, functionName: 'mint', args: [twin.address, 5000n] });
    const same = await signAuth({ from: twin, nonce: good.authorization.nonce });
    const t1 = await post('/settle', body(same));
    const rt = t1.j?.transaction ? await pub.waitForTransactionReceipt({ hash: t1.j.transaction, timeout: 30000 }).catch((e) => ({ status: String(e) })) : { status: 'none' };
    check('c: another payer\'s authorization with the same nonce settles as its own payment (its own transaction, mined, 5000 moved)',
      t1.j?.success === true && t1.j?.transaction !== tx && rt.status === 'success' && (await bal(twin.address)) === 0n, t1.t);
  }

  // ================= (d) paid calls through the gateway (exact and a channel), then the admin API
  const unpaid = await fetch(`${GW}/paid/v1/models`);
  await unpaid.text();
  const accepts = unb64json(unpaid.headers.get('payment-required') || 'e30=').accepts || [];
  const exactReq = accepts.find((a) => a.scheme === 'exact'), chanReq = accepts.find((a) => a.scheme === 'batch-settlement');
  if (!check('d: the route offers exact and batch-settlement', unpaid.status === 402 && !!exactReq && !!chanReq, JSON.stringify(accepts))) return;
  const N_EXACT = 2;
  for (let i = 0; i < N_EXACT; i++) {
    const p = await signAuth({ to: receiver, value: 1000n });
    const r = await fetch(`${GW}/paid/v1/models`, { headers: { 'payment-signature': b64json({ x402Version: 2, resource: { url: `${GW}/paid/v1/models` }, accepted: exactReq, payload: p }) } });
    await r.text();
    check(`d: exact paid call ${i + 1} through the gateway: 200`, r.status === 200, `got ${r.status}`);
  }
  const DEPOSIT = 100_000n, N_CHAN = 3;
  const cfg = { payer: chanPayer.address, payerAuthorizer: '0x0000000000000000000000000000000000000000', receiver, receiverAuthorizer: chanReq.extra.receiverAuthorizer, token: USDC, withdrawDelay: 900, salt: randSalt() };
  await send(chanPayer, { address: USDC, abi: ERC20, functionName: 'mint', args: [chanPayer.address, DEPOSIT] });
  await send(chanPayer, { address: USDC, abi: ERC20, functionName: 'approve', args: [CHANNELS, DEPOSIT] });
  await send(chanPayer, { address: CHANNELS, abi: CH_ABI, functionName: 'deposit', args: [cfg, DEPOSIT] });
  const chId = await pub.readContract({ address: CHANNELS, abi: CH_ABI, functionName: 'getChannelId', args: [cfg] });
  const vsig = await signVoucher(chanPayer, chId, DEPOSIT, 31337, CHANNELS);
  const chHdr = b64json({ x402Version: 2, resource: { url: `${GW}/paid/v1/models` }, accepted: chanReq,
    payload: { type: 'voucher', channelConfig: cfg, voucher: { channelId: chId, maxClaimableAmount: String(DEPOSIT), signature: vsig } } });
  let okChan = 0;
  for (let i = 0; i < N_CHAN; i++) {
    const r = await fetch(`${GW}/paid/v1/models`, { headers: { 'payment-signature': chHdr } });
    await r.text();
    if (r.status === 200) okChan++;
  }
  check(`d: ${N_CHAN} channel calls through the gateway: 200`, okChan === N_CHAN, `${okChan} ok`);

  const admin = async (path, token = ADMIN_TOKEN) => {
    const r = await fetch(`${GW}/admin/${path}`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
    const t = await r.text();
    let j = null;
    try { j = JSON.parse(t); } catch { /* */ }
    return { status: r.status, j, t, www: r.headers.get('www-authenticate') };
  };
  {
    const a = await admin('channels', null);
    check('e: admin without a token: 401 with WWW-Authenticate: Bearer', a.status === 401 && a.www === 'Bearer', `${a.status} ${a.www}`);
    const b = await admin('channels', ADMIN_TOKEN.slice(0, -1) + (ADMIN_TOKEN.endsWith('0') ? '1' : '0'));
    check('e: admin with a wrong token (same length): 401', b.status === 401, `got ${b.status}`);
    const c = await admin('channels', ADMIN_TOKEN + 'x');
    check('e: admin with a longer token: 401', c.status === 401, `got ${c.status}`);
    const nf = await admin('nope');
    check('e: admin unknown path with the token: 404', nf.status === 404, `got ${nf.status}`);
    const ch = await admin('channels');
    const row = ch.j?.channels?.find((x) => x.id === chId.toLowerCase());
    check('e: GET /admin/channels lists the channel: payer, balance, claimed 0, charged 3000, ceiling, open',
      ch.status === 200 && !!row && row.payer === chanPayer.address && row.balance === String(DEPOSIT) && row.claimed === '0' &&
      row.charged === String(BigInt(N_CHAN) * 1000n) && row.ceiling === String(DEPOSIT) && row.status === 'open', ch.t);
    const cp = await admin(`charges?payer=${payer.address}`);
    const ex = cp.j?.charges || [];
    check(`e: GET /admin/charges?payer=: the ${N_EXACT} exact charges of 1000 (the facilitator's settlement is not a charge)`,
      cp.status === 200 && ex.length === N_EXACT && ex.every((x) => x.scheme === 'exact' && x.amount === '1000' && x.payer === payer.address && x.route === 'paid'), cp.t);
    const cc1 = await admin(`charges?channel=${chId}&limit=2`);
    const page1 = cc1.j?.charges || [];
    const cc2 = await admin(`charges?channel=${chId}&limit=2&after=${cc1.j?.next_after}`);
    const page2 = cc2.j?.charges || [];
    check('e: GET /admin/charges?channel=&limit=2 pages through the 3 channel charges (after=next_after)',
      page1.length === 2 && page2.length === 1 && cc2.j?.next_after === null && page2[0].id > page1[1].id &&
      [...page1, ...page2].every((x) => x.channel === chId.toLowerCase() && x.amount === '1000'), `${cc1.t} ${cc2.t}`);
    const bad = await admin('charges');
    check('e: GET /admin/charges without channel or payer: 400', bad.status === 400, `got ${bad.status}`);
    const bad2 = await admin(`charges?payer=${payer.address}&limit=0`);
    check('e: GET /admin/charges with limit=0: 400', bad2.status === 400, `got ${bad2.status}`);
    const st = await admin('settlements');
    const pend = st.j?.pending?.find((x) => x.channel === chId.toLowerCase());
    check('e: GET /admin/settlements: the channel is pending 3000 (charged 3000, claimed 0), total_pending 3000',
      st.status === 200 && !!pend && pend.pending === '3000' && pend.charged === '3000' && pend.claimed === '0' && st.j.total_pending === '3000', st.t);
  }

  // ================= (f) /metrics and the access log
  {
    const m = await (await fetch(`${GW}/metrics`)).text();
    const val = (name) => { const line = m.split('\n').find((l) => l.startsWith(name + ' ')); return line ? line.slice(name.length + 1) : null; };
    check(`f: /metrics: tollgate_charges_total exact ${N_EXACT}, channel ${N_CHAN}`,
      val('tollgate_charges_total{scheme="exact"}') === String(N_EXACT) && val('tollgate_charges_total{scheme="channel"}') === String(N_CHAN),
      m.split('\n').filter((l) => l.startsWith('tollgate_charges_total')).join(' | '));
    check('f: /metrics: tollgate_charged_base_units_total exact 2000, channel 3000',
      val('tollgate_charged_base_units_total{scheme="exact"}') === '2000' && val('tollgate_charged_base_units_total{scheme="channel"}') === '3000');
    check('f: /metrics: pay stats (5 charged calls, exact 2000 and channel 3000 in tollgate_pay_charged_amount_total)',
      val('tollgate_pay_charged_calls_total') === '5' && val('tollgate_pay_charged_amount_total{scheme="exact"}') === '2000' &&
      val('tollgate_pay_charged_amount_total{scheme="channel"}') === '3000' &&
      val('tollgate_pay_chain_errors_total{op="check"}') === '0' && val('tollgate_pay_chain_errors_total{op="submit"}') === '0', m.split('\n').filter((l) => l.startsWith('tollgate_pay')).join(' | '));
    const commits = Number(val('tollgate_store_commits_total'));
    check('f: /metrics: store commits counted and the commit-latency histogram is consistent (+Inf bucket = count)',
      commits > 0 && val('tollgate_store_commit_duration_seconds_bucket{le="+Inf"}') === val('tollgate_store_commit_duration_seconds_count') &&
      Number(val('tollgate_store_commit_duration_seconds_count')) > 0 && /# TYPE tollgate_store_commit_duration_seconds histogram/.test(m));
    check('f: /metrics: facilitator counters (settle ok 4, verify ok 1)',
      val('tollgate_facilitator_requests_total{endpoint="settle",result="ok"}') === '4' && val('tollgate_facilitator_requests_total{endpoint="verify",result="ok"}') === '1',
      m.split('\n').filter((l) => l.startsWith('tollgate_facilitator')).join(' | '));
    const head = Number(await pub.getBlockNumber());
    const lastBlock = Number(val('tollgate_chain_last_block'));
    let pend = null;
    for (let i = 0; i < 60 && pend !== '0'; i++) {
      if (i) await sleep(250);
      const l = (await (await fetch(`${GW}/metrics`)).text()).split('\n').find((x) => x.startsWith('tollgate_txm_pending '));
      pend = l ? l.split(' ')[1] : null;
    }
    check('f: /metrics: chain figures: RPC calls counted, no RPC errors, transactions in flight back to 0 once mined, last block seen within 3 of the node\'s head',
      Number(val('tollgate_rpc_calls_total')) > 10 && val('tollgate_rpc_errors_total') === '0' && /^[0-9]+$/.test(val('tollgate_txm_pending') || '') && pend === '0' &&
      lastBlock > 0 && lastBlock <= head && head - lastBlock <= 3,
      `calls ${val('tollgate_rpc_calls_total')} errors ${val('tollgate_rpc_errors_total')} pending ${val('tollgate_txm_pending')} last ${lastBlock} head ${head}`);
    const bad = m.split('\n').filter((l) => l && !l.startsWith('#') && !/^[a-z_]+(\{[^}]*\})? [0-9.e+-]+$/.test(l));
    check('f: /metrics: every sample line is well-formed Prometheus text', bad.length === 0, bad.slice(0, 3).join(' | '));
    await sleep(300);
    const lines = readFileSync(accessLog, 'utf8').trim().split('\n').map((l) => { try { return JSON.parse(l); } catch { return null; } }).filter(Boolean);
    const paid = lines.filter((l) => l.route === 'paid' && l.status === 200);
    check('f: access log: paid calls carry payer and scheme (exact and channel)',
      paid.length === N_EXACT + N_CHAN && paid.filter((l) => l.scheme === 'exact' && l.payer === payer.address).length === N_EXACT &&
      paid.filter((l) => l.scheme === 'channel' && l.payer === chanPayer.address).length === N_CHAN, JSON.stringify(paid.slice(0, 2)));
  }
  // ================= (g) /settle from clients that hang up at once (FIN, RST, pipelined bytes): every
  // authorization is still recorded and settled exactly once, the gateway stays up
  {
    const N = 12;
    const p0 = await bal(payer.address), o0 = await bal(otherServer);
    const auths = [];
    for (let i = 0; i < N; i++) auths.push(await signAuth({ value: 5000n }));
    const raw = (b) => { const t = JSON.stringify(b);
      return `POST /settle HTTP/1.1\r\nHost: 127.0.0.1:${gwPort}\r\nAuthorization: Bearer ${FAC_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(t)}\r\n\r\n${t}`; };
    const modes = ['fin', 'rst', 'pipeline'];
    await Promise.all(auths.map((a, i) => hangUp(gwPort, raw(body(a)), modes[i % 3])));
    const inList = auths.map((a) => `x'${a.authorization.nonce.slice(2)}'`).join(',');
    const rows = () => {
      const r = h.run('sqlite3', ['-json', storePath, `SELECT count(*) AS n, count(tx_hash) AS tx FROM exact_payments WHERE nonce IN (${inList})`]);
      return r.code === 0 && r.out.trim() ? JSON.parse(r.out)[0] : { n: -1, tx: -1 };
    };
    let row = rows();
    for (let i = 0; i < 100 && !(row.n === N && row.tx === N); i++) { await sleep(100); row = rows(); }
    check(`g: ${N} /settle whose clients hung up: ${N} exact_payments rows, each with its transaction`, row.n === N && row.tx === N, JSON.stringify(row));
    const again = await Promise.all(auths.map((a) => post('/settle', body(a))));
    check('g: /settle again for each: success with the transaction already sent (nothing settled twice)',
      again.every((r) => r.status === 200 && r.j?.success === true && /^0x[0-9a-f]{64}$/.test(r.j?.transaction || '')), again.map((r) => r.t).slice(0, 2).join(' '));
    await Promise.all(again.map((r) => pub.waitForTransactionReceipt({ hash: r.j.transaction, timeout: 30000 }).catch(() => null)));
    const p1 = await bal(payer.address), o1 = await bal(otherServer);
    check(`g: on-chain: the payer paid exactly ${N} x 5000 once, the other server received it`,
      p0 - p1 === BigInt(N) * 5000n && o1 - o0 === BigInt(N) * 5000n, `payer -${p0 - p1}, other +${o1 - o0}`);
    const hz = await fetch(`${GW}/healthz`).then((r) => r.status).catch((e) => String(e));
    check('g: the gateway is still up', !gw.exited && hz === 200, `${JSON.stringify(gw.exited)} ${hz}`);
  }
  // ================= (h) /verify and /settle on the chain thread's pipeline: 64 of each at once
  // are all answered, their chain reads batched (a blocking read per request cost two exchanges
  // each), and the settlements paid exactly once on-chain
  {
    const N = 64;
    // (the chain thread publishes its client's counters every 500 ms: read them settled)
    const rpcCalls = async () => { await sleep(700); return Number(((await (await fetch(`${GW}/metrics`)).text()).match(/^tollgate_rpc_calls_total (\d+)$/m) || [])[1] || 0); };
    const vs = [], ss = [];
    for (let i = 0; i < N; i++) { vs.push(await signAuth({ value: 5000n })); ss.push(await signAuth({ value: 5000n })); }
    const p0 = await bal(payer.address), o0 = await bal(otherServer);
    const c0 = await rpcCalls();
    const [vr, sr] = await Promise.all([Promise.all(vs.map((a) => post('/verify', body(a)))), Promise.all(ss.map((a) => post('/settle', body(a))))]);
    const c1 = await rpcCalls();
    check(`h: ${N} concurrent /verify: all isValid true`, vr.every((r) => r.status === 200 && r.j?.isValid === true), vr.filter((r) => r.j?.isValid !== true).map((r) => r.t).slice(0, 2).join(' '));
    check(`h: ${N} concurrent /settle: all success with distinct transactions`,
      sr.every((r) => r.status === 200 && r.j?.success === true) && new Set(sr.map((r) => r.j?.transaction)).size === N, sr.filter((r) => r.j?.success !== true).map((r) => r.t).slice(0, 2).join(' '));
    check(`h: their chain reads and submissions were batched: ${c1 - c0} JSON-RPC exchanges for ${2 * N} requests (fewer than one per two)`, c1 - c0 < N, `${c1 - c0}`);
    await Promise.all(sr.map((r) => pub.waitForTransactionReceipt({ hash: r.j.transaction, timeout: 30000 }).catch(() => null)));
    const p1 = await bal(payer.address), o1 = await bal(otherServer);
    check(`h: on-chain: the payer paid exactly ${N} x 5000 for the settlements, nothing for the verifications`,
      p0 - p1 === BigInt(N) * 5000n && o1 - o0 === BigInt(N) * 5000n, `payer -${p0 - p1}, other +${o1 - o0}`);
  }
  await h.stop(gw);
  check('tollgated stops cleanly on SIGTERM', gw.exited?.code === 0, JSON.stringify(gw.exited));
  const san = gw.logText.match(/^.*(runtime error|AddressSanitizer|LeakSanitizer|ThreadSanitizer).*$/m);
  check('tollgated log has no sanitizer reports (TG_BUILD=build-san runs it under ASan/UBSan)', !san, san?.[0]);
  info(`done in ${h.elapsed()}`);
}

main().then(() => { h.summary(); h.finish(h.failed ? 1 : 0); },
  (e) => { check('no exception', false, e?.stack || String(e)); h.summary(); h.finish(1); });
