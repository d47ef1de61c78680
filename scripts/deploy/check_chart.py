"""The Helm chart's checks: lint and render every scenario, validate every object, and hold
the renders to the chart's promises (hardened pod, probes, no literal credentials, RBAC exactly
as the operator's permission table asks for the rendered flags, alerts, network policy)."""
import json
import os
import pathlib
import subprocess
import sys

import helm_python as helm
import jsonschema
import promql_parser

from common import *  # noqa: F401,F403 (constants and helpers shared by every check)

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

ALERTS = {"HssOperatorDown", "HssOperatorSubmissionUnresolved", "HssOperatorThrottled",
          "HssOperatorReconcileFailures", "HssOperatorPollStale", "HssClusterHighRisks"}


# prometheus-operator CRD subsets: what the chart emits, strictly (no stray fields).
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


LEASES = ("coordination.k8s.io", "leases")
CONFIGMAPS = ("", "configmaps")
SECRETS = ("", "secrets")
BIN = os.environ.get("HSS_OPERATOR_BIN", "target/debug/hss-operator")


def needed(container):
    """{namespace or None (cluster-wide): {(apiGroup, resource[/subresource]): verbs}}: the
    operator's permission table (src/permissions.rs) for the rendered container's args and
    literal env, printed by `hss-operator permissions` (the pod's downward-API fields resolved
    as the kubelet would; Secret values left out: they decide no permission). A need limited to
    one object by name is left out where an unnamed one in its namespace, or cluster-wide,
    already covers it."""
    args = container.get("args", [])
    env = {"PATH": os.environ.get("PATH", "")}
    fields = {"metadata.namespace": NAMESPACE, "metadata.name": "checker"}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        elif "fieldRef" in e.get("valueFrom", {}):
            env[e["name"]] = fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
    out = subprocess.run([BIN, "permissions", *args[1:]], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        fail("permissions", f"{BIN} permissions {' '.join(args[1:])}: {out.stderr.strip()}")
        return {}
    rows = json.loads(out.stdout)
    key = lambda n: (n["group"], n["resource"] + (f"/{n['subresource']}" if n["subresource"] else ""))
    unnamed = {(n["namespace"], key(n), n["verb"]) for n in rows if not n["name"]}
    table = {}
    for n in rows:
        covered = n["name"] and ({(n["namespace"], key(n), n["verb"]), (None, key(n), n["verb"])} & unnamed)
        if not covered:
            table.setdefault(n["namespace"], {}).setdefault(key(n), set()).add(n["verb"])
    return table


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
    # RBAC: exactly what the operator's permission table asks for the rendered flags.
    need = needed(c)
    cluster_need = need.pop(None, {})
    home = need.get(NAMESPACE, {})
    watched = {ns for ns, keys in need.items() if (GROUP, "clusterscantasks") in keys}
    lease_want = {LEASES: home.pop(LEASES)} if LEASES in home else {}
    claims_want = {CONFIGMAPS: home.pop(CONFIGMAPS)} if CONFIGMAPS in home else {}
    cred_want = {SECRETS: home.pop(SECRETS)} if SECRETS in home and NAMESPACE not in watched else {}
    if not home:
        need.pop(NAMESPACE, None)
    cluster_roles = by_kind.get("ClusterRole", [])
    ns_roles = {}
    for r in by_kind.get("Role", []):
        ns_roles.setdefault(r["metadata"]["namespace"], []).append(r)
    watch_ns = values.get("watchNamespaces", [])
    lease_name = argv.get("--lease-name")
    lease_roles = [r for r in ns_roles.get(NAMESPACE, []) if LEASES in grants([r])]
    expect_grants(f"{where} leases", grants(lease_roles), lease_want)
    if leader != bool(lease_want):
        fail(where, f"the permission table {'lacks' if leader else 'has'} a Lease with leader election {'on' if leader else 'off'}")
    if leader:
        named = {n for r in lease_roles for rule in r["rules"] for n in rule.get("resourceNames", [])}
        if named != {lease_name}:
            fail(where, f"lease Role names {named}, --lease-name is {lease_name}")
    claims_roles = [r for r in ns_roles.get(NAMESPACE, []) if CONFIGMAPS in grants([r])]
    expect_grants(f"{where} claims", grants(claims_roles), claims_want)
    claims_ref = argv.get("--claims-configmap", "")
    named = {n for r in claims_roles for rule in r["rules"] for n in rule.get("resourceNames", [])}
    if claims_ref.split("/") != [NAMESPACE, *named]:
        fail(where, f"claims Role names {named}, --claims-configmap is {claims_ref}")
    cred_roles = [r for r in ns_roles.get(NAMESPACE, []) if r["metadata"]["name"].endswith("-credentials")]
    expect_grants(f"{where} credentials", grants(cred_roles), cred_want)
    if cred_want and [n for r in cred_roles for rule in r["rules"] for n in rule.get("resourceNames", [])] != [cred["existingSecret"]]:
        fail(where, "credentials Role is not limited to the named Secret")
    others = lambda ns: [r for r in ns_roles.get(ns, []) if r not in lease_roles and r not in cred_roles and r not in claims_roles]
    expect_grants(f"{where} cluster-wide", grants(cluster_roles), cluster_need)
    if watched != set(watch_ns):
        fail(where, f"the operator watches {sorted(watched) or 'all namespaces'}, watchNamespaces is {watch_ns}")
    if watch_ns and argv.get("--namespace") != ",".join(watch_ns):
        fail(where, f"--namespace is {argv.get('--namespace')}, expected {','.join(watch_ns)}")
    for ns in set(ns_roles) | set(need):
        expect_grants(f"{where} namespace {ns}", grants(others(ns)), need.get(ns, {}))

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
