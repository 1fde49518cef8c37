#!/usr/bin/env bash
# Seeds fuzz/corpus/<target>/ from the repository's own fixtures (testdata/synthea,
# testdata/fhirpath-r4), the committed hand-made seeds in fuzz/seeds/<target>/ (ARM requests
# after crates/link-api/tests/contracts.rs, patches, bundles, DNS queries, JWTs), and, when
# FHIRLINK_TEST_DATA is set (scripts/fetch-test-data), a sample of HL7's R4 examples.
# fuzz/corpus is not committed (fuzz/.gitignore): the fuzzer grows it there.
set -euo pipefail
cd "$(dirname "$0")"
root=..
targets="resource_json search_query fhirpath fhirpath_patch json_patch bundle jwt dns arm"
for t in $targets; do
    mkdir -p "corpus/$t"
    if [ -d "seeds/$t" ]; then cp -f seeds/"$t"/* "corpus/$t/"; fi
done
ROOT="$root" python3 - <<'PY'
import gzip, hashlib, json, os, re, tarfile, glob, random
root = os.environ["ROOT"]
def put(target, data):
    if isinstance(data, str): data = data.encode()
    name = hashlib.sha1(data).hexdigest()
    with open(f"corpus/{target}/{name}", "wb") as f: f.write(data)

random.seed(15)
# Synthea: single resources (resource_json), small bundles (bundle).
for path in sorted(glob.glob(f"{root}/testdata/synthea/*.json.gz")):
    bundle = json.load(gzip.open(path))
    entries = bundle.get("entry", [])
    seen = set()
    for e in entries:
        r = e["resource"]
        if r["resourceType"] in seen: continue
        seen.add(r["resourceType"])
        put("resource_json", json.dumps(r))
    small = entries[:4]
    put("bundle", json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": small}))
    put("bundle", json.dumps({"resourceType": "Bundle", "type": "batch", "entry": small}))

# FHIRPath suite: every expression, and the inputs as resources.
xml = open(f"{root}/testdata/fhirpath-r4/tests-fhir-r4.xml", encoding="utf-8").read()
import html
for m in re.finditer(r"<expression[^>]*>(.*?)</expression>", xml, re.S):
    put("fhirpath", html.unescape(m.group(1)))
for path in sorted(glob.glob(f"{root}/testdata/fhirpath-r4/input-json/*.json")):
    data = open(path, "rb").read()
    if len(data) < 64 * 1024: put("resource_json", data)

# HL7's R4 examples, a sample of 300, when fetched.
td = os.environ.get("FHIRLINK_TEST_DATA")
if td:
    tgz = glob.glob(f"{td}/fhir-r4-examples/*.tgz")
    if tgz:
        with tarfile.open(tgz[0]) as t:
            members = [m for m in t.getmembers() if m.isfile() and m.name.endswith(".json") and m.size < 32 * 1024]
            for m in random.sample(members, min(300, len(members))):
                data = t.extractfile(m).read()
                put("resource_json", data)
                try:
                    doc = json.loads(data)
                except Exception:
                    continue
                if doc.get("resourceType") == "Bundle" and doc.get("type") in ("batch", "transaction"):
                    put("bundle", data)
                if doc.get("resourceType") == "Parameters":
                    put("fhirpath_patch", data)
PY
for t in $targets; do echo "$t: $(ls "corpus/$t" | wc -l) seeds"; done
