// The console's pages at 1,000 resources in one resource group, against the real binary
// over HTTPS (scripts/bench-console starts it). Creates rg1 with a FHIR service, hub with
// its endpoint subnet, an auto-approved private endpoint with its private DNS zone, and
// NSGs and virtual networks up to 1,000 resources in the group; then signs in as the owner
// and fetches every blade ROUNDS times, one request at a time, printing the median, p95 and
// worst time of each (the server's whole answer, TLS included, on a kept-alive connection).
//
//   FHIRLINK_BIN=… FHIRLINK_ADMIN_URL=https://127.0.0.1:PORT FHIRLINK_DATA=… \
//   NODE_EXTRA_CA_CERTS=<data>/tls/ca.pem node console-tests/bench.mjs

import { execFileSync } from "node:child_process";

const BIN = process.env.FHIRLINK_BIN;
const ADMIN = process.env.FHIRLINK_ADMIN_URL;
const TARGET = Number(process.env.RESOURCES || 1000);
const ROUNDS = Number(process.env.ROUNDS || 20);
const SUB = "/subscriptions/00000000-0000-0000-0000-000000000000";
const RG = `${SUB}/resourceGroups/rg1`;
const NET = `${RG}/providers/Microsoft.Network`;
const SERVICE = `${RG}/providers/Microsoft.HealthcareApis/services/myfhir`;
const ZONE = `${NET}/privateDnsZones/privatelink.azurehealthcareapis.com`;
const token = execFileSync(BIN, ["token", "--principal", "admin"], { encoding: "utf8" }).trim();

async function arm(method, path, version, body) {
  const r = await fetch(`${ADMIN}${path}?api-version=${version}`, {
    method,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await r.text();
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

await arm("PUT", RG, "2025-04-01", { location: "westus2" });
await arm("PUT", SERVICE, "2024-03-31", { location: "westus2", kind: "fhir-R4", properties: {} });
await arm("PUT", `${NET}/virtualNetworks/hub`, "2024-07-01", {
  location: "westus2",
  properties: { addressSpace: { addressPrefixes: ["127.10.0.0/16"] }, subnets: [{ name: "endpoints", properties: { addressPrefix: "127.10.1.0/24" } }] },
});
await arm("PUT", `${NET}/privateEndpoints/pe1`, "2024-07-01", {
  location: "westus2",
  properties: {
    subnet: { id: `${NET}/virtualNetworks/hub/subnets/endpoints` },
    privateLinkServiceConnections: [{ name: "pe1", properties: { privateLinkServiceId: SERVICE, groupIds: ["fhir"] } }],
  },
});
await arm("PUT", ZONE, "2024-06-01", { location: "global" });
await arm("PUT", `${ZONE}/virtualNetworkLinks/hub-link`, "2024-06-01", {
  location: "global",
  properties: { virtualNetwork: { id: `${NET}/virtualNetworks/hub` }, registrationEnabled: false },
});
await arm("PUT", `${NET}/privateEndpoints/pe1/privateDnsZoneGroups/default`, "2024-07-01", {
  properties: { privateDnsZoneConfigs: [{ name: "z", properties: { privateDnsZoneId: ZONE } }] },
});
const count = async () => (await arm("GET", `${RG}/resources`, "2025-04-01")).value.length;
let have = await count();
const started = Date.now();
let i = 0;
const jobs = [];
while (have + jobs.length < TARGET) {
  const n = i++;
  jobs.push(
    n % 2 === 0
      ? ["PUT", `${NET}/networkSecurityGroups/nsg${n}`, "2024-07-01", { location: "westus2", properties: { securityRules: [] } }]
      : ["PUT", `${NET}/virtualNetworks/vnet${n}`, "2024-07-01", {
          location: "westus2",
          properties: { addressSpace: { addressPrefixes: [`127.${100 + Math.floor(n / 256)}.${n % 256}.0/24`] } },
        }],
  );
}
for (let k = 0; k < jobs.length; k += 8) {
  await Promise.all(jobs.slice(k, k + 8).map((j) => arm(...j)));
}
have = await count();
console.log(`rg1 holds ${have} resources (made in ${((Date.now() - started) / 1000).toFixed(1)} s)`);

// Sign in as the console's users do.
const url = execFileSync(BIN, ["console", "--principal", "admin"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
const signin = await fetch(url, { redirect: "manual" });
const cookie = signin.headers.get("set-cookie").split(";")[0];

const pages = {
  "resource groups": "/",
  "resource group (1,000 resources)": `/console/r${RG}`,
  "FHIR service overview": `/console/r${SERVICE}`,
  "FHIR service networking": `/console/r${SERVICE}?tab=networking`,
  "FHIR service access control": `/console/r${SERVICE}?tab=access`,
  "FHIR service authentication": `/console/r${SERVICE}?tab=authentication`,
  "FHIR service diagnostic settings": `/console/r${SERVICE}?tab=diagnostics`,
  "create a private endpoint": `/console/create-endpoint?group=${encodeURIComponent(RG)}`,
  "private endpoint": `/console/r${NET}/privateEndpoints/pe1`,
  "virtual network (500 in the subscription)": `/console/r${NET}/virtualNetworks/hub`,
  "network security group": `/console/r${NET}/networkSecurityGroups/nsg0`,
  "private DNS zone": `/console/r${ZONE}`,
  "diagnose": `/console/diagnose?service=myfhir&from=127.10.1.9`,
  "metrics": "/console/metrics",
  "audit log (200 newest)": "/console/audit",
};
let worst = 0;
console.log(`| page | median ms | p95 ms | max ms |\n|---|---:|---:|---:|`);
for (const [name, path] of Object.entries(pages)) {
  const times = [];
  for (let r = 0; r < ROUNDS + 2; r++) {
    const t0 = performance.now();
    const resp = await fetch(`${ADMIN}${path}`, { headers: { cookie } });
    const body = await resp.text();
    const ms = performance.now() - t0;
    if (resp.status !== 200 || body.includes('class="form-error"')) throw new Error(`${name}: ${resp.status} ${body.slice(0, 400)}`);
    if (r >= 2) times.push(ms); // the first two warm the connection
  }
  times.sort((a, b) => a - b);
  const at = (q) => times[Math.min(times.length - 1, Math.floor(q * times.length))];
  worst = Math.max(worst, times[times.length - 1]);
  console.log(`| ${name} | ${at(0.5).toFixed(1)} | ${at(0.95).toFixed(1)} | ${times[times.length - 1].toFixed(1)} |`);
}
console.log(`worst page: ${worst.toFixed(1)} ms (target: under 100 ms)`);
