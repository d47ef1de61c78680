#!/usr/bin/env python3
"""Record what the official Huawei Cloud Python SDK (huaweicloudsdkhss v5) puts on the wire.

Research tool, not a test: it drives ``huaweicloudsdkhss.v5.HssClient`` unchanged against a tiny
local recorder (http.server on 127.0.0.1, free port), prints every raw request (request line,
headers in wire order, exact body bytes), re-verifies each SDK-HMAC-SHA256 signature from the
wire bytes alone, and shows what the SDK makes of canned responses (models, exceptions).
It also checks that the installed signer reproduces crates/hss-client/tests/fixtures/signer-vectors.json.

Usage:  .venv/bin/python crates/hss-simulator/conformance/sdk_wire_probe.py [--vectors PATH]
"""
import argparse
import hashlib
import hmac
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote, unquote, urlsplit

AK = "AKPROBE0000000000001"
SK = "SKprobe0000000000000000000000000000000001"
PROJECT = "0123456789abcdef0123456789abcdef"


# ---------------------------------------------------------------- recorder server
class Recorder:
    def __init__(self):
        self.requests = []
        self.responses = []  # queue of (status, headers, body bytes); default 200 {}
        self.lock = threading.Lock()

    def next_response(self):
        with self.lock:
            if self.responses:
                return self.responses.pop(0)
        return 200, {"Content-Type": "application/json"}, b"{}"


