"""The Helm chart's checks: lint and render every scenario, validate every object, and hold
the renders to the chart's promises (hardened pod, probes, no literal credentials, RBAC exactly
as the operator's permission table asks for the rendered flags, credential sources without
long-lived keys, network policy; the monitoring objects' in check_monitoring.py), and make
sure what cannot work fails to render."""
import json
import os
import pathlib
import subprocess
import sys

import helm_python as helm
import jsonschema

import check_monitoring
from common import *  # noqa: F401,F403 (constants and helpers shared by every check)

SCENARIOS = {
    "default": {},
    "ha": {"replicaCount": 2},
    "metrics": {"metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True},
                            "dashboard": {"enabled": True}}},
    "network-policy": {"networkPolicy": {"enabled": True}},
    "tenancy-open": {"tenancy": {"mode": "open"}, "aggregatedRoles": False},
    "reports-off": {"reports": {"mode": "off"}},
    "reports-policyreport": {"reports": {"mode": "policyreport", "maxResults": 50}},
    "self-cluster": {"reports": {"selfClusterId": "c-self", "affectedMaxRisks": 5}},
    "self-cluster-watched": {"reports": {"selfClusterId": "c-self"}, "watchNamespaces": ["team-a", "shop"]},
    "team-policies": {"tenancy": {"releaseNamespacePolicy": False, "policies": [
        {"name": "team-a", "spec": {"namespaceSelector": {"matchLabels": {"team": "a"}}, "clusterIds": ["c-a1", "c-a2"], "share": 2}},
        {"name": "team-b", "spec": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "team-b"}}, "iacScan": True, "fileIds": ["f-b1"], "maxUnfinished": 20}},
    ]}},
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
            "port": 9443,
            "certSecret": "hss-operator-metrics-tls",
            "reader": {"subjects": [{"kind": "ServiceAccount", "name": "prometheus-k8s", "namespace": "monitoring"}]},
            "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
            "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}, "alertLabels": {"team": "security"}},
            "dashboard": {"enabled": True, "namespace": "monitoring", "folder": "Platform/Security",
                          "folderAnnotation": "k8s-sidecar-target-directory", "labels": {"team": "security"},
                          "annotations": {"example.com/owner": "security"}},
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
    # Default credentials without long-lived keys (credentials.source), one scenario a source.
    "source-federation": {
        "credentials": {"source": "federation", "federation": {
            "idpId": "cce-cluster-idp", "audience": "hss-operator", "expirationSeconds": 1800,
            "iamEndpoint": "https://iam.cn-north-4.myhuaweicloud.com"}},
        "networkPolicy": {"enabled": True},
    },
    "source-oidc": {
        "credentials": {"source": "oidc", "oidc": {
            "providerUrn": "iam::0123456789abcdef:oidc-provider:cce-cluster",
            "agencyUrn": "iam::0123456789abcdef:agency:hss-scanner", "audience": "hss-operator",
            "sessionName": "hss-operator", "durationSeconds": 3600,
            "stsEndpoint": "https://sts.cn-north-4.myhuaweicloud.com"}},
        "hss": {"caBundle": {"configMapName": "hss-ca"}},
        "networkPolicy": {"enabled": True},
    },
    "source-oidc-minimal": {
        "credentials": {"source": "oidc", "oidc": {
            "providerUrn": "iam::0123456789abcdef:oidc-provider:cce-cluster",
            "agencyUrn": "iam::0123456789abcdef:agency:hss-scanner", "audience": "sts"}},
    },
    "source-metadata": {"credentials": {"source": "metadata"}, "networkPolicy": {"enabled": True}},
    "source-pod-identity": {
        "credentials": {"source": "pod-identity"},
        "networkPolicy": {"enabled": True, "podIdentityAgent": {"cidrs": ["192.0.2.10/32"], "ports": [80, 8181]}},
    },
    "source-profile": {"credentials": {"source": "profile"}, "networkPolicy": {"enabled": True}},
    "source-static": {
        "credentials": {"source": "static", "existingSecret": "hss-credentials", "mode": "env"},
        "networkPolicy": {"enabled": True},
    },
    "source-env": {
        "credentials": {"source": "env", "existingSecret": "hss-credentials", "mode": "env"},
        "networkPolicy": {"enabled": True},
    },
    "auto-chain": {"networkPolicy": {"enabled": True, "podIdentityAgent": {"cidrs": ["192.0.2.10/32"]}}},
}

