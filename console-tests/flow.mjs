// The seed's private-link setup done in the fhirlink web console only, in headless Debian
// chromium (playwright-core, no downloaded browser), with an axe-core scan and a screenshot
// of every blade. Run by crates/fhirlink/tests/console_browser.rs against the real binary:
//
//   FHIRLINK_BIN=… FHIRLINK_ADMIN_URL=https://127.0.0.1:PORT FHIRLINK_DATA=… \
//   FHIRLINK_SCREENSHOTS=target/console-screenshots node console-tests/flow.mjs
//
// Prints one line `RESULT {json}` with what the console showed (endpoint IPs, public
// access), which the Rust test then checks on the wire with dig and curl.

import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { chromium } from "playwright-core";

const require = createRequire(import.meta.url);
const axeSource = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");

const BIN = process.env.FHIRLINK_BIN;
const ADMIN = process.env.FHIRLINK_ADMIN_URL;
const SHOTS = process.env.FHIRLINK_SCREENSHOTS;
const SUB = "/subscriptions/00000000-0000-0000-0000-000000000000";
const RG = `${SUB}/resourceGroups/rg1`;
const SERVICE = `${RG}/providers/Microsoft.HealthcareApis/services/myfhir`;
const ZONE = `${RG}/providers/Microsoft.Network/privateDnsZones/privatelink.azurehealthcareapis.com`;
mkdirSync(SHOTS, { recursive: true });

let failures = 0;
const check = (ok, what) => {
  console.log(`${ok ? "ok" : "FAIL"} - ${what}`);
  if (!ok) failures++;
};

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});

/** A one-time sign-in URL, from `fhirlink console` as an operator runs it. */
const signInUrl = (principal) =>
  execFileSync(BIN, ["console", "--principal", principal], { encoding: "utf8" }).trim();

const cspViolations = [];
/** A browser context signed in as `principal` (its own cookie jar). */
async function signIn(principal) {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.on("console", (m) => {
    if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text());
  });
  const url = signInUrl(principal);
  await page.goto(url);
  check(page.url() === `${ADMIN}/`, `${principal}: the sign-in code leaves the address bar (${page.url()})`);
  check((await page.textContent("#principal")) === principal, `${principal}: signed in`);
  return { context, page, url };
}

const scanned = new Set();
/** Screenshot and axe scan of the page as it is now. */
async function blade(page, name) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
  if (scanned.has(name)) return;
  scanned.add(name);
  // Evaluated through the DevTools protocol, so the page's CSP (no inline script) stays on.
  const result = await page.evaluate(
    async (src) => {
      (0, eval)(src);
      const r = await window.axe.run(document, { resultTypes: ["violations"] });
      return r.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.map((n) => n.target.join(" ")).slice(0, 3) }));
    },
    axeSource,
  );
  const bad = result.filter((v) => v.impact === "serious" || v.impact === "critical");
  check(bad.length === 0, `axe: no serious or critical violation on ${name} ${JSON.stringify(bad)}`);
}

const go = (page, path) => page.goto(`${ADMIN}${path}`);
const blade_url = (id, tab) => `/console/r${id}${tab ? `?tab=${tab}` : ""}`;

// --- The owner --------------------------------------------------------------------------
const owner = await signIn("admin");
const p = owner.page;

// A sign-in code works once.
{
  const other = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await other.newPage();
  const resp = await page.goto(owner.url);
  check(resp.status() === 401, `a used sign-in code is refused (${resp.status()})`);
  check((await page.textContent("main")).includes("was used already"), "the refusal says why");
  await other.close();
}

await blade(p, "resource-groups");
await p.fill("#group-create-name", "rg1");
await p.selectOption("#group-create-location", "westus2");
await p.click('form[action="/console/do/group-create"] button[type=submit]');
check(p.url().endsWith(blade_url(RG)), `resource group rg1 created (${p.url()})`);

