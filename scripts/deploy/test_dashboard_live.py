"""The dashboard and the alerts on a real Prometheus (Debian's, from scripts/prometheus.sh)
scraping a running operator after real scans.

One stack for the module: a throw-away control plane (scripts/control-plane.sh), the HSS
simulator, `hss-operator run` as the restricted user the control plane provides
(system:serviceaccount:hss-system:hss-operator, bound to exactly what `hss-operator permissions`
asks for in three namespaces), its metrics plain (--metrics-insecure) and scraped every second
the way the chart's ServiceMonitor labels them (target labels namespace, pod and job, so the
operator's own namespace label arrives as exported_namespace), and the chart's rules loaded.
team-b and team-c each run a sample scan; team-d's scan cannot be written (its RoleBinding is
swapped for a read-only one after the start-up check), so reconciles fail there.

Then every panel's query, its variables filled in as Grafana fills them (All, and one value),
must return at least one series, the findings the dashboard shows must agree with the
ClusterScanTasks' status.findings, and the alerts must be in the state the data calls for.

Needs the binaries of `cargo build --workspace --bins` (HSS_OPERATOR_BIN, HSS_SIMULATOR_BIN
override them) and the kube-apiserver and etcd of scripts/kube-apiserver.sh (KUBE_APISERVER_BIN,
ETCD_BIN), as scripts/test.sh provides.
"""
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
import yaml

import monitoring
from monitoring import render

ROOT = monitoring.ROOT
OPERATOR_NS = "hss-system"  # the control plane's restricted user is this namespace's hss-operator
RELEASE = "hss-operator"
GROUP = "hss.scanops.dev"
FINISHED = {"Succeeded", "PartiallyFailed", "Failed"}
SCANS = {"team-b": "cluster-scan-all.yaml", "team-c": "cluster-scan-specific.yaml", "team-d": "cluster-scan-specific.yaml"}
WRITABLE = ("team-b", "team-c")


def binary(env, default):
    path = os.environ.get(env) or str(ROOT / default)
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is missing: run cargo build --locked --workspace --bins (or set {env})")
    return path


def until(what, probe, timeout=120.0, every=0.25):
    """probe()'s first truthy result, polled until timeout; fails naming what was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


class Kube:
    """The few API calls the stack needs, with a bearer token (no client library in the venv)."""

    def __init__(self, server, token, ca):
        self.server, self.token = server, token
        self.tls = ssl.create_default_context(cafile=ca)

    def call(self, method, path, body=None, ok=(200, 201)):
        req = urllib.request.Request(self.server + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, context=self.tls, timeout=10) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            if e.code in ok:
                return {}
            raise AssertionError(f"{method} {path}: {e.code} {e.read().decode(errors='replace')}") from None

    def create(self, path, obj):
        return self.call("POST", path, obj)

    def tasks(self, ns):
        return self.call("GET", f"/apis/{GROUP}/v1alpha1/namespaces/{ns}/clusterscantasks")["items"]

    def may(self, verb, ns, resource="clusterscantasks", group=GROUP):
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                  "spec": {"resourceAttributes": {"verb": verb, "group": group, "resource": resource, "namespace": ns}}}
        return self.create("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", review)["status"]["allowed"]


def rbac(kube, needs):
    """The operator's needs (`hss-operator permissions`) as a ClusterRole bound in each namespace,
    and a read-only ClusterRole (no writes to ClusterScanTasks) for the namespace that fails."""
    rules = {}
    for n in needs:
        res = n["resource"] + (f"/{n['subresource']}" if n["subresource"] else "")
        rules.setdefault((n["group"], res), set()).add(n["verb"])
    role = lambda name, keep: {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name},
                               "rules": [{"apiGroups": [g], "resources": [r], "verbs": sorted(v & keep(g, r))}
                                         for (g, r), v in sorted(rules.items()) if v & keep(g, r)]}
    everything = lambda g, r: {"get", "list", "watch", "create", "patch", "update"}
    read_only = lambda g, r: {"get", "list", "watch"} if g == GROUP else everything(g, r)
    for name, keep in (("hss-scanner", everything), ("hss-scanner-read-only", read_only)):
        kube.create("/apis/rbac.authorization.k8s.io/v1/clusterroles", role(name, keep))


def bind(kube, ns, role):
    kube.create(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "hss-operator"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "User", "name": f"system:serviceaccount:{OPERATOR_NS}:hss-operator"}]})


def log_field(path, message, field):
    """field of the first JSON log line of path whose message starts with message."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return None
    for line in lines:
        try:
            fields = json.loads(line).get("fields", {})
        except ValueError:
            continue
        if fields.get("message", "").startswith(message):
            return fields.get(field)
    return None


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    work = tmp_path_factory.mktemp("live")
    operator_bin = binary("HSS_OPERATOR_BIN", "target/debug/hss-operator")
    simulator_bin = binary("HSS_SIMULATOR_BIN", "target/debug/hss-simulator")
    prometheus_bin = os.environ.get("PROMETHEUS_BIN") or shutil.which("prometheus")
    if not prometheus_bin:
        pytest.fail("prometheus is not installed: run scripts/prometheus.sh (Debian's prometheus package)")
    cp = work / "cp"
    procs = []
    out = subprocess.run(["bash", str(ROOT / "scripts/control-plane.sh"), "start", str(cp)],
                         capture_output=True, text=True)
    try:
        assert out.returncode == 0, out.stderr
        env = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
        admin = Kube(env["KUBE_SERVER"], env["ADMIN_TOKEN"], str(cp / "pki" / "ca.crt"))
        as_operator = Kube(env["KUBE_SERVER"], env["OPERATOR_TOKEN"], str(cp / "pki" / "ca.crt"))
        yield from run_stack(work, env, admin, as_operator, operator_bin, simulator_bin, prometheus_bin, procs)
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        subprocess.run(["bash", str(ROOT / "scripts/control-plane.sh"), "stop", str(cp)], capture_output=True)


