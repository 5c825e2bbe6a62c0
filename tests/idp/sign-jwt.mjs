// Signs JWTs for the end-to-end tests (forged logout tokens and the like).
//
//   echo '[{"key": "idp", "header": {...}, "claims": {...}}, ...]' | node tests/idp/sign-jwt.mjs
//
// prints a JSON array of compact JWTs, one per spec. "key": "idp" signs with the test IdP's
// own signing key (tests/idp/keys/signing-jwks.json, RS256, its kid unless the header sets
// one); "key": "other" signs with a fresh RS256 key that no JWKS knows. The header's alg
// defaults to RS256.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SignJWT, generateKeyPair, importJWK } from 'jose';

const here = dirname(fileURLToPath(import.meta.url));
const idpJwk = JSON.parse(readFileSync(join(here, 'keys', 'signing-jwks.json'), 'utf8')).keys[0];

const specs = JSON.parse(readFileSync(0, 'utf8'));
const idpKey = await importJWK(idpJwk, 'RS256');
let otherKey;

const out = [];
for (const spec of specs) {
  let key;
  if (spec.key === 'idp') {
    key = idpKey;
  } else if (spec.key === 'other') {
    otherKey ??= (await generateKeyPair('RS256')).privateKey;
    key = otherKey;
  } else {
    throw new Error(`unknown key ${spec.key}`);
  }
  const header = { alg: 'RS256', ...(spec.key === 'idp' ? { kid: idpJwk.kid } : {}), ...spec.header };
  out.push(await new SignJWT(spec.claims).setProtectedHeader(header).sign(key));
}
process.stdout.write(`${JSON.stringify(out)}\n`);
