// Two JavaScript FHIR clients, as published on npm (pinned in package.json and
// package-lock.json), drive fhirlink's batch and transaction Bundles whose entries are full
// interactions: searches at the type, compartment and system levels, histories and
// conditional reads (FHIR R4 http.html#transaction).
//
//   fhir-kit-client: `client.batch` with search, history and read entries; `client.transaction`
//     mixing writes and searches (the searches must see the writes: GETs run last, FHIR R4
//     http.html#trules); transactions with a failing entry (a stale If-Match, a conditional
//     reference that matches nothing, a search the server refuses), which must leave nothing
//     behind.
//   @medplum/core: MedplumClient's auto-batching, which gathers the GETs issued within
//     `autoBatchTime` into one batch Bundle posted to the base; the fetch it is given records
//     every request, so that the test knows they really went out as one batch.
//
// Usage: node sdk-tests/js/clients.mjs <FHIR base URL>   (plain HTTP, no authentication)
// Prints one line per check and a last line `N passed, M failed`; exits 1 on any failure.
// crates/fhirlink/tests/sdk_js.rs runs it against the real binary.

import { randomUUID } from 'node:crypto';
import { MedplumClient } from '@medplum/core';
import { Client } from 'fhir-kit-client';

const base = (process.argv[2] ?? '').replace(/\/+$/, '');
if (!/^https?:\/\//.test(base)) {
  console.error('usage: node clients.mjs <FHIR base URL>');
  process.exit(2);
}

// Every resource of a run carries its tag, so that the searches count only what this run
// wrote, whatever else the server holds.
const tag = `sdkjs${randomUUID().replaceAll('-', '').slice(0, 12)}`;
const IDENT = 'urn:fhirlink:sdk-js:identifier';
const CODES = `urn:fhirlink:sdk-js:${tag}`;

let passed = 0;
let failed = 0;

async function check(name, body) {
  try {
    await body();
    passed += 1;
    console.log(`ok    ${name}`);
  } catch (err) {
    failed += 1;
    console.log(`FAIL  ${name}: ${describe(err)}`);
  }
}

// An error with what the server answered, when there is an answer.
function describe(err) {
  if (err?.response) {
    return `${err.message}: ${JSON.stringify(err.response.data)}`;
  }
  if (err?.outcome) {
    return `${err.message}: ${JSON.stringify(err.outcome)}`;
  }
  if (err instanceof CheckFailed) {
    return err.message;
  }
  return err?.stack ?? String(err);
}

class CheckFailed extends Error {}

function assert(cond, msg, detail) {
  if (!cond) {
    throw new CheckFailed(detail === undefined ? msg : `${msg}: ${JSON.stringify(detail)}`);
  }
}

function equal(actual, expected, what) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  assert(a === e, `${what}: expected ${e}, got ${a}`);
}

// `200 OK` → 200.
function statusOf(entry) {
  return Number.parseInt(entry?.response?.status ?? '', 10);
}

function ids(bundle) {
  return (bundle?.entry ?? []).map((e) => e.resource?.id).sort();
}

// A response entry that must be `status` with a Bundle of `type` as its resource.
function bundleEntry(entry, type, what, status = 200) {
  equal(statusOf(entry), status, `${what}: response.status`);
  const b = entry.resource;
  assert(b?.resourceType === 'Bundle', `${what}: the entry's resource is not a Bundle`, entry);
  equal(b.type, type, `${what}: Bundle.type`);
  return b;
}

const kit = new Client({ baseUrl: base });

// What the fhir-kit-client part made, for the Medplum part.
const made = {};

function patient(given, gender, identifier) {
  return {
    resourceType: 'Patient',
    identifier: [{ system: IDENT, value: `${tag}-${identifier}` }],
    name: [{ family: tag, given: [given] }],
    gender,
  };
}

function observation(subject, code, value) {
  return {
    resourceType: 'Observation',
    status: 'final',
    code: { coding: [{ system: CODES, code }] },
    subject: { reference: subject },
    valueQuantity: { value, unit: 'beats/min', system: 'http://unitsofmeasure.org', code: '/min' },
  };
}

async function search(resourceType, searchParams) {
  return kit.search({ resourceType, searchParams });
}

