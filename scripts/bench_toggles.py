#!/usr/bin/env python3
"""Toggles a FHIR service's publicNetworkAccess through the management API and, as soon as
each call returns, sends one data-plane request on a kept-alive connection to the public
listener. A request sent after the call returned must be served the new way (403 when
Disabled, 200 when Enabled): the script counts the ones that were not, and times the calls.

Standard library only. Used by scripts/bench-network."""

import argparse
import http.client
import json
import ssl
import statistics
import sys
import time
from urllib.parse import urlparse


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--admin", required=True, help="https://127.0.0.1:PORT")
    p.add_argument("--ca", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--service-id", required=True)
    p.add_argument("--data-plane", required=True, help="HOST:PORT of the public listener")
    p.add_argument("--host", required=True, help="the Host header naming the service")
    p.add_argument("--toggles", type=int, default=1000)
    p.add_argument("--data-ca", help="the CA of the data plane's HTTPS (plain HTTP without it)")
    a = p.parse_args()

    admin = urlparse(a.admin)
    ctx = ssl.create_default_context(cafile=a.ca)
    mgmt = http.client.HTTPSConnection(admin.hostname, admin.port, context=ctx, timeout=30)
    host, port = a.data_plane.rsplit(":", 1)
    if a.data_ca:
        data = http.client.HTTPSConnection(
            host, int(port), timeout=30, context=ssl.create_default_context(cafile=a.data_ca)
        )
    else:
        data = http.client.HTTPConnection(host, int(port), timeout=30)
    path = f"{a.service_id}?api-version=2024-03-31"
    headers = {"Authorization": f"Bearer {a.token}", "Content-Type": "application/json"}

    stale = 0
    call_ms = []
    for i in range(a.toggles):
        access = "Disabled" if i % 2 == 0 else "Enabled"
        expected = 403 if access == "Disabled" else 200
        body = json.dumps({"properties": {"publicNetworkAccess": access}})
        t0 = time.perf_counter()
        mgmt.request("PATCH", path, body=body, headers=headers)
        r = mgmt.getresponse()
        r.read()
        call_ms.append((time.perf_counter() - t0) * 1000)
        if r.status != 200:
            print(f"toggle {i}: management call answered {r.status}", file=sys.stderr)
            return 1
        data.request("GET", "/metadata", headers={"Host": a.host})
        d = data.getresponse()
        d.read()
        if d.status != expected:
            stale += 1
            print(f"toggle {i}: {access} but the next request got {d.status}", file=sys.stderr)
    call_ms.sort()
    p99 = call_ms[int(len(call_ms) * 0.99) - 1]
    print(
        f"{a.toggles} toggles: {stale} requests served the old way; "
        f"management call median {statistics.median(call_ms):.2f} ms, p99 {p99:.2f} ms"
    )
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
