"""The image smoke test's Kubernetes side: install the CRDs (before the operator starts), then
create one ClusterScanTask and wait (bounded) until it reaches a final phase.

    python scripts/deploy/smoke.py crds CRDS_YAML TIMEOUT_SECONDS
    python scripts/deploy/smoke.py scan NAMESPACE TIMEOUT_SECONDS

Talks to the API server in KUBE_SERVER with ADMIN_TOKEN and the CA in KUBE_CA (what
scripts/control-plane.sh writes). Exits 0 when the scan Succeeded, 1 otherwise, printing the
object. Run with the deploy venv's python (PyYAML; scripts/deploy-venv.sh).
"""
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request

import yaml

SERVER = os.environ["KUBE_SERVER"]
TOKEN = os.environ["ADMIN_TOKEN"]
CTX = ssl.create_default_context(cafile=os.environ["KUBE_CA"])


def call(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(SERVER + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {TOKEN}")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, context=CTX, timeout=10) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def until(what, deadline, check):
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.5)
    raise SystemExit(f"smoke: timed out waiting for {what}")


def install_crds(crds_file, deadline):
    base = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    for crd in yaml.safe_load_all(open(crds_file)):
        if not crd:
            continue
        status, body = call("POST", base, crd)
        if status not in (201, 409):
            raise SystemExit(f"smoke: create CRD {crd['metadata']['name']}: {status} {body}")
        name = crd["metadata"]["name"]
        until(f"CRD {name} established", deadline, lambda: any(
            c["type"] == "Established" and c["status"] == "True"
            for c in (call("GET", f"{base}/{name}")[1].get("status") or {}).get("conditions") or []))
    return 0


def scan_to_the_end(namespace, deadline):
    call("POST", "/api/v1/namespaces", {"metadata": {"name": namespace}})
    scans = f"/apis/hss.scanops.dev/v1alpha1/namespaces/{namespace}/clusterscantasks"
    scan = {
        "apiVersion": "hss.scanops.dev/v1alpha1", "kind": "ClusterScanTask",
        "metadata": {"name": "smoke"},
        "spec": {"taskType": "cluster_scan",
                 "clusterScan": {"rangeType": "all_cluster", "scanTypes": ["cluster_vul"]}},
    }
    # The CRD may take a moment to be served after Established.
    until("the ClusterScanTask to be created", deadline,
          lambda: call("POST", scans, scan)[0] in (201, 409))
    final = {"Succeeded", "PartiallyFailed", "Failed"}
    obj = until("a final phase", deadline, lambda: (
        lambda o: o if (o.get("status") or {}).get("phase") in final else None)(
            call("GET", f"{scans}/smoke")[1]))
    print(json.dumps(obj.get("status"), indent=1))
    return 0 if obj["status"]["phase"] == "Succeeded" else 1


def main(argv):
    if len(argv) != 4 or argv[1] not in ("crds", "scan"):
        print(__doc__, file=sys.stderr)
        return 2
    deadline = time.monotonic() + float(argv[3])
    if argv[1] == "crds":
        return install_crds(argv[2], deadline)
    return scan_to_the_end(argv[2], deadline)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