async function fhirKitClient() {
  await check('fhir-kit-client: create Patients and Observations', async () => {
    made.ann = await kit.create({ resourceType: 'Patient', body: patient('Ann', 'female', 'ann') });
    made.bea = await kit.create({ resourceType: 'Patient', body: patient('Bea', 'female', 'bea') });
    made.carl = await kit.create({ resourceType: 'Patient', body: patient('Carl', 'male', 'carl') });
    // Ann: six heart rates; Bea: one heart rate and one of another code.
    for (let i = 0; i < 6; i += 1) {
      await kit.create({ resourceType: 'Observation', body: observation(`Patient/${made.ann.id}`, 'hr', 60 + i) });
    }
    await kit.create({ resourceType: 'Observation', body: observation(`Patient/${made.bea.id}`, 'hr', 70) });
    await kit.create({ resourceType: 'Observation', body: observation(`Patient/${made.bea.id}`, 'rr', 16) });
    // A second version of Ann, for her history.
    made.ann = await kit.update({
      resourceType: 'Patient',
      id: made.ann.id,
      body: { ...made.ann, birthDate: '1980-02-29' },
    });
    equal(made.ann.meta?.versionId, '2', "Ann's version after an update");
  });

  const ann = made.ann?.id;
  const bea = made.bea?.id;

  await check('fhir-kit-client: batch of searches at every level, a history, reads, HEAD and a conditional read', async () => {
    const response = await kit.batch({
      body: {
        resourceType: 'Bundle',
        type: 'batch',
        entry: [
          { request: { method: 'GET', url: `Patient?gender=female&family=${tag}` } },
          { request: { method: 'GET', url: `Patient/${ann}/Observation` } },
          { request: { method: 'GET', url: `Observation?code=${CODES}|hr&_count=5&_total=accurate` } },
          { request: { method: 'GET', url: `Patient/${ann}/_history` } },
          { request: { method: 'GET', url: `Patient/${bea}` } },
          // Not modified since the version the client holds (FHIR R4 bundle.html
          // #Bundle.entry.request.ifNoneMatch).
          { request: { method: 'GET', url: `Patient/${ann}`, ifNoneMatch: 'W/"2"' } },
          { request: { method: 'GET', url: `Patient/${randomUUID()}` } },
          { request: { method: 'HEAD', url: `Patient/${bea}` } },
          // The shape MedplumClient sends with its default fhirUrlPath: a leading slash.
          { request: { method: 'GET', url: `/Patient?gender=male&family=${tag}` } },
          // A system-level search: every type, by id.
          { request: { method: 'GET', url: `?_id=${ann},${made.carl.id}` } },
        ],
      },
    });
    equal(response.resourceType, 'Bundle', 'resourceType');
    equal(response.type, 'batch-response', 'Bundle.type');
    const e = response.entry ?? [];
    equal(e.length, 10, 'response entries');

    const women = bundleEntry(e[0], 'searchset', 'Patient?gender=female');
    equal(women.total, 2, 'Patient?gender=female: total');
    equal(ids(women), [ann, bea].sort(), 'Patient?gender=female: ids');

    const annObs = bundleEntry(e[1], 'searchset', 'Patient/<id>/Observation');
    equal(annObs.total, 6, 'Patient/<id>/Observation: total');
    assert(
      annObs.entry.every((x) => x.resource.subject?.reference === `Patient/${ann}`),
      "Patient/<id>/Observation: an Observation outside Ann's compartment",
      annObs.entry.map((x) => x.resource.subject),
    );

    const hr = bundleEntry(e[2], 'searchset', 'Observation?code=…&_count=5');
    equal(hr.total, 7, 'Observation?code=…: total');
    equal(hr.entry?.length, 5, 'Observation?code=…&_count=5: entries on the first page');
    assert(
      (hr.link ?? []).some((l) => l.relation === 'next'),
      'Observation?code=…&_count=5: no next link',
      hr.link,
    );

    const history = bundleEntry(e[3], 'history', 'Patient/<id>/_history');
    equal(history.total, 2, 'Patient/<id>/_history: total');
    equal(
      history.entry.map((x) => x.resource?.meta?.versionId),
      ['2', '1'],
      'Patient/<id>/_history: versions, newest first',
    );

    equal(statusOf(e[4]), 200, 'read: response.status');
    equal(e[4].resource?.id, bea, 'read: id');
    equal(e[4].resource?.resourceType, 'Patient', 'read: resourceType');

    equal(statusOf(e[5]), 304, 'conditional read of the current version: response.status');
    assert(e[5].resource === undefined, 'conditional read: a 304 carries no resource', e[5]);

    equal(statusOf(e[6]), 404, 'read of an unknown id: response.status');
    equal(e[6].response?.outcome?.resourceType, 'OperationOutcome', 'read of an unknown id: outcome');

    equal(statusOf(e[7]), 200, 'HEAD: response.status');
    assert(e[7].resource === undefined, 'HEAD: the entry carries a resource', e[7]);
    equal(e[7].response?.etag, 'W/"1"', 'HEAD: etag');

    const men = bundleEntry(e[8], 'searchset', '/Patient?gender=male');
    equal(ids(men), [made.carl.id], '/Patient?gender=male: ids');

    const any = bundleEntry(e[9], 'searchset', '?_id=…');
    equal(any.total, 2, '?_id=…: total');
    equal(ids(any), [ann, made.carl.id].sort(), '?_id=…: ids');
  });

  await check('fhir-kit-client: transaction whose searches see its writes', async () => {
    const newPatient = `urn:uuid:${randomUUID()}`;
    // The GETs come first in the Bundle; FHIR R4 http.html#trules runs them after the writes.
    const response = await kit.transaction({
      body: {
        resourceType: 'Bundle',
        type: 'transaction',
        entry: [
          { request: { method: 'GET', url: `Patient?gender=female&family=${tag}` } },
          { request: { method: 'GET', url: `Observation?code=${CODES}|hr` } },
          { request: { method: 'GET', url: `Patient/${ann}` } },
          {
            fullUrl: newPatient,
            resource: patient('Dora', 'female', 'dora'),
            request: { method: 'POST', url: 'Patient' },
          },
          {
            resource: { ...made.ann, birthDate: '1980-03-01' },
            request: { method: 'PUT', url: `Patient/${ann}`, ifMatch: 'W/"2"' },
          },
          {
            resource: observation(newPatient, 'hr', 80),
            request: { method: 'POST', url: 'Observation' },
          },
        ],
      },
    });
    equal(response.type, 'transaction-response', 'Bundle.type');
    const e = response.entry ?? [];
    equal(e.length, 6, 'response entries (in the order of the request)');

    equal(statusOf(e[3]), 201, 'POST Patient: response.status');
    const dora = /^Patient\/([^/]+)\/_history\/1$/.exec(e[3].response?.location ?? '')?.[1];
    assert(dora, 'POST Patient: location is not Patient/<id>/_history/1', e[3].response);
    equal(statusOf(e[4]), 200, 'PUT Patient/<id>: response.status');
    equal(e[4].response?.etag, 'W/"3"', 'PUT Patient/<id>: etag');
    equal(statusOf(e[5]), 201, 'POST Observation: response.status');

    const women = bundleEntry(e[0], 'searchset', 'GET Patient?gender=female');
    equal(women.total, 3, 'GET Patient?gender=female: total (with the Patient this transaction posted)');
    equal(ids(women), [ann, bea, dora].sort(), 'GET Patient?gender=female: ids');

    const hr = bundleEntry(e[1], 'searchset', 'GET Observation?code=…');
    equal(hr.total, 8, 'GET Observation?code=…: total (with the Observation this transaction posted)');
    const posted = hr.entry.find((x) => x.resource.valueQuantity?.value === 80);
    equal(posted?.resource?.subject?.reference, `Patient/${dora}`, "the posted Observation's subject");

    equal(statusOf(e[2]), 200, 'GET Patient/<id>: response.status');
    equal(e[2].resource?.meta?.versionId, '3', 'GET Patient/<id>: the version this transaction wrote');
    equal(e[2].resource?.birthDate, '1980-03-01', 'GET Patient/<id>: birthDate');
    made.ann = e[2].resource;
    made.dora = dora;
  });

  // A transaction is all or nothing (FHIR R4 http.html#transaction): after a failing entry,
  // none of its writes may be found.
  async function rolledBack(name, entries, status) {
    await check(`fhir-kit-client: ${name}`, async () => {
      const bea0 = await kit.read({ resourceType: 'Patient', id: bea });
      let error;
      try {
        const r = await kit.transaction({ body: { resourceType: 'Bundle', type: 'transaction', entry: entries } });
        throw new CheckFailed(`the transaction succeeded: ${JSON.stringify(r)}`);
      } catch (err) {
        if (!err.response) throw err;
        error = err;
      }
      assert(
        error.response.status === status,
        `status ${error.response.status}, expected ${status}`,
        error.response.data,
      );
      equal(error.response.data?.resourceType, 'OperationOutcome', 'the error body');
      const left = await search('Patient', { identifier: `${IDENT}|${tag}-rollback` });
      equal(left.total, 0, 'Patients the failed transaction posted');
      const obs = await search('Observation', { code: `${CODES}|rollback` });
      equal(obs.total, 0, 'Observations the failed transaction posted');
      const bea1 = await kit.read({ resourceType: 'Patient', id: bea });
      equal(bea1.meta?.versionId, bea0.meta?.versionId, "Bea's version after the failed transaction");
      equal(bea1.birthDate, bea0.birthDate, "Bea's birthDate after the failed transaction");
      const women = await search('Patient', { gender: 'female', family: tag });
      equal(women.total, 3, 'Patient?gender=female after the failed transaction');
    });
  }

  const rollbackPatient = () => ({
    fullUrl: `urn:uuid:${randomUUID()}`,
    resource: patient('Eve', 'female', 'rollback'),
    request: { method: 'POST', url: 'Patient' },
  });

  await rolledBack(
    'transaction with a stale If-Match rolls back',
    (() => {
      const p = rollbackPatient();
      return [
        p,
        { resource: observation(p.fullUrl, 'rollback', 1), request: { method: 'POST', url: 'Observation' } },
        {
          resource: { ...made.bea, birthDate: '1999-09-09' },
          request: { method: 'PUT', url: `Patient/${bea}`, ifMatch: 'W/"99"' },
        },
        { request: { method: 'GET', url: `Patient?gender=female&family=${tag}` } },
      ];
    })(),
    412,
  );

  await rolledBack(
    'transaction with a conditional reference that matches nothing rolls back',
    [
      rollbackPatient(),
      {
        resource: { ...made.bea, birthDate: '1999-09-09' },
        request: { method: 'PUT', url: `Patient/${bea}` },
      },
      {
        resource: observation(`Patient?identifier=${IDENT}|${tag}-nobody`, 'rollback', 2),
        request: { method: 'POST', url: 'Observation' },
      },
      { request: { method: 'GET', url: `Observation?code=${CODES}|hr` } },
    ],
    404,
  );

  // The search runs after the writes, yet its refusal must undo them.
  await rolledBack(
    'transaction with a search entry the server refuses rolls back',
    [
      rollbackPatient(),
      {
        resource: { ...made.bea, birthDate: '1999-09-09' },
        request: { method: 'PUT', url: `Patient/${bea}` },
      },
      { request: { method: 'GET', url: `Patient?family=${tag}&birthdate=not-a-date` } },
    ],
    400,
  );
}

