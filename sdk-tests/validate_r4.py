"""Validates FHIR R4 resources with a third-party validator, fhir.resources (pydantic models
of R4 4.0.1, pinned in validator-requirements.txt): element names, cardinality (mandatory
elements included), primitive formats, choice types.

Usage: python validate_r4.py FILE.ndjson  -- one resource per line, each line
`<label>\t<resource JSON>`. Prints `FAIL <label>: <error>` for each resource that does not
validate, then `validated N, failed M`; exits 1 when M > 0.
"""

import json
import sys

import fhir.resources
from fhir.resources import construct_fhir_element


def main(path):
    assert fhir.resources.__fhir_version__ == "4.0.1", fhir.resources.__fhir_version__
    validated = failed = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            label, text = line.split("\t", 1)
            resource = json.loads(text)
            try:
                construct_fhir_element(resource["resourceType"], resource)
            except Exception as e:  # pydantic.ValidationError, or an unknown type
                failed += 1
                message = " ".join(str(e).split())
                print(f"FAIL {label}: {message[:2000]}")
            validated += 1
    print(f"validated {validated}, failed {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
