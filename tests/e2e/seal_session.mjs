// Seals a session the way the filter's cookie store does, from an independent
// implementation: lets the end-to-end tests present sessions the filter never
// issued (an expired one) and checks the format against a second implementation.
//
//   node seal_session.mjs <base64 key> <cookie base name> '<session JSON>'
// prints base64url(nonce || ciphertext || tag).
import { createCipheriv, createHmac, randomBytes } from 'node:crypto';

const [key, baseName, sessionJson] = process.argv.slice(2);
if (!key || !baseName || !sessionJson) {
  process.stderr.write('usage: seal_session.mjs <base64 key> <cookie base name> <session JSON>\n');
  process.exit(2);
}
const secret = Buffer.from(key.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
const aesKey = createHmac('sha256', secret).update('oidc-filter sealing key v1').digest();
const nonce = randomBytes(12);
const cipher = createCipheriv('aes-256-gcm', aesKey, nonce);
cipher.setAAD(Buffer.from(`oidc-filter session v1|${baseName}`));
const ciphertext = Buffer.concat([cipher.update(Buffer.from(sessionJson)), cipher.final()]);
const sealed = Buffer.concat([nonce, ciphertext, cipher.getAuthTag()]);
process.stdout.write(sealed.toString('base64url'));