# Values that cannot work: the render must fail, saying this.
BAD_RENDERS = [
    ({"credentials": {"source": "federation", "federation": {"audience": "hss-operator"}}},
     "credentials.federation.idpId is required with credentials.source federation"),
    ({"credentials": {"source": "federation", "federation": {"idpId": "cce-cluster-idp"}}},
     "credentials.federation.audience is required with credentials.source federation"),
    ({"credentials": {"source": "oidc", "oidc": {"agencyUrn": "iam::1:agency:a", "audience": "sts"}}},
     "credentials.oidc.providerUrn is required with credentials.source oidc"),
    ({"credentials": {"source": "oidc", "oidc": {"providerUrn": "iam::1:oidc-provider:p", "audience": "sts"}}},
     "credentials.oidc.agencyUrn is required with credentials.source oidc"),
    ({"credentials": {"source": "oidc", "oidc": {"providerUrn": "iam::1:oidc-provider:p", "agencyUrn": "iam::1:agency:a"}}},
     "credentials.oidc.audience is required with credentials.source oidc"),
    ({"credentials": {"source": "pod-identity", "existingSecret": "hss-credentials"}},
     "credentials.existingSecret holds long-lived keys, which credentials.source pod-identity does not use"),
    ({"credentials": {"source": "env", "existingSecret": "hss-credentials", "mode": "reference"}},
     "credentials.source env reads keys from the container's environment only"),
    ({"credentials": {"source": "static", "existingSecret": "hss-credentials", "mode": "reference"}},
     "credentials.source static reads keys from the container's environment only"),
    ({"credentials": {"source": "pod-identity"}, "networkPolicy": {"enabled": True}},
     "networkPolicy.podIdentityAgent.cidrs is required with credentials.source pod-identity"),
]

# Environment variables of the credential sources. The chart sets those of federation and oidc
# (literal values, never secrets); CCE injects HC_CONTAINER_* itself for pod-identity.
SOURCE_ENV = ("HUAWEICLOUD_SDK_IDP_ID", "HUAWEICLOUD_SDK_ID_TOKEN_FILE", "HUAWEICLOUD_SDK_IAM_ENDPOINT",
              "HUAWEICLOUD_OIDC_PROVIDER_URN", "HUAWEICLOUD_OIDC_AGENCY_URN", "HUAWEICLOUD_OIDC_TOKEN_FILE",
              "HUAWEICLOUD_OIDC_ID_TOKEN", "HUAWEICLOUD_OIDC_SESSION_NAME", "HUAWEICLOUD_OIDC_DURATION_SECONDS",
              "HUAWEICLOUD_SDK_STS_ENDPOINT", "HC_CONTAINER_CREDENTIALS_FULL_URI",
              "HC_CONTAINER_AUTHORIZATION_TOKEN_FILE", "HUAWEICLOUD_SDK_CREDENTIALS_FILE")
METADATA_CIDR = "169.254.169.254/32"

LEASES = ("coordination.k8s.io", "leases")
CONFIGMAPS = ("", "configmaps")
SECRETS = ("", "secrets")
BIN = os.environ.get("HSS_OPERATOR_BIN", "target/debug/hss-operator")


