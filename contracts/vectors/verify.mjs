// verify.mjs: independent check of vectors/eip712.json with viem (a second EIP-712
// implementation): every typedData hashes to its digest, every struct hash matches, channel ids
// recompute, valid signatures recover to their signer and rejected ones do not.
// Usage: node vectors/verify.mjs [path]   (run from contracts/; ./check.sh runs it)
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "..", "..", "package.json"));
const viem = require("viem");
const { hashTypedData, hashStruct, recoverTypedDataAddress, getAddress, keccak256, encodeAbiParameters } = viem;

const file = process.argv[2] ?? path.join(here, "eip712.json");
const v = JSON.parse(readFileSync(file, "utf8"));
let checked = 0;
const fail = (msg) => {
  console.error(`vectors: FAIL ${msg}`);
  process.exitCode = 1;
};

for (const d of v.domains) {
  const sep = hashStruct({
    data: d.domain,
    types: {
      EIP712Domain: [
        { name: "name", type: "string" },
        { name: "version", type: "string" },
        { name: "chainId", type: "uint256" },
        { name: "verifyingContract", type: "address" },
      ],
    },
    primaryType: "EIP712Domain",
  });
  if (sep !== d.separator) fail(`domain ${d.contract}: ${sep} != ${d.separator}`);
  checked++;
}
for (const t of v.types) {
  const h = keccak256(new TextEncoder().encode(t.encodeType));
  if (h !== t.typehash) fail(`typehash ${t.name}`);
  checked++;
}
for (const c of v.channelIds) {
  const td = c.typedData;
  if (hashTypedData(td) !== c.channelId) fail(`channelId ${c.channelId}`);
  if (hashStruct({ data: td.message, types: td.types, primaryType: td.primaryType }) !== c.structHash)
    fail(`channel struct hash ${c.structHash}`);
  checked++;
}
const sections = ["vouchers", "refunds", "claimBatches", "permitDeposits", "transferWithAuthorization",
  "receiveWithAuthorization", "permits"];
for (const s of sections) {
  for (const e of v[s]) {
    const td = e.typedData;
    const digest = hashTypedData(td);
    if (digest !== e.digest) fail(`${e.label}: digest ${digest} != ${e.digest}`);
    const sh = hashStruct({ data: td.message, types: td.types, primaryType: td.primaryType });
    if (sh !== e.structHash) fail(`${e.label}: struct hash`);
    let recovered = null;
    try {
      recovered = await recoverTypedDataAddress({ ...td, signature: e.signature });
    } catch {
      recovered = null;
    }
    const matches = recovered !== null && getAddress(recovered) === getAddress(e.signer);
    // viem (like raw ecrecover) accepts high-S; the contracts must not. A "valid": false vector
    // is either a high-S twin (recovers, but is non-canonical) or a wrong signer.
    if (e.valid && !matches) fail(`${e.label}: signature does not recover to ${e.signer}`);
    if (!e.valid) {
      const s = BigInt("0x" + e.signature.slice(66, 130));
      const highS = s > 0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0n;
      if (!highS && matches) fail(`${e.label}: marked invalid but is a canonical signature of the signer`);
    }
    checked++;
  }
}
for (const n of v.depositAuthorizationNonces) {
  const h = keccak256(encodeAbiParameters([{ type: "bytes32" }, { type: "uint256" }], [n.channelId, BigInt(n.salt)]));
  if (h !== n.nonce) fail(`deposit nonce ${n.nonce}`);
  checked++;
}
if (process.exitCode) process.exit(process.exitCode);
console.log(`vectors: ${checked} entries verified with viem`);