def make_handler(rec):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _any(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            with rec.lock:
                rec.requests.append({
                    "request_line": self.raw_requestline.decode("latin-1").rstrip("\r\n"),
                    "method": self.command,
                    "target": self.path,
                    "headers": list(self.headers.items()),
                    "body": body,
                })
            status, headers, payload = rec.next_response()
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = _any

        def log_message(self, *args):
            pass

    return Handler


# ---------------------------------------------------------------- independent verifier
def _enc(s):
    return quote(s, safe="-_.~")


def verify_wire_signature(req, sk):
    """Recompute SDK-HMAC-SHA256 from the raw request exactly as a gateway would."""
    hdrs = {k.lower(): v for k, v in req["headers"]}
    auth = hdrs["authorization"]
    algo, rest = auth.split(" ", 1)
    parts = dict(p.strip().split("=", 1) for p in rest.split(","))
    signed = parts["SignedHeaders"].split(";")
    u = urlsplit(req["target"])
    # As the SDK does: percent-decode the WHOLE path first, then split on "/" (so an encoded
    # "%2F" inside a path parameter becomes a segment separator for signing), then encode.
    path = "/".join(_enc(seg) for seg in unquote(u.path).split("/"))
    if not path.endswith("/"):
        path += "/"
    pairs = []
    if u.query:
        for item in u.query.split("&"):
            k, _, v = item.partition("=")
            pairs.append((_enc(unquote(k)), _enc(unquote(v))))
    pairs.sort()
    cq = "&".join("%s=%s" % kv for kv in pairs)
    ch = "".join("%s:%s\n" % (h, hdrs[h].strip()) for h in signed)
    if hdrs.get("x-sdk-content-sha256") == "UNSIGNED-PAYLOAD":
        ph = "UNSIGNED-PAYLOAD"
    else:
        ph = hashlib.sha256(req["body"]).hexdigest()
    creq = "\n".join([req["method"], path, cq, ch, ";".join(signed), ph])
    sts = "%s\n%s\n%s" % (algo, hdrs["x-sdk-date"], hashlib.sha256(creq.encode()).hexdigest())
    sig = hmac.new(sk.encode(), sts.encode(), hashlib.sha256).hexdigest()
    return sig == parts["Signature"], creq


# ---------------------------------------------------------------- signer vectors
def check_vectors(path):
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkcore.sdk_request import SdkRequest
    from huaweicloudsdkcore.signer.signer import Signer

    with open(path) as f:
        vectors = json.load(f)["vectors"]
    out = []
    for v in vectors:
        if v.get("source") != "sdk":
            continue
        i = v["input"]
        req = SdkRequest(method=i["method"], schema="https", host=i["host"],
                         resource_path=i["resource_path"],
                         query_params=[tuple(p) for p in i["query_params"]],
                         header_params=dict(i["header_params"]),
                         body=i["body"] or None)
        Signer(BasicCredentials(i["ak"], i["sk"])).sign(req)
        got = req.header_params["Authorization"]
        out.append((v["name"], got == v["authorization"], req.uri == v.get("request_uri", req.uri)))
    return out


# ---------------------------------------------------------------- SDK driving
def build_client(endpoint, sk=SK):
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkhss.v5 import HssClient

    return (HssClient.new_builder()
            .with_credentials(BasicCredentials(AK, sk, PROJECT))
            .with_endpoints([endpoint])
            .build())


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--vectors", default=os.path.join(here, "..", "..", "hss-client", "tests", "fixtures", "signer-vectors.json"))
    args = ap.parse_args()

    import huaweicloudsdkcore
    import huaweicloudsdkhss
    from importlib.metadata import version
    from huaweicloudsdkcore.exceptions import exceptions as exc
    from huaweicloudsdkhss.v5 import (
        CreateTaskRequest, CreateTaskRequestBody, CreateTaskRequestBodyClusterScanInfo, CreateTaskRequestBodyIacScanInfo,
        ListTasksRequest, ListTasksRequestBody, ListTasksRequestBodyClusterScanInfo,
        ListTaskResourcesRequest, ListTaskResourcesRequestBody, ListTaskResourcesRequestBodyClusterScanInfo,
        RetryTaskRequest, RetryTaskRequestBody, RetryTaskRequestBodyClusterScanInfo,
        RetryTaskRequestBodyClusterScanInfoClusterInfoList, ShowTaskStatisticsRequest,
        ListKubernetesClusterDetailsRequest,
    )

    print("huaweicloudsdkcore", version("huaweicloudsdkcore"), "huaweicloudsdkhss", version("huaweicloudsdkhss"))
    if os.path.exists(args.vectors):
        for name, ok_auth, ok_uri in check_vectors(args.vectors):
            print("vector %-55s authorization %s, request_uri %s" % (name, "OK" if ok_auth else "MISMATCH",
                                                                     "OK" if ok_uri else "MISMATCH"))

    rec = Recorder()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(rec))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    endpoint = "http://127.0.0.1:%d" % srv.server_address[1]
    client = build_client(endpoint)
    J = {"Content-Type": "application/json"}

    def run(label, fn, response=None):
        if response is not None:
            rec.responses.append(response)
        n = len(rec.requests)
        try:
            result = fn()
            outcome = "OK %s -> %r" % (type(result).__name__, result.to_dict() if hasattr(result, "to_dict") else result)
            if hasattr(result, "status_code"):
                outcome += " status_code=%r" % result.status_code
        except Exception as e:  # report what the SDK raised
            attrs = {a: getattr(e, a) for a in ("status_code", "error_code", "error_msg", "request_id",
                                                "encoded_auth_msg") if hasattr(e, a)}
            outcome = "RAISED %s.%s %r" % (type(e).__module__, type(e).__name__, attrs)
        print("\n=== %s" % label)
        for r in rec.requests[n:]:
            print(r["request_line"])
            for k, v in r["headers"]:
                print("  %s: %s" % (k, v))
            print("  body bytes: %r" % r["body"])
            ok, _ = verify_wire_signature(r, SK)
            print("  signature re-verified from wire bytes: %s" % ok)
        print("  attempts on the wire: %d" % (len(rec.requests) - n))
        print("  ->", outcome)

    cs = CreateTaskRequestBodyClusterScanInfo(scan_type_list=["cluster_vul", "risk_assessment", "benchmark"],
                                              range_type="specific_cluster", cluster_id_list=["c-1", "c-2"])
    run("create_task cluster_scan (enterprise_project_id=0)",
        lambda: client.create_task(CreateTaskRequest(enterprise_project_id="0", body=CreateTaskRequestBody(
            task_type="cluster_scan", cluster_scan_info=cs))),
        (200, {**J, "X-Request-Id": "req-1"}, b'{"task_id":"t-1"}'))
    run("create_task cluster_scan all_cluster, no EP",
        lambda: client.create_task(CreateTaskRequest(body=CreateTaskRequestBody(
            task_type="cluster_scan", cluster_scan_info=CreateTaskRequestBodyClusterScanInfo(
                scan_type_list=["cluster_vul"], range_type="all_cluster")))),
        (200, J, b'{"task_id":"t-2","extra":"ignored"}'))
    run("create_task iac_scan",
        lambda: client.create_task(CreateTaskRequest(body=CreateTaskRequestBody(
            task_type="iac_scan", iac_scan_info=CreateTaskRequestBodyIacScanInfo(
                file_type="k8s_yaml", file_id_list=["f-1"])))),
        (200, J, b'{"task_id":"t-3"}'))
    run("create_task cluster_scan empty scan_type_list (client-side validation?)",
        lambda: client.create_task(CreateTaskRequest(body=CreateTaskRequestBody(
            task_type="cluster_scan", cluster_scan_info=CreateTaskRequestBodyClusterScanInfo(
                scan_type_list=[], range_type="all_cluster")))),
        (400, {**J, "X-Request-Id": "req-400"}, b'{"error_code":"HSS.0001","error_msg":"invalid parameter"}'))
    list_body = {
        "task_type": "cluster_scan", "task_id": "t-1", "task_name": "n", "start_create_time": 1700000000000,
        "end_create_time": 1800000000000, "trigger_type": "manual", "task_status": "finished",
        "sort_key": "start_time", "sort_dir": "desc",
        "cluster_scan_info": ListTasksRequestBodyClusterScanInfo(scan_type_list=["benchmark"]),
    }
    list_resp = json.dumps({"total_num": 1, "data_list": [{
        "task_id": "t-1", "task_type": "cluster_scan", "task_name": "n", "trigger_type": "manual",
        "task_status": "finished", "start_time": 1700000000000, "end_time": 1700000060000, "estimated_time": 1,
        "cluster_scan_info": {"scan_type_list": ["benchmark"], "scanning_cluster_num": 0,
                              "success_cluster_num": 2, "failed_cluster_num": 0},
        "unknown_field": 1}]}).encode()
    run("list_tasks offset/limit/EP + all body filters",
        lambda: client.list_tasks(ListTasksRequest(enterprise_project_id="all_granted_eps", offset=0, limit=200,
                                                   body=ListTasksRequestBody(**list_body))),
        (200, J, list_resp))
    run("list_tasks minimal (task_type only, no query)",
        lambda: client.list_tasks(ListTasksRequest(body=ListTasksRequestBody(task_type="iac_scan"))),
        (200, J, b'{"total_num":0,"data_list":[]}'))
    res_resp = json.dumps({"total_num": 1, "cluster_scan_data_list": [{
        "cluster_name": "a", "cluster_id": "c-1", "cluster_type": "cce", "cluster_version": "v1.28",
        "scan_status": "success", "start_time": 1, "end_time": 2,
        "scan_detail_list": [{"scan_type": "benchmark", "status": "success", "failed_reason": ""}]}]}).encode()
    run("list_task_resources (task id with odd chars)",
        lambda: client.list_task_resources(ListTaskResourcesRequest(
            task_id="t 1/x", offset=10, limit=10, enterprise_project_id="0",
            body=ListTaskResourcesRequestBody(task_type="cluster_scan",
                                              cluster_scan_info=ListTaskResourcesRequestBodyClusterScanInfo(
                                                  scan_status="failed")))),
        (200, J, res_resp))
    run("retry_task (empty 200 body)",
        lambda: client.retry_task(RetryTaskRequest(task_id="t-1", body=RetryTaskRequestBody(
            task_type="cluster_scan", cluster_scan_info=RetryTaskRequestBodyClusterScanInfo(
                range_type="specific_cluster", cluster_info_list=[
                    RetryTaskRequestBodyClusterScanInfoClusterInfoList(cluster_id="c-1", scan_type_list=["benchmark"]),
                    RetryTaskRequestBodyClusterScanInfoClusterInfoList(cluster_id="c-2")])))),
        (200, {}, b""))
    run("retry_task all_failed_cluster (204, no content-type)",
        lambda: client.retry_task(RetryTaskRequest(task_id="t-1", body=RetryTaskRequestBody(
            task_type="cluster_scan", cluster_scan_info=RetryTaskRequestBodyClusterScanInfo(
                range_type="all_failed_cluster")))),
        (204, {}, b""))
    run("show_task_statistics",
        lambda: client.show_task_statistics(ShowTaskStatisticsRequest(task_type="cluster_scan",
                                                                      enterprise_project_id="0")),
        (200, J, b'{"total_num":3,"running_num":1,"last_task_start_time":1700000000000}'))
    run("list_kubernetes_cluster_details",
        lambda: client.list_kubernetes_cluster_details(ListKubernetesClusterDetailsRequest(
            offset=0, limit=10, cluster_name="my cluster", load_agent_info=True)),
        (200, J, b'{"total_num":1,"last_update_time":5,"cluster_info_list":[{"cluster_id":"c-1",'
                 b'"cluster_name":"a","cluster_type":"cce","status":"Available","version":"v1.28"}]}'))

    # ---- errors
    run("400 HSS.0001 on POST",
        lambda: client.list_tasks(ListTasksRequest(body=ListTasksRequestBody(task_type="cluster_scan"))),
        (400, {**J, "X-Request-Id": "rid-400"}, b'{"error_code":"HSS.0001","error_msg":"invalid parameter"}'))
    run("401 APIGW.0301 on POST",
        lambda: client.list_tasks(ListTasksRequest(body=ListTasksRequestBody(task_type="cluster_scan"))),
        (401, {**J, "X-Request-Id": "rid-401"},
         b'{"error_code":"APIGW.0301","error_msg":"Incorrect IAM authentication information",'
         b'"request_id":"rid-401"}'))
    run("429 APIGW.0308 on POST (create_task)",
        lambda: client.create_task(CreateTaskRequest(body=CreateTaskRequestBody(
            task_type="cluster_scan", cluster_scan_info=cs))),
        (429, {**J, "X-Request-Id": "rid-429"},
         b'{"error_code":"APIGW.0308","error_msg":"The throttling threshold has been reached",'
         b'"request_id":"rid-429"}'))
    run("429 APIGW.0308 on GET (show_task_statistics)",
        lambda: client.show_task_statistics(ShowTaskStatisticsRequest(task_type="cluster_scan")),
        (429, {**J, "X-Request-Id": "rid-429g"},
         b'{"error_code":"APIGW.0308","error_msg":"The throttling threshold has been reached"}'))
    run("429 APIGW.0308 on PUT (retry_task)",
        lambda: client.retry_task(RetryTaskRequest(task_id="t-1", body=RetryTaskRequestBody(
            task_type="cluster_scan", cluster_scan_info=RetryTaskRequestBodyClusterScanInfo(
                range_type="all_failed_cluster")))),
        (429, {**J, "x-request-id": "rid-429p"},
         b'{"error_code":"APIGW.0308","error_msg":"The throttling threshold has been reached"}'))
    run("500 non-JSON body",
        lambda: client.show_task_statistics(ShowTaskStatisticsRequest(task_type="cluster_scan")),
        (500, {"Content-Type": "text/plain"}, b"boom"))
    run("302 redirect (allow_redirects False)",
        lambda: client.show_task_statistics(ShowTaskStatisticsRequest(task_type="cluster_scan")),
        (302, {"Location": "/elsewhere"}, b""))
    run("200 with non-JSON body",
        lambda: client.show_task_statistics(ShowTaskStatisticsRequest(task_type="cluster_scan")),
        (200, {"Content-Type": "text/plain"}, b"not json"))
    # read timeout / connection refused / with_endpoint(str)
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkcore.http.http_config import HttpConfig
    from huaweicloudsdkhss.v5 import HssClient
    import socket
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    cfg = HttpConfig.get_default_config()
    cfg.timeout = (2, 1)
    slow = (HssClient.new_builder().with_http_config(cfg)
            .with_credentials(BasicCredentials(AK, SK, PROJECT))
            .with_endpoint("http://127.0.0.1:%d" % silent.getsockname()[1]).build())
    for label, c in (("read timeout (server accepts, never answers)", slow),
                     ("connection refused", build_client("http://127.0.0.1:1"))):
        try:
            c.show_task_statistics(ShowTaskStatisticsRequest(task_type="cluster_scan"))
            print("\n=== %s -> no exception?!" % label)
        except Exception as e:
            print("\n=== %s -> RAISED %s.%s: %s" % (label, type(e).__module__, type(e).__name__, str(e)[:160]))
    silent.close()
    print("\nexception hierarchy:", " < ".join(c.__name__ for c in exc.ClientRequestException.__mro__))
    srv.shutdown()


if __name__ == "__main__":
    sys.exit(main())