def needed(container):
    """{namespace or None (cluster-wide): {(apiGroup, resource[/subresource]): verbs}}: the
    operator's permission table (crates/hss-operator/src/permissions.rs) for the rendered container's args and
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


def check_aggregated(where, values, roles):
    """view reads scans, triggers and reports; edit/admin also write scans and triggers; nobody
    gets their status or writes reports."""
    if bool(roles) != values.get("aggregatedRoles", True):
        fail(where, "aggregated ClusterRoles do not follow aggregatedRoles")
        return
    if not roles:
        return
    kinds = {(GROUP, "clusterscantasks"), (GROUP, "clusterscantriggers")}
    to = lambda r: {k[len(AGGREGATE):] for k, v in r["metadata"]["labels"].items() if k.startswith(AGGREGATE) and v == "true"}
    want = {"view": {"get", "list", "watch"}, "edit": {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}}
    want["admin"] = want["edit"]
    for agg, verbs in want.items():
        got = grants([r for r in roles if agg in to(r)])
        expected = {k: verbs for k in kinds} | {k: {"get", "list", "watch"} for k in report_kinds(values)}
        if got != expected:
            fail(where, f"aggregate-to-{agg} grants {got}, expected {expected} only (no status, reports read-only)")


def report_kinds(values):
    """The report kinds reports.mode may write: every aggregated role reads them."""
    mode = values.get("reports", {}).get("mode", "auto")
    return [k for m, k in (("openreports", ("openreports.io", "reports")), ("policyreport", ("wgpolicyk8s.io", "policyreports")))
            if mode in ("auto", m)]


def check_tenancy(where, values, by_kind, argv):
    """--tenancy follows tenancy.mode; policy mode renders the release namespace's policy."""
    tenancy = values.get("tenancy", {})
    mode = tenancy.get("mode", "policy")
    if argv.get("--tenancy") != mode:
        fail(where, f"--tenancy is {argv.get('--tenancy')}, tenancy.mode is {mode}")
    policies = {p["metadata"]["name"]: p for p in by_kind.get("ClusterScanPolicy", [])}
    want = set()
    if mode == "policy":
        want = {p["name"] for p in tenancy.get("policies", [])}
        if tenancy.get("releaseNamespacePolicy", True):
            want.add(f"{RELEASE}-release-namespace")
            home = policies.get(f"{RELEASE}-release-namespace")
            if home and home["spec"]["namespaceSelector"] != {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}}:
                fail(where, "the release namespace's policy selects something else")
    if set(policies) != want:
        fail(where, f"ClusterScanPolicies {sorted(policies)}, expected {sorted(want)}")


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
        if o["kind"] in OWN_KINDS:
            from check_docs import crd_schemas, sample_errors
            for e in sample_errors(o, crd_schemas()):
                fail(where, f"{o['kind']}/{md.get('name')}: {e}")
        elif o["kind"] in PROM_KINDS:
            try:
                jsonschema.Draft202012Validator(check_monitoring.PROM_SCHEMAS[o["kind"]]).validate(o)
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
    metrics_port = values.get("metrics", {}).get("port", 8443)
    if {"name": "metrics", "containerPort": metrics_port, "protocol": "TCP"} not in c.get("ports", []):
        fail(where, f"no container port metrics/{metrics_port}")
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

    # Metrics: HTTPS on the metrics port behind Kubernetes auth, never the insecure mode; a
    # mounted certificate when metrics.certSecret names one.
    if not (argv.get("--metrics-listen") or "").endswith(f":{metrics_port}"):
        fail(where, f"--metrics-listen is {argv.get('--metrics-listen')}, expected port {metrics_port}")
    if "--metrics-insecure" in argv:
        fail(where, "the chart must never serve /metrics without auth")
    cert_secret = values.get("metrics", {}).get("certSecret", "")
    cert_mount = next((m for m in c.get("volumeMounts", []) if m["name"] == "metrics-tls"), None)
    if bool(cert_secret) != bool(cert_mount) or (cert_mount and argv.get("--metrics-cert-dir") != cert_mount["mountPath"]):
        fail(where, "--metrics-cert-dir and its mount do not follow metrics.certSecret")

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

    # Credential sources without long-lived keys: the flag, the projected token of federation
    # and oidc with their settings, their literal environment, nothing for the others.
    source = cred["source"]
    if argv.get("--credentials-source") != (None if source == "auto" else source):
        fail(where, f"--credentials-source is {argv.get('--credentials-source')}, credentials.source is {source}")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
    if len(volumes) != len(pod.get("volumes", [])) or len(mounts) != len(c.get("volumeMounts", [])):
        fail(where, "repeated volume or volume mount")
    if set(volumes) != set(mounts):
        fail(where, f"volumes {sorted(volumes)} and mounts {sorted(mounts)} differ")
    literal = {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}
    want_env = {}
    token = cred[source] if source in ("federation", "oidc") else None
    if ("identity-token" in volumes) != bool(token):
        fail(where, f"projected token volume {'missing' if token else 'present'} with credentials.source {source}")
    elif token:
        sources = volumes["identity-token"].get("projected", {}).get("sources", [])
        sat = sources[0].get("serviceAccountToken", {}) if len(sources) == 1 else {}
        want = {"audience": token["audience"], "expirationSeconds": token["expirationSeconds"], "path": sat.get("path")}
        if not sat.get("path") or sat != want:
            fail(where, f"projected token is {sat}, expected {want}")
        mount = mounts.get("identity-token", {})
        if mount.get("readOnly") is not True:
            fail(where, "the projected token is not mounted read-only")
        token_file = f"{mount.get('mountPath')}/{sat.get('path')}"
        if source == "federation":
            want_env = {"HUAWEICLOUD_SDK_IDP_ID": token["idpId"], "HUAWEICLOUD_SDK_ID_TOKEN_FILE": token_file,
                        "HUAWEICLOUD_SDK_IAM_ENDPOINT": token["iamEndpoint"] or None}
        else:
            want_env = {"HUAWEICLOUD_OIDC_PROVIDER_URN": token["providerUrn"],
                        "HUAWEICLOUD_OIDC_AGENCY_URN": token["agencyUrn"],
                        "HUAWEICLOUD_OIDC_TOKEN_FILE": token_file,
                        "HUAWEICLOUD_OIDC_SESSION_NAME": token["sessionName"] or None,
                        "HUAWEICLOUD_OIDC_DURATION_SECONDS": str(token["durationSeconds"]) if token["durationSeconds"] else None,
                        "HUAWEICLOUD_SDK_STS_ENDPOINT": token["stsEndpoint"] or None}
    for var in SOURCE_ENV:
        if literal.get(var) != want_env.get(var):
            fail(where, f"{var} is {literal.get(var)!r}, expected {want_env.get(var)!r} with credentials.source {source}")

    # Leader election: on with replicaCount > 1 or when asked for; Recreate without it.
    leader = values.get("replicaCount", 1) > 1 or values.get("leaderElection", {}).get("enabled", False)
    if ("--leader-election" in argv) != leader:
        fail(where, f"--leader-election should be {'on' if leader else 'off'}")
    strategy = dep["spec"].get("strategy", {}).get("type")
    if not values.get("updateStrategy") and strategy != ("RollingUpdate" if leader else "Recreate"):
        fail(where, f"strategy {strategy} with leader election {'on' if leader else 'off'}")
    if dep["spec"]["replicas"] > 1 and not leader:
        fail(where, "more than one replica without leader election")

    # Aggregated roles are users', bound by Kubernetes' view/edit/admin, never the operator's.
    aggregated = [r for r in by_kind.get("ClusterRole", [])
                  if any(k.startswith(AGGREGATE) for k in r["metadata"].get("labels", {}))]
    by_kind["ClusterRole"] = [r for r in by_kind.get("ClusterRole", []) if r not in aggregated]
    check_aggregated(where, values, aggregated)
    check_tenancy(where, values, by_kind, argv)

    # RBAC: exactly the documented grants, in the right places.
    roles = by_kind.get("Role", []) + by_kind.get("ClusterRole", [])
    role_names = {(r["kind"], r["metadata"].get("namespace"), r["metadata"]["name"]) for r in roles}
    sa_name = pod.get("serviceAccountName")
    reader = values.get("metrics", {}).get("reader", {})
    readers = [r for r in by_kind.get("ClusterRole", []) if r["metadata"]["name"].endswith("-metrics-reader")]
    if len(readers) != (1 if reader.get("create", True) else 0):
        fail(where, "the metrics-reader ClusterRole does not follow metrics.reader.create")
    for r in readers:
        if r["rules"] != [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]:
            fail(where, f"the metrics-reader ClusterRole grants {r['rules']}, expected get on /metrics only")
    for b in by_kind.get("RoleBinding", []) + by_kind.get("ClusterRoleBinding", []):
        ref = b["roleRef"]
        ns = b["metadata"].get("namespace") if ref["kind"] == "Role" else None
        if (ref["kind"], ns, ref["name"]) not in role_names:
            fail(where, f"{b['kind']}/{b['metadata']['name']} binds missing {ref['kind']}/{ref['name']}")
        if any(ref["name"] == r["metadata"]["name"] for r in readers):
            # The scrapers' binding: whoever metrics.reader.subjects names, only when it names someone.
            if not reader.get("subjects") or b["subjects"] != reader["subjects"]:
                fail(where, f"{b['kind']}/{b['metadata']['name']} does not bind exactly metrics.reader.subjects")
            continue
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
        if [p.get("targetPort") for p in s["spec"]["ports"]] != ["admin", "metrics"]:
            fail(where, "Service must target the admin and metrics ports only")
    check_monitoring.check_prometheus(where, values, by_kind, svcs, cert_secret)
    check_monitoring.check_dashboard(where, values, by_kind, dep["metadata"]["name"])
    nps = by_kind.get("NetworkPolicy", [])
    if bool(nps) != values.get("networkPolicy", {}).get("enabled", False):
        fail(where, "NetworkPolicy does not follow networkPolicy.enabled")
    for np in nps:
        if not subset(np["spec"]["podSelector"]["matchLabels"], pod_labels):
            fail(where, "NetworkPolicy does not select the operator pods")
        if sorted(np["spec"]["policyTypes"]) != ["Egress", "Ingress"]:
            fail(where, "NetworkPolicy must restrict ingress and egress")
        for rule in np["spec"].get("ingress", []):
            if [p.get("port") for p in rule.get("ports", [])] != ["metrics"]:
                fail(where, "NetworkPolicy ingress is open beyond the metrics port")
        egress_ports = {p.get("port") for r in np["spec"]["egress"] for p in r.get("ports", [])}
        if not {53, 443} <= egress_ports:
            fail(where, "NetworkPolicy egress lacks DNS or HTTPS")
        # What the credential source needs: the metadata service for metadata (and auto's chain,
        # reached without a Secret), the Pod Identity agent for pod-identity (and the chain).
        rule = lambda cidrs, ports: {"ports": [{"port": p, "protocol": "TCP"} for p in ports],
                                     "to": [{"ipBlock": {"cidr": x}} for x in cidrs]}
        egress = np["spec"]["egress"]
        chain = source == "auto" and not cred["existingSecret"]
        want_metadata = source == "metadata" or chain
        if (rule([METADATA_CIDR], [80]) in egress) != want_metadata:
            fail(where, f"egress to the metadata service ({METADATA_CIDR} TCP 80) should be "
                        f"{'allowed' if want_metadata else 'absent'} with credentials.source {source}")
        extra = values["networkPolicy"].get("extraEgress", [])
        if not want_metadata and any(METADATA_CIDR in json.dumps(r) for r in egress if r not in extra):
            fail(where, f"the metadata service is reachable with credentials.source {source}")
        agent = values["networkPolicy"]["podIdentityAgent"]
        want_agent = bool(agent["cidrs"]) and (source == "pod-identity" or chain)
        if agent["cidrs"] and (rule(agent["cidrs"], agent["ports"]) in egress) != want_agent:
            fail(where, f"egress to the Pod Identity agent should be {'allowed' if want_agent else 'absent'} "
                        f"with credentials.source {source}")
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
        # Values that cannot work fail the render with a message naming the value to set.
        for bad, message in BAD_RENDERS:
            try:
                chart.render(values=bad, name=RELEASE, namespace=NAMESPACE)
                fail("chart validation", f"renders {bad}; expected: {message}")
            except helm.HelmError as e:
                if message not in str(e):
                    fail("chart validation", f"{bad} fails with {e}; expected: {message}")
        # The schema must refuse what it does not know.
        for bad in ({"replicaCount": "2"}, {"credentials": {"accessKey": "AK"}}, {"logFormat": "xml"},
                    {"credentials": {"source": "pod_identity"}},
                    {"credentials": {"federation": {"expirationSeconds": 60}}},
                    {"credentials": {"oidc": {"stsEndpoint": "http://sts.cn-north-4.myhuaweicloud.com"}}},
                    {"networkPolicy": {"podIdentityAgent": {"cidrs": ["192.0.2.10"]}}}):
            try:
                chart.render(values=bad, name=RELEASE, namespace=NAMESPACE)
                fail("values.schema.json", f"accepts {bad}")
            except helm.HelmError:
                pass
        for crd in chart.crds:
            for doc in documents(crd["data"]):
                k8s_validate(f"chart {crd['name']}", doc)
