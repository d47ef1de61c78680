"""The chart's monitoring objects held to its promises (called by check_chart.check_render): the
ServiceMonitor scrapes the metrics port over HTTPS, the PrometheusRule has the documented
alerts, each limited to the release namespace, and the Grafana dashboard ConfigMap is labelled
for the sidecar, pinned to its release, and queries only families the operator exports. The
prometheus-operator kinds are validated against the subsets of their CRDs below. promtool's
checks of the same objects are in test_monitoring.py."""
import promql_parser

import monitoring
from common import *  # noqa: F401,F403 (constants and helpers shared by every check)

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
                        "interval": PROMDUR, "scrapeTimeout": PROMDUR,
                        "scheme": {"enum": ["http", "https"]}, "bearerTokenFile": {"type": "string"},
                        "tlsConfig": {"type": "object", "additionalProperties": False, "properties": {
                            "insecureSkipVerify": {"type": "boolean"}, "serverName": {"type": "string"},
                            "ca": {"type": "object", "additionalProperties": False, "properties": {
                                "secret": {"type": "object", "additionalProperties": False, "required": ["name", "key"],
                                           "properties": {"name": {"type": "string"}, "key": {"type": "string"}}}}}}}}}},
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


def check_prometheus(where, values, by_kind, svcs, cert_secret):
    """ServiceMonitor and PrometheusRule follow their values and the chart's promises."""
    metrics = values.get("metrics", {})
    sm_on = metrics.get("serviceMonitor", {}).get("enabled", False)
    sms = by_kind.get("ServiceMonitor", [])
    if bool(sms) != sm_on:
        fail(where, "ServiceMonitor does not follow metrics.serviceMonitor.enabled")
    for sm in sms:
        if not svcs or not subset(sm["spec"]["selector"]["matchLabels"], svcs[0]["metadata"]["labels"]):
            fail(where, "ServiceMonitor selects no Service")
        elif {e["port"] for e in sm["spec"]["endpoints"]} != {"metrics"}:
            fail(where, "ServiceMonitor must scrape the Service's metrics port only")
        for e in sm["spec"]["endpoints"]:
            tls = e.get("tlsConfig", {})
            if e.get("scheme") != "https" or not e.get("bearerTokenFile"):
                fail(where, "ServiceMonitor must scrape over https with Prometheus's token")
            if bool(tls.get("insecureSkipVerify")) == bool(cert_secret):
                fail(where, "ServiceMonitor skips verification exactly when no metrics.certSecret is mounted")
            if cert_secret and tls.get("ca", {}).get("secret", {}).get("name") != cert_secret:
                fail(where, "ServiceMonitor does not verify with metrics.certSecret's CA")
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


def check_dashboard(where, values, by_kind, fullname):
    """The Grafana dashboard ConfigMap follows metrics.dashboard, is labelled for the sidecar,
    is pinned to this release, and its queries parse and select only exported families."""
    want = values["metrics"]["dashboard"]
    objs = [o for o in by_kind.get("ConfigMap", []) if o["metadata"]["name"].endswith("-dashboard")]
    if len(objs) != (1 if want["enabled"] else 0):
        fail(where, "the dashboard ConfigMap does not follow metrics.dashboard.enabled")
        return
    families = monitoring.exported_families()
    for cm in objs:
        md = cm["metadata"]
        if md["labels"].get("grafana_dashboard") != "1" or not subset(want["labels"], md["labels"]):
            fail(where, "the dashboard ConfigMap lacks grafana_dashboard: \"1\" or metrics.dashboard.labels")
        if md["namespace"] != (want["namespace"] or NAMESPACE):
            fail(where, f"the dashboard ConfigMap is in {md['namespace']}, expected metrics.dashboard.namespace")
        annotations = dict(want["annotations"], **({want["folderAnnotation"]: want["folder"]} if want["folder"] else {}))
        if md.get("annotations", {}) != annotations:
            fail(where, f"dashboard annotations {md.get('annotations')}, expected {annotations}")
        try:
            (dash,) = monitoring.dashboards([cm]).values()
        except ValueError as e:
            fail(where, f"the dashboard ConfigMap holds no single JSON dashboard: {e}")
            continue
        pinned = {"operator_namespace": NAMESPACE, "job": fullname}
        for name, value in pinned.items():
            var = monitoring.variables(dash).get(name, {})
            if (var.get("type"), var.get("query"), var.get("hide")) != ("constant", value, 2):
                fail(where, f"dashboard variable {name} is not the hidden constant {value}")
        if not 0 < len(dash.get("uid", "")) <= 40:
            fail(where, f"dashboard uid {dash.get('uid')!r} is not 1 to 40 characters")
        fill = monitoring.all_values(dash)
        exprs = [(f"{t} {r}", e) for t, r, e in monitoring.queries(dash)]
        exprs += [(f"variable {n}", sel) for n, (sel, _) in monitoring.variable_queries(dash).items()]
        for name, expr in exprs:
            try:
                unknown = monitoring.unknown_metrics(monitoring.fill(expr, fill), families)
            except (KeyError, ValueError) as e:
                fail(where, f"dashboard {name}: {type(e).__name__} {e}: {expr}")
                continue
            if unknown:
                fail(where, f"dashboard {name} selects {unknown}, which the operator does not export")