// The FHIR service.
await p.fill("#service-create-name", "myfhir");
await p.click('form[action="/console/do/service-create"] button[type=submit]');
check(p.url().endsWith(blade_url(SERVICE)), "FHIR service myfhir created");
check((await p.textContent("#public-access")).trim() === "Enabled", "public access starts Enabled");
await blade(p, "fhir-service-overview");

// Hub with its endpoint subnet, then the VM subnet on the VNet's blade.
await go(p, blade_url(RG));
await p.fill("#vnet-create-name", "hub");
await p.fill("#vnet-create-prefix", "127.10.0.0/16");
await p.fill("#vnet-create-subnet", "endpoints");
await p.fill("#vnet-create-subnetPrefix", "127.10.1.0/24");
await p.click('form[action="/console/do/vnet-create"] button[type=submit]');
await p.fill("#subnet-create-name", "vms");
await p.fill("#subnet-create-prefix", "127.10.2.0/24");
await p.click('form[action="/console/do/subnet-create"] button[type=submit]');
check((await p.textContent("#subnets")).includes("127.10.2.0/24"), "subnet vms added to hub");
// An overlapping subnet: ARM's error beside the field, the typed values kept.
await p.fill("#subnet-create-name", "clash");
await p.fill("#subnet-create-prefix", "127.10.2.0/25");
await p.click('form[action="/console/do/subnet-create"] button[type=submit]');
check((await p.getAttribute("#subnet-create-prefix", "aria-invalid")) === "true", "the overlap is shown beside the address range");
check((await p.inputValue("#subnet-create-name")) === "clash", "the typed subnet name is kept");
await blade(p, "virtual-network");

// Spoke, for the VNet link later.
await go(p, blade_url(RG));
await p.fill("#vnet-create-name", "spoke");
await p.fill("#vnet-create-prefix", "127.20.0.0/16");
await p.fill("#vnet-create-subnet", "vms");
await p.fill("#vnet-create-subnetPrefix", "127.20.1.0/24");
await p.click('form[action="/console/do/vnet-create"] button[type=submit]');

// Peerings both ways: Initiated, then Connected.
const HUB = `${RG}/providers/Microsoft.Network/virtualNetworks/hub`;
const SPOKE = `${RG}/providers/Microsoft.Network/virtualNetworks/spoke`;
await go(p, blade_url(HUB));
await p.fill("#peering-create-name", "hub-to-spoke");
await p.selectOption("#peering-create-remote", { label: "spoke" });
await p.click('form[action="/console/do/peering-create"] button[type=submit]');
check((await p.locator('#peerings tr:has-text("hub-to-spoke") td.state').textContent()).trim() === "Initiated", "hub-to-spoke is Initiated");
await go(p, blade_url(SPOKE));
await p.fill("#peering-create-name", "spoke-to-hub");
await p.selectOption("#peering-create-remote", { label: "hub" });
await p.click('form[action="/console/do/peering-create"] button[type=submit]');
await go(p, blade_url(HUB));
check((await p.locator('#peerings tr:has-text("hub-to-spoke") td.state').textContent()).trim() === "Connected", "with spoke-to-hub both are Connected");