def run_stack(work, env, admin, as_operator, operator_bin, simulator_bin, prometheus_bin, procs):
    # The CRDs (created, not applied: a 1.20 server drops the CEL rules it does not know).
    crds = [d for d in yaml.safe_load_all((ROOT / "crds/crds.yaml").read_text()) if d]
    for crd in crds:
        admin.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    for crd in crds:
        until(f"CRD {crd['metadata']['name']} Established", lambda: any(
            c["type"] == "Established" and c["status"] == "True" for c in admin.call(
                "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd['metadata']['name']}"
            ).get("status", {}).get("conditions", [])), timeout=30)

    sim_log = open(work / "simulator.log", "w")
    sim = subprocess.Popen([simulator_bin, "--listen", "127.0.0.1:0", "--credential", "AKDEMO:SKDEMO",
                            "--project-id", "demo", "--run-after", "1s", "--finish-after", "3s",
                            "--fail-cluster", "cce-sim-0003"], stdout=subprocess.PIPE, stderr=sim_log, text=True)
    procs.append(sim)
    first = sim.stdout.readline()
    assert first.startswith("listening on "), f"simulator: {first!r}"
    endpoint = first.split()[-1]

    args = ["run", "--namespace", ",".join(SCANS), "--endpoint", endpoint, "--allow-insecure-endpoints",
            "--project-id", "demo", "--poll-interval", "1s", "--admin-listen", "127.0.0.1:0",
            "--metrics-listen", "127.0.0.1:0", "--metrics-insecure", "--disable-triggers", "--log-format", "json"]
    needs = json.loads(subprocess.run([operator_bin, "permissions", *args[1:]], capture_output=True,
                                      text=True, check=True).stdout)
    rbac(admin, needs)
    for ns in SCANS:
        admin.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        admin.create(f"/api/v1/namespaces/{ns}/secrets", {
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hss-credentials"},
            "stringData": {"accessKey": "AKDEMO", "secretKey": "SKDEMO"}})
        bind(admin, ns, "hss-scanner")

    op_log = work / "operator.log"
    op = subprocess.Popen([operator_bin, *args], stdout=subprocess.DEVNULL, stderr=open(op_log, "w"),
                          env=dict(os.environ, KUBECONFIG=env["KUBECONFIG_OPERATOR"], RUST_LOG="info"))
    procs.append(op)

    def addr(message):
        if op.poll() is not None:
            pytest.fail(f"hss-operator exited {op.returncode}:\n{op_log.read_text()[-3000:]}")
        return log_field(op_log, message, "addr")

    metrics = until("the metrics server", lambda: addr("metrics server listening"), timeout=30)
    admin_addr = until("the admin server", lambda: addr("admin server listening"), timeout=30)

    # The rules as the chart renders them for this release, and a scrape labelled like the
    # chart's ServiceMonitor's (its job is the Service's name, the release's full name).
    objs = render(monitoring.MONITORING_VALUES, RELEASE, OPERATOR_NS)
    (work / "rules.yaml").write_text(yaml.safe_dump({"groups": monitoring.rule_groups(objs)}))
    (dash,) = monitoring.dashboards(objs).values()
    port = free_port()
    (work / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(work / "rules.yaml")],
        "scrape_configs": [{"job_name": monitoring.all_values(dash)["job"], "static_configs": [{
            "targets": [metrics], "labels": {"namespace": OPERATOR_NS, "pod": "hss-operator-0"}}]}],
    }))
    prom = subprocess.Popen([prometheus_bin, f"--config.file={work / 'prometheus.yml'}",
                             f"--storage.tsdb.path={work / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=open(work / "prometheus.log", "w"))
    procs.append(prom)
    url = f"http://127.0.0.1:{port}"

    def ready(u):
        try:
            return urllib.request.urlopen(u, timeout=2).status == 200
        except OSError:
            return False

    until("Prometheus ready", lambda: prom.poll() is None and ready(url + "/-/ready"), timeout=60)
    until("hss-operator ready", lambda: ready(f"http://{admin_addr}/readyz"), timeout=60)

    # team-d loses its writes after the start-up check: its reconciles fail from then on.
    admin.call("DELETE", "/apis/rbac.authorization.k8s.io/v1/namespaces/team-d/rolebindings/hss-operator")
    bind(admin, "team-d", "hss-scanner-read-only")
    until("team-d read-only for the operator", lambda: not as_operator.may("patch", "team-d"), timeout=30)

    for ns, sample in SCANS.items():
        task = yaml.safe_load((ROOT / "deploy/samples" / sample).read_text())
        admin.create(f"/apis/{GROUP}/v1alpha1/namespaces/{ns}/clusterscantasks", task)

    def read(t):
        status = t.get("status", {})
        return status.get("phase") in FINISHED and any(
            c["type"] == "FindingsRead" and c["status"] == "True" for c in status.get("conditions", []))

    def finished():
        tasks = [t for ns in WRITABLE for t in admin.tasks(ns)]
        return all(map(read, tasks)) and tasks
    tasks = until("the scans of team-b and team-c to finish with their findings read", finished,
                  timeout=120, every=0.5)
    yield {"prometheus": url, "dashboard": dash, "tasks": tasks}


def query(url, expr):
    got = get_json(f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    assert got["status"] == "success", got
    return got["data"]["result"]


def empty_panels(stack, values):
    """[(panel query, expr)] that return no series with these variable values."""
    dash = stack["dashboard"]
    out = []
    for title, ref, expr in monitoring.queries(dash):
        filled = monitoring.fill(expr, dict(BUILTIN_WINDOWS, **values))
        if not query(stack["prometheus"], filled):
            out.append((f"{title} {ref}", filled))
    return out


# Windows a dashboard over the last few minutes would use with a 1s scrape interval.
BUILTIN_WINDOWS = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m"}


def test_every_variable_offers_the_namespaces_and_clusters_that_were_scanned(stack):
    dash = stack["dashboard"]
    values = monitoring.all_values(dash)
    # The chart pins the operator's namespace and job (constants); the others are queries.
    assert (values["operator_namespace"], values["job"]) == (OPERATOR_NS, RELEASE)
    want = {"namespace": set(WRITABLE), "cluster": {"cce-sim-0001", "cce-sim-0002"}}
    assert set(monitoring.variable_queries(dash)) == set(want)
    offered = {}

    def offers():
        for name, (selector, label) in monitoring.variable_queries(dash).items():
            series = query(stack["prometheus"], f"group by ({label}) ({monitoring.fill(selector, values)})")
            offered[name] = {s["metric"].get(label) for s in series}
        return all(want[n] <= offered.get(n, set()) for n in want)
    try:
        until("the variables to offer what was scanned", offers, timeout=30, every=1)
    except pytest.fail.Exception:
        assert offered == want


@pytest.mark.parametrize("choice", ["All", "one namespace and cluster"])
def test_every_panel_query_returns_a_series(stack, choice):
    values = monitoring.all_values(stack["dashboard"])
    if choice != "All":
        values.update(namespace="team-b", cluster="cce-sim-0001")
    # The gauges follow the scans within a few seconds (objects every 5 s, a scrape a second).
    last = []

    def none_empty():
        last[:] = empty_panels(stack, values)
        return not last
    try:
        until("every panel to return a series", none_empty, timeout=45, every=1)
    except pytest.fail.Exception:
        pytest.fail("panels without a series:\n" + "\n".join(f"  {n}: {e}" for n, e in last))


def test_the_findings_panels_agree_with_the_scans_status(stack):
    want = {}
    for t in stack["tasks"]:
        ns = t["metadata"]["namespace"]
        for c in t["status"].get("findings", {}).get("clusters", []):
            high = sum(s["counts"].get("high", 0) for s in c.get("scans", []))
            if high:
                want[(ns, c["clusterId"])] = float(high)
    assert want, "the sample scans found no high risks"
    high = f'hss_operator_findings{{namespace="{OPERATOR_NS}", level="high"}}'

    def got():
        return {(r["metric"]["exported_namespace"], r["metric"]["cluster_id"]): float(r["value"][1])
                for r in query(stack["prometheus"], f"sum by (exported_namespace, cluster_id) ({high}) > 0")}
    last = {}
    try:
        until("the high findings scraped", lambda: last.update(seen=got()) or last["seen"] == want, timeout=30)
    except pytest.fail.Exception:
        assert last["seen"] == want
    dash = stack["dashboard"]
    stat = next(e for t, _, e in monitoring.queries(dash) if t == "Clusters with high risks")
    flagged = query(stack["prometheus"], monitoring.fill(stat, monitoring.all_values(dash)))
    assert float(flagged[0]["value"][1]) == len(want)


def test_reconcile_failures_show_the_category_of_the_namespace_that_cannot_write(stack):
    series = until("a reconcile failure", lambda: query(
        stack["prometheus"], f'hss_operator_reconcile_failures_total{{namespace="{OPERATOR_NS}"}} > 0'), timeout=60)
    assert {s["metric"]["category"] for s in series} <= {"kube", "write_status"}, series


def test_the_alerts_are_in_the_state_the_scraped_data_calls_for(stack):
    url = stack["prometheus"]

    def alerts():
        got = get_json(f"{url}/api/v1/alerts")["data"]["alerts"]
        return {(a["labels"]["alertname"], a["labels"].get("namespace"), a["labels"].get("cluster_id"), a["state"])
                for a in got}
    # team-b's scan of cce-sim-0001 found high risks (HssClusterHighRisks has no `for`); the
    # failing reconciles of team-d make HssOperatorReconcileFailures pending (for 15m).
    want = {("HssClusterHighRisks", "team-b", "cce-sim-0001", "firing"),
            ("HssOperatorReconcileFailures", OPERATOR_NS, None, "pending")}
    got = until("the alerts", lambda: (lambda a: a if want <= a else None)(alerts()), timeout=60, every=1)
    # Conditions that do not hold here: none of these is even pending.
    for silent in ("HssOperatorDown", "HssOperatorThrottled", "HssOperatorPollStale"):
        assert not [a for a in got if a[0] == silent], got
    # A submission is unresolved for milliseconds at most: never for its 30 minutes.
    assert not [a for a in got if a[0] == "HssOperatorSubmissionUnresolved" and a[3] == "firing"], got
