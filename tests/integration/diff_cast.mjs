// Differential test: `tollgate` against Foundry's `cast` on thousands of random inputs.
// Each group prints PASS or FAIL; outputs must be byte-identical, and both must agree on
// refusing an input. Deterministic: the seed is printed and can be set with TG_DIFF_SEED.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const root = process.env.TG_ROOT || process.cwd();
const build = process.env.TG_BUILD || join(root, 'build');
const TOLLGATE = join(build, 'tollgate');
const CAST = join(root, 'node_modules/.bin/cast');
const N = Number(process.env.TG_DIFF_N || 300);
const seed = Number(process.env.TG_DIFF_SEED || Date.now() % 1000000007);
const scratch = mkdtempSync(join(tmpdir(), 'tg-diff-'));
const env = { ...process.env, HOME: scratch };
delete env.ETH_RPC_URL;

// xorshift128+ so a failing seed can be replayed.
let s0 = BigInt(seed) | 1n, s1 = 0x9E3779B97F4A7C15n;
const M = (1n << 64n) - 1n;
function next64() {
  let x = s0, y = s1;
  s0 = y; x ^= (x << 23n) & M; s1 = x ^ y ^ (x >> 17n) ^ (y >> 26n);
  return (s1 + y) & M;
}
const rnd = (n) => Number(next64() % BigInt(n));
const pick = (a) => a[rnd(a.length)];
const bytes = (n) => { const b = Buffer.alloc(n); for (let i = 0; i < n; i++) b[i] = rnd(256); return b; };
const hex = (b) => '0x' + b.toString('hex');
const bigOfBits = (bits) => { let v = 0n; for (let i = 0; i < bits; i += 8) v = (v << 8n) | BigInt(rnd(256)); return v >> BigInt((8 - bits % 8) % 8); };
const word = () => { const a = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'; let s = pick(a.slice(0, 52)); const n = rnd(12); for (let i = 0; i < n; i++) s += pick(a); return s; };
function seckey() { for (;;) { const k = bytes(32); if (k.some((x) => x) && k[0] < 0xff) return hex(k); } }

function run(bin, args, file) {
  const r = spawnSync(bin, args, { env, encoding: 'utf8', timeout: 20000 });
  return { code: r.status, out: (r.stdout || '').trim(), err: (r.stderr || '').trim() };
}

let passed = 0, failed = 0;
function group(name, count, gen) {
  let bad = 0, shown = 0, refusedBoth = 0;
  for (let i = 0; i < count; i++) {
    const { args, castArgs, norm } = gen(i);
    const a = run(TOLLGATE, args), b = run(CAST, castArgs || args);
    const na = norm ? norm(a.out) : a.out, nb = norm ? norm(b.out) : b.out;
    const ok = (a.code === 0 && b.code === 0 && na === nb) || (a.code !== 0 && b.code !== 0);
    if (a.code !== 0 && b.code !== 0) refusedBoth++;
    if (!ok) {
      bad++;
      if (shown++ < 3) {
        console.log(`    ${name} case ${i}: tollgate ${JSON.stringify(args)}`);
        console.log(`      tollgate (exit ${a.code}): ${a.out.slice(0, 300)} ${a.err.slice(0, 200)}`);
        console.log(`      cast     (exit ${b.code}): ${b.out.slice(0, 300)} ${b.err.slice(0, 200)}`);
      }
    }
  }
  if (bad) { failed++; console.log(`FAIL diff/${name}: ${bad} of ${count} differ (seed ${seed})`); }
  else { passed++; console.log(`PASS diff/${name} (${count} cases, ${refusedBoth} refused by both)`); }
}

// ---- generators -------------------------------------------------------------
function rlpItem(depth) {
  if (depth > 3 || rnd(3) > 0) {
    const k = rnd(6);
    const n = k === 0 ? 0 : k === 1 ? 1 : k === 2 ? rnd(56) : k === 3 ? 55 + rnd(3) : rnd(300);
    const b = bytes(n);
    if (n === 1 && rnd(2)) b[0] = rnd(0x80);
    return hex(b);
  }
  const n = rnd(5);
  return Array.from({ length: n }, () => rlpItem(depth + 1));
}

// ABI types with matching cast-style value text.
function abiType(depth) {
  const k = depth > 2 ? rnd(6) : rnd(9);
  if (k === 0) { const bits = 8 * (1 + rnd(32)); return { t: `uint${bits}`, v: () => bigOfBits(rnd(bits) + 1).toString() }; }
  if (k === 1) { const bits = 8 * (1 + rnd(32)); return { t: `int${bits}`, v: () => { const m = bigOfBits(rnd(bits - 1) + 1); return (rnd(2) ? '-' : '') + m.toString(); } }; }
  if (k === 2) return { t: 'address', v: () => hex(bytes(20)) };
  if (k === 3) return { t: 'bool', v: () => pick(['true', 'false']) };
  if (k === 4) { const n = 1 + rnd(32); return { t: `bytes${n}`, v: () => hex(bytes(n)) }; }
  if (k === 5) return rnd(2) ? { t: 'bytes', v: () => hex(bytes(rnd(70))) } : { t: 'string', v: () => word() };
  if (k === 6 || k === 7) {
    const e = abiType(depth + 1);
    const fixed = k === 7;
    const n = fixed ? 1 + rnd(3) : rnd(4);
    return { t: `${e.t}[${fixed ? n : ''}]`, v: () => '[' + Array.from({ length: fixed ? n : rnd(4) }, e.v).join(',') + ']' };
  }
  const m = 1 + rnd(3);
  const es = Array.from({ length: m }, () => abiType(depth + 1));
  return { t: '(' + es.map((e) => e.t).join(',') + ')', v: () => '(' + es.map((e) => e.v()).join(',') + ')' };
}

function typedData() {
  const fields = [];
  const n = 1 + rnd(5);
  for (let i = 0; i < n; i++) {
    const k = rnd(7);
    const name = 'f' + i;
    if (k === 0) fields.push([name, 'uint256', bigOfBits(1 + rnd(256)).toString()]);
    else if (k === 1) fields.push([name, 'address', hex(bytes(20))]);
    else if (k === 2) fields.push([name, 'string', word()]);
    else if (k === 3) fields.push([name, 'bytes', hex(bytes(rnd(40)))]);
    else if (k === 4) fields.push([name, 'bool', !!rnd(2)]);
    else if (k === 5) fields.push([name, 'bytes32', hex(bytes(32))]);
    else fields.push([name, 'uint128', bigOfBits(1 + rnd(128)).toString()]);
  }
  const inner = rnd(2);
  const types = {
    EIP712Domain: [{ name: 'name', type: 'string' }, { name: 'version', type: 'string' },
      { name: 'chainId', type: 'uint256' }, { name: 'verifyingContract', type: 'address' }],
    Msg: fields.map(([name, type]) => ({ name, type })),
  };
  const message = Object.fromEntries(fields.map(([k, , v]) => [k, v]));
  if (inner) {
    types.Inner = [{ name: 'id', type: 'uint64' }, { name: 'who', type: 'address' }];
    types.Msg.push({ name: 'items', type: 'Inner[]' });
    message.items = Array.from({ length: rnd(3) }, () => ({ id: String(rnd(1e9)), who: hex(bytes(20)) }));
  }
  return { types, primaryType: 'Msg', domain: { name: word(), version: String(1 + rnd(9)), chainId: 1 + rnd(100000), verifyingContract: hex(bytes(20)) }, message };
}

function txArgs() {
  const kind = rnd(4); // 0 legacy, 1 legacy+155 (cast always uses --chain), 2 type1, 3 type2
  const args = ['mktx', '--private-key', seckey(), '--chain', String(1 + rnd(100000)), '--nonce', String(rnd(1000000)),
    '--gas-limit', String(21000 + rnd(1000000))];
  if (rnd(2)) args.push('--value', bigOfBits(1 + rnd(96)).toString());
  const al = JSON.stringify(Array.from({ length: 1 + rnd(2) }, () => ({ address: hex(bytes(20)), storageKeys: Array.from({ length: rnd(3) }, () => hex(bytes(32))) })));
  if (kind <= 1) args.push('--legacy', '--gas-price', String(1 + rnd(1e12)));
  else if (kind === 2) args.push('--legacy', '--gas-price', String(1 + rnd(1e12)), '--access-list', al);
  else { args.push('--gas-price', String(1e9 + rnd(1e12)), '--priority-gas-price', String(rnd(1e9))); if (rnd(2)) args.push('--access-list', al); }
  args.push(hex(bytes(20)));
  if (rnd(2)) args.push('transfer(address,uint256)', hex(bytes(20)), String(rnd(1e9)));
  return args;
}

// ---- groups -------------------------------------------------------------------
const only = process.env.TG_DIFF_ONLY || '';
const want = (g) => !only || only.split(',').includes(g);

if (want('keccak')) group('keccak', N, () => ({ args: ['keccak', rnd(2) ? hex(bytes(rnd(300))) : word()] }));
if (want('checksum')) group('to-check-sum-address', N, () => ({ args: ['to-check-sum-address', hex(bytes(20))] }));
if (want('rlp')) group('to-rlp', N, () => ({ args: ['to-rlp', JSON.stringify(rlpItem(0))] }));
if (want('rlp')) group('from-rlp', N, () => {
  const r = run(CAST, ['to-rlp', JSON.stringify(rlpItem(0))]);
  let h = r.out;
  if (rnd(4) === 0 && h.length > 4) h = h.slice(0, h.length - 2 * (1 + rnd(2))); // truncated: both must refuse
  return { args: ['from-rlp', h] };
});
if (want('abi')) group('abi-encode', N, () => {
  const ts = Array.from({ length: 1 + rnd(4) }, () => abiType(0));
  return { args: ['abi-encode', `f(${ts.map((t) => t.t).join(',')})`, ...ts.map((t) => t.v())] };
});
if (want('abi')) group('calldata', N, () => {
  const ts = Array.from({ length: rnd(4) }, () => abiType(0));
  return { args: ['calldata', `${word()}(${ts.map((t) => t.t).join(',')})`, ...ts.map((t) => t.v())] };
});
if (want('abi')) group('decode-abi', N, () => {
  const ts = Array.from({ length: 1 + rnd(4) }, () => abiType(0));
  const sig = `f(${ts.map((t) => t.t).join(',')})`;
  const enc = run(CAST, ['abi-encode', sig, ...ts.map((t) => t.v())]).out;
  return { args: ['decode-abi', '--input', sig, enc] };
});
if (want('abi')) group('sig', N, () => {
  const ts = Array.from({ length: rnd(4) }, () => abiType(0));
  return { args: ['sig', `${word()}(${ts.map((t) => t.t).join(',')})`] };
});
if (want('wallet')) group('wallet-verify', Math.ceil(N / 2), () => {
  const msg = word() + ' ' + word();
  const sig = run(CAST, ['wallet', 'sign', '--private-key', seckey(), msg]).out;
  const addr = run(CAST, ['wallet', 'address', '--private-key', seckey()]).out;
  // Half the cases verify against the real signer, half against another address.
  const k = seckey();
  const good = run(CAST, ['wallet', 'sign', '--private-key', k, msg]).out;
  const kaddr = run(CAST, ['wallet', 'address', '--private-key', k]).out;
  return rnd(2) ? { args: ['wallet', 'verify', '--address', kaddr, msg, good] }
                : { args: ['wallet', 'verify', '--address', addr, msg, sig] };
});
if (want('wallet')) group('wallet-address', N, () => ({ args: ['wallet', 'address', '--private-key', seckey()] }));
if (want('wallet')) group('wallet-sign', N, () => ({ args: ['wallet', 'sign', '--private-key', seckey(), rnd(3) ? word() + ' ' + word() : hex(bytes(rnd(64)))] }));
if (want('eip712')) group('wallet-sign-typed', Math.ceil(N / 2), (i) => {
  const f = join(scratch, `typed-${i}.json`);
  writeFileSync(f, JSON.stringify(typedData()));
  return { args: ['wallet', 'sign', '--private-key', seckey(), '--data', '--from-file', f] };
});
if (want('tx')) group('mktx', N, () => ({ args: txArgs() }));
if (want('tx')) group('decode-transaction', Math.ceil(N / 2), () => {
  const raw = run(CAST, txArgs()).out;
  // cast prints a JSON string literal of pretty JSON; compare parsed values.
  const norm = (o) => { try { let v = JSON.parse(o); if (typeof v === 'string') v = JSON.parse(v); return JSON.stringify(v, Object.keys(v).sort()); } catch { return o; } };
  return { args: ['decode-transaction', raw], norm };
});

rmSync(scratch, { recursive: true, force: true });
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