// Create a private endpoint: first in the wrong region (the error comes back beside the
// region, on its tab, with everything typed kept), then right.
const createEndpoint = async (page, { name, region, byId, message, dns }) => {
  await go(page, `/console/create-endpoint?group=${encodeURIComponent(RG)}`);
  await page.click("#tab-basics");
  await page.fill("#endpoint-create-name", name);
  await page.selectOption("#endpoint-create-location", region);
  await page.click("#tab-resource");
  if (byId) {
    await page.check("#method-id");
    await page.fill("#endpoint-create-resourceId", SERVICE);
    await page.fill("#endpoint-create-requestMessage", message);
  } else {
    await page.selectOption("#endpoint-create-resource", { label: "myfhir" });
  }
  await page.click("#tab-configuration");
  await page.selectOption("#endpoint-create-vnet", { label: "hub" });
  await page.waitForSelector('#endpoint-create-subnet option:has-text("hub / endpoints (127.10.1.0/24)")', { state: "attached" });
  await page.selectOption("#endpoint-create-subnet", { label: "hub / endpoints (127.10.1.0/24)" });
  await page.check(dns ? "#dns-yes" : "#dns-no");
  await blade(page, "create-private-endpoint");
  await page.click("#create");
};
await createEndpoint(p, { name: "pe1", region: "eastus", dns: true });
check((await p.getAttribute("#endpoint-create-location", "aria-invalid")) === "true", "the region rule's error is beside Region");
check(await p.isVisible("#endpoint-create-location"), "the Basics tab is opened to show it");
check((await p.inputValue("#endpoint-create-name")) === "pe1", "the typed name is kept");
await blade(p, "create-private-endpoint-error");
await createEndpoint(p, { name: "pe1", region: "westus2", dns: true });
check(p.url().includes("/privateEndpoints/pe1"), `pe1 created (${p.url()})`);
const pe1Ip = (await p.textContent("#pe-ip")).trim();
check(/^127\.10\.1\.\d+$/.test(pe1Ip), `pe1 has a private IP in the endpoint subnet (${pe1Ip})`);
await blade(p, "private-endpoint");

await go(p, blade_url(SERVICE));
check((await p.textContent("#public-access")).trim() === "Disabled", "the approved endpoint switched public access to Disabled");
check((await p.textContent("#endpoints")).includes(pe1Ip), "the Overview lists pe1 and its IP");

// Role assignments on rg1: a Network Contributor and a Reader.
await go(p, blade_url(RG));
for (const [who, role] of [["netop", "Network Contributor"], ["viewer", "Reader"]]) {
  await p.fill("#role-create-principal", who);
  await p.selectOption("#role-create-role", { label: role });
  await p.click('form[action="/console/do/role-create"] button[type=submit]');
  check((await p.textContent("#role-assignments")).includes(who), `${who} is ${role} on rg1`);
}
await blade(p, "resource-group");

// The owner watches the Private endpoint connections tab while the Network Contributor asks.
await go(p, blade_url(SERVICE, "networking"));
await blade(p, "fhir-service-networking");
const netop = await signIn("netop");
await createEndpoint(netop.page, { name: "pe2", region: "westus2", byId: true, message: "from the spoke team", dns: false });
check(netop.page.url().includes("/privateEndpoints/pe2"), `netop created pe2 (${netop.page.url()})`);
check((await netop.page.textContent("main")).includes("Pending"), "pe2's connection waits for approval");
// The owner's page updates by itself (server-sent events).
await p.waitForSelector('#connections tr:has-text("pe2")', { timeout: 20000 });
const row = p.locator('#connections tr:has-text("pe2")');
check((await row.locator("td.state").textContent()).trim() === "Pending", "the owner sees pe2 Pending without reloading");
// netop may not read the service, nor approve its own request, even by posting the form
// itself with its own valid CSRF token: the ARM call is refused.
await go(netop.page, blade_url(SERVICE, "networking"));
check((await netop.page.textContent("main")).includes("AuthorizationFailed"), "netop cannot read the service's connections");
{
  const csrf = await netop.page.getAttribute("input[name=csrf]", "value");
  const connId = await row.locator("input[name=id]").getAttribute("value");
  const resp = await netop.page.request.post(`${ADMIN}/console/do/connection`, {
    form: { csrf, form: "x", back: blade_url(SERVICE, "networking"), id: connId, decision: "Approved", description: "self-approved" },
    maxRedirects: 0,
  });
  check(resp.status() === 403 && (await resp.text()).includes("AuthorizationFailed"), `netop cannot approve: ARM's AuthorizationFailed (${resp.status()})`);
}
await row.locator('input[name=description]').fill("approved by the owner");
await row.locator('button[value=Approved]').click();
const approved = p.locator('#connections tr:has-text("pe2")');
check((await approved.locator("td.state").textContent()).trim() === "Approved", "the owner approved pe2");
check((await approved.textContent()).includes("approved by the owner"), "with its description");
await go(p, blade_url(SERVICE));
const endpointsText = await p.textContent("#endpoints");
const pe2Ip = (endpointsText.match(/pe2\s*Approved\s*(127\.10\.1\.\d+)/) || [])[1] || "";
check(pe2Ip !== "" && pe2Ip !== pe1Ip, `pe2 has its own IP (${pe2Ip})`);

