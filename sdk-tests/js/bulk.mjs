// Medplum's bulk export client (@medplum/core, pinned in package.json) against fhirlink's
// $export: `MedplumClient.bulkExport` kicks off (POST with the parameters in the query and
// no body, `Prefer: respond-async`), polls the Content-Location until the manifest, and
// this script then downloads every output file with the same bearer token.
//
// Usage: node sdk-tests/js/bulk.mjs <FHIR base URL> <token file> [level] [types]
//   (HTTPS: NODE_EXTRA_CA_CERTS names the CA). Prints one JSON line: the manifest's
//   `request` and `transactionTime`, and per type the references found in its files.
// crates/fhirlink/tests/bulk_clients.rs runs it against the real binary.

import { readFileSync } from 'node:fs';
import { MedplumClient } from '@medplum/core';

const [base, tokenFile, level = '', types] = process.argv.slice(2);
if (!/^https?:\/\//.test(base ?? '') || !tokenFile) {
  console.error('usage: node bulk.mjs <FHIR base URL> <token file> [level] [types]');
  process.exit(2);
}
const token = readFileSync(tokenFile, 'utf8').trim();
const medplum = new MedplumClient({
  baseUrl: base.replace(/\/+$/, '') + '/',
  fhirUrlPath: '',
  fetch: (url, init) => fetch(url, init),
});
medplum.setAccessToken(token);

const manifest = await medplum.bulkExport(level, types, undefined, {
  pollStatusOnAccepted: true,
  pollStatusPeriod: 200,
});
if (!manifest?.output || !manifest.transactionTime) {
  console.error('not a manifest:', JSON.stringify(manifest));
  process.exit(1);
}
const found = {};
for (const out of manifest.output) {
  const res = await fetch(out.url, { headers: { Authorization: `Bearer ${token}` } });
  if (res.status !== 200) {
    console.error(`GET ${out.url}: ${res.status} ${await res.text()}`);
    process.exit(1);
  }
  const lines = (await res.text()).split('\n').filter((l) => l.trim() !== '');
  if (lines.length !== out.count) {
    console.error(`${out.url}: ${lines.length} lines, the manifest says ${out.count}`);
    process.exit(1);
  }
  for (const line of lines) {
    const r = JSON.parse(line);
    if (r.resourceType !== out.type) {
      console.error(`${out.url}: a ${r.resourceType} in the ${out.type} file`);
      process.exit(1);
    }
    (found[out.type] ??= []).push(`${r.resourceType}/${r.id}`);
  }
}
for (const refs of Object.values(found)) refs.sort();
console.log(JSON.stringify({ request: manifest.request, transactionTime: manifest.transactionTime, found }));
