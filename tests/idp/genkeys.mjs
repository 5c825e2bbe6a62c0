// Generates the test IdP's fixed signing key (run once; the result is committed).
// It is a TEST key: it signs tokens only for the local demo and the end-to-end tests.
//
//   node tests/idp/genkeys.mjs            # writes tests/idp/keys/signing-jwks.json
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { exportJWK, generateKeyPair } from 'jose';

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, 'keys', 'signing-jwks.json');

const { privateKey } = await generateKeyPair('RS256', { extractable: true, modulusLength: 2048 });
const jwk = { ...(await exportJWK(privateKey)), kid: 'test-rs256', alg: 'RS256', use: 'sig' };
writeFileSync(out, `${JSON.stringify({ keys: [jwk] }, null, 2)}\n`);
console.log(`wrote ${out} (kid ${jwk.kid})`);