// Reject, then Remove, a third request (the owner's own, by resource ID: manual approval).
await createEndpoint(p, { name: "pe3", region: "westus2", byId: true, message: "to be refused", dns: false });
await go(p, blade_url(SERVICE, "networking"));
const pe3 = () => p.locator('#connections tr:has-text("pe3")');
check((await pe3().locator("td.state").textContent()).trim() === "Pending", "pe3 waits for approval");
await pe3().locator("input[name=description]").fill("not this one");
await pe3().locator("button[value=Rejected]").click();
check((await pe3().locator("td.state").textContent()).trim() === "Rejected", "the owner rejected pe3");
check((await pe3().textContent()).includes("not this one"), "with its description");
await pe3().locator("button[value=Remove]").click();
check((await pe3().count()) === 0, "the owner removed pe3's connection");

// A Virtual network link for spoke, with auto-registration.
await go(p, blade_url(ZONE));
await p.fill("#link-create-name", "spoke-link");
await p.selectOption("#link-create-vnet", { label: "spoke" });
await p.check("#link-create-registration");
await p.click('form[action="/console/do/link-create"] button[type=submit]');
const links = await p.textContent("#links");
check(links.includes("spoke-link") && links.includes("Enabled"), "spoke-link added with auto-registration");
check((await p.textContent("#records")).includes(pe1Ip), "the zone's A record is pe1's IP");
await blade(p, "private-dns-zone");

// An NSG and a rule.
await go(p, blade_url(RG));
await p.fill("#nsg-create-name", "vm-nsg");
await p.click('form[action="/console/do/nsg-create"] button[type=submit]');
await p.fill("#rule-create-name", "allow-https");
await p.fill("#rule-create-priority", "200");
await p.selectOption("#rule-create-protocol", "Tcp");
await p.fill("#rule-create-port", "443");
await p.click('form[action="/console/do/rule-create"] button[type=submit]');
check((await p.textContent("#rules")).includes("allow-https"), "NSG rule added");
await blade(p, "network-security-group");

// Diagnose: the hub VM's path.
await go(p, `/console/diagnose?service=myfhir&from=127.10.2.5`);
check((await p.textContent("#outcome")).length > 0, "Diagnose explains the hub VM's path");
await blade(p, "diagnose");
await go(p, "/console/metrics");
check(Number(await p.textContent("#requests")) > 0, "Metrics counts the requests answered");
check((await p.locator("svg polyline").count()) === 2, "requests and denials are charted (inline SVG)");
await blade(p, "metrics");
await go(p, blade_url(SERVICE, "access"));
await blade(p, "fhir-service-access");

// --- The Reader sees but cannot change ---------------------------------------------------
const viewer = await signIn("viewer");
const v = viewer.page;
await go(v, blade_url(SERVICE));
check((await v.textContent("#public-access")).trim() === "Disabled", "the Reader sees the service");
await go(v, blade_url(SERVICE, "networking"));
await v.check("#public-Enabled");
await v.click('form[action="/console/do/public-access"] button[type=submit]');
check((await v.textContent("main")).includes("AuthorizationFailed"), "the Reader's change is refused with ARM's AuthorizationFailed");
await go(v, blade_url(SERVICE));
check((await v.textContent("#public-access")).trim() === "Disabled", "and nothing changed");