async function medplum() {
  const ann = made.ann?.id;
  const dora = made.dora;
  // Every request the client makes, as it made it.
  const sent = [];
  const recordingFetch = async (url, init) => {
    sent.push({ url: String(url), method: init?.method ?? 'GET', body: init?.body });
    return fetch(url, init);
  };
  const client = new MedplumClient({
    baseUrl: `${base}/`,
    // Our base is the FHIR base itself (Medplum's default puts it at fhir/R4).
    fhirUrlPath: '',
    fetch: recordingFetch,
    autoBatchTime: 100,
    cacheTime: 0,
  });

  await check('@medplum/core: concurrent reads and searches go out as one batch', async () => {
    sent.length = 0;
    const missing = randomUUID();
    const [women, annRead, annObs, hr, gone] = await Promise.all([
      client.searchResources('Patient', `gender=female&family=${tag}`),
      client.readResource('Patient', ann),
      client.search('Observation', { subject: `Patient/${ann}` }),
      client.searchResources('Observation', { code: `${CODES}|hr`, _count: 5, _total: 'accurate' }),
      client.readResource('Patient', missing).then(
        (r) => ({ resolved: r }),
        (err) => ({ rejected: err }),
      ),
    ]);

    equal(
      sent.map((r) => `${r.method} ${r.url}`),
      [`POST ${base}/`],
      'the requests MedplumClient made',
    );
    const batch = JSON.parse(sent[0].body);
    equal(batch.type, 'batch', 'the posted Bundle.type');
    equal(
      batch.entry.map((x) => x.request.method),
      ['GET', 'GET', 'GET', 'GET', 'GET'],
      'the posted entries',
    );

    equal(women.map((p) => p.id).sort(), [ann, made.bea.id, dora].sort(), 'searchResources Patient?gender=female');
    equal(women.bundle?.total, 3, 'searchResources Patient?gender=female: total');
    equal(annRead.id, ann, 'readResource Patient: id');
    equal(annRead.meta?.versionId, '3', 'readResource Patient: version');
    equal(annObs.resourceType, 'Bundle', 'search Observation?subject: resourceType');
    equal(annObs.type, 'searchset', 'search Observation?subject: Bundle.type');
    equal(annObs.total, 6, 'search Observation?subject: total');
    equal(hr.length, 5, 'searchResources Observation?code&_count=5: resources');
    equal(hr.bundle?.total, 8, 'searchResources Observation?code&_count=5: total');
    assert(gone.rejected, 'readResource of an unknown id resolved', gone.resolved);
    const issue = gone.rejected.outcome?.issue?.[0];
    equal(issue?.code, 'not-found', 'readResource of an unknown id: the issue code');
  });

  await check('@medplum/core: a lone request is not batched', async () => {
    sent.length = 0;
    const p = await client.readResource('Patient', ann);
    equal(p.id, ann, 'readResource Patient: id');
    equal(
      sent.map((r) => `${r.method} ${r.url}`),
      [`GET ${base}/Patient/${ann}`],
      'the requests MedplumClient made',
    );
  });
}

try {
  await fhirKitClient();
  await medplum();
} catch (err) {
  failed += 1;
  console.log(`FAIL  unexpected error: ${describe(err)}`);
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
