"""Shared by the deploy checks (scripts/check-deploy.sh): constants, failure collection and
rendering the chart with Helm's own engine."""
import copy
import re
import sys

import kubernetes_validate as kv
import yaml

CHART = "deploy/helm/hss-operator"
RELEASE = NAMESPACE = "hss-operator"
K8S_VERSIONS = ["1.25", "1.37"]  # the chart's kubeVersion minimum, and the newest schemas shipped
GROUP = "hss.scanops.dev"
PROM_KINDS = {"ServiceMonitor", "PrometheusRule"}
CLUSTER_KINDS = {"ClusterRole", "ClusterRoleBinding", "Namespace", "CustomResourceDefinition", "ClusterScanPolicy"}
# The operator's own kinds: checked against its CRDs (schema and CEL), not Kubernetes'.
OWN_KINDS = {"ClusterScanTask", "ClusterScanTrigger", "ClusterScanPolicy"}
AGGREGATE = "rbac.authorization.k8s.io/aggregate-to-"
SECRET_ENV = re.compile(r"^(HUAWEICLOUD_SDK_(AK|SK|SECURITY_TOKEN)|CLOUD_SDK_(AK|SK)|HUAWEICLOUD_OIDC_ID_TOKEN|HSS_AUTH_TOKEN)$")

# A JSON-schema map of strings (labels, annotations).
STRMAP = {"type": "object", "additionalProperties": {"type": "string"}}

problems = []


def fail(where, msg):
    problems.append(f"{where}: {msg}")
    print(f"  FAIL {where}: {msg}", file=sys.stderr)


def merged(base, over):
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def subset(small, big):
    return all(big.get(k) == v for k, v in (small or {}).items())


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