// The audit log: the Reader's refused change is there, under the Reader's name, from the
// browser's address (the writer thread appends records every 25 ms: a few reloads at most).
{
  let found = "";
  for (let i = 0; i < 20 && !found.includes("403"); i++) {
    await go(p, "/console/audit?principal=viewer&networkPath=management");
    found = await p.locator('#audit tr:has-text("PATCH")').allTextContents().then((t) => t.join(" "));
    if (!found.includes("403")) await p.waitForTimeout(100);
  }
  check(found.includes("403") && found.includes("127.0.0.1"), `the audit log shows the Reader's refused PATCH from the browser (${found})`);
  await blade(p, "audit-log");
  await go(p, "/console/audit?since=yesterday");
  check((await p.getAttribute("#audit-since", "aria-invalid")) === "true", "a bad time filter is shown beside its field");
}

// --- CSRF and a forged cookie ----------------------------------------------------------
{
  const form = { form: "public-access", back: "/", id: SERVICE, value: "Enabled" };
  const none = await p.request.post(`${ADMIN}/console/do/public-access`, { form, maxRedirects: 0 });
  check(none.status() === 403, `a mutation without the CSRF token is refused (${none.status()})`);
  const wrong = await p.request.post(`${ADMIN}/console/do/public-access`, { form: { ...form, csrf: "x".repeat(43) }, maxRedirects: 0 });
  check(wrong.status() === 403, `a mutation with another CSRF token is refused (${wrong.status()})`);
  // The viewer's token in the owner's session is not the owner's.
  const viewerCsrf = await v.getAttribute('input[name=csrf]', "value");
  const swapped = await p.request.post(`${ADMIN}/console/do/public-access`, { form: { ...form, csrf: viewerCsrf }, maxRedirects: 0 });
  check(swapped.status() === 403, `another session's CSRF token is refused (${swapped.status()})`);
  const forged = await browser.newContext({ ignoreHTTPSErrors: true });
  const host = new URL(ADMIN).hostname;
  await forged.addCookies([{ name: "__Host-fhirlink-console", value: "A".repeat(43), domain: host, path: "/", secure: true, httpOnly: true, sameSite: "Strict" }]);
  const fp = await forged.newPage();
  const resp = await fp.goto(`${ADMIN}/`);
  check(resp.status() === 401, `a forged session cookie is refused (${resp.status()})`);
  const post = await fp.request.post(`${ADMIN}/console/do/public-access`, { form: { ...form, csrf: "A".repeat(43) }, maxRedirects: 0 });
  check(post.status() === 401, `and cannot change anything (${post.status()})`);
  await forged.close();
  await go(p, blade_url(SERVICE));
  check((await p.textContent("#public-access")).trim() === "Disabled", "public access is still Disabled");
}

// No token in the page: the HTML carries no bearer token or session id.
{
  const html = await p.content();
  const cookies = await owner.context.cookies();
  const session = cookies.find((c) => c.name === "__Host-fhirlink-console");
  check(session && session.httpOnly && session.secure && session.sameSite === "Strict", "the session cookie is HttpOnly, Secure, SameSite=Strict");
  check(session && !html.includes(session.value), "the session id is not in the page");
  check(!/eyJ[A-Za-z0-9_-]{10,}\./.test(html), "no JWT in the page");
  check((await p.evaluate(() => document.cookie)).indexOf("fhirlink-console") < 0, "scripts cannot read the session cookie");
}

// Sign-out ends the session.
await p.click('form[action="/console/signout"] button');
const after = await p.goto(`${ADMIN}/`);
check(after.status() === 401, `after sign-out the console asks to sign in (${after.status()})`);

check(cspViolations.length === 0, `no Content-Security-Policy violation (${cspViolations.join("; ")})`);
await browser.close();
console.log("RESULT " + JSON.stringify({ pe1Ip, pe2Ip, failures }));
console.log(`${failures === 0 ? "all passed" : failures + " failed"}`);
process.exit(failures === 0 ? 0 : 1);
