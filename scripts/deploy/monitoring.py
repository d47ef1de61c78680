"""The chart's monitoring objects as data: the PrometheusRule's rule groups and the Grafana
dashboard's queries, with the dashboard's template variables filled in as Grafana fills them.
Shared by check_chart.py (render checks) and the promtool and Prometheus tests
(test_monitoring.py, test_dashboard_live.py)."""
import json
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
DASHBOARD_FILE = ROOT / "deploy" / "helm" / "hss-operator" / "dashboards" / "hss-operator.json"
METRICS_DOC = ROOT / "crates" / "hss-operator" / "src" / "metrics.rs"

# Values that turn every monitoring object on (the rules with their default settings).
MONITORING_VALUES = {"metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True},
                                 "dashboard": {"enabled": True}}}

# Grafana's built-in variables that the queries may use, and what stands in for them: the
# interval Grafana computes from the scrape interval and the panel's resolution.
BUILTINS = {"__rate_interval": "5m", "__interval": "1m", "__range": "6h"}
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
LABEL_VALUES = re.compile(r"^label_values\((.+),\s*(\w+)\)$", re.S)
# A family's samples: counters end in _total, histograms in _bucket, _sum and _count.
SUFFIXES = ("_total", "_bucket", "_sum", "_count")


def render(values, release="hss-operator", namespace="hss-operator"):
    """Every object of the chart's templates rendered by the real Helm engine (helm-python-sdk)."""
    import helm_python as helm
    import yaml

    with helm.Chart.load(ROOT / "deploy" / "helm" / "hss-operator") as chart:
        out = chart.render(values=values, name=release, namespace=namespace)
    return [d for path in sorted(out) if path.endswith(".yaml") for d in yaml.safe_load_all(out[path]) if d]


def rule_groups(objs):
    """The rule groups of the rendered PrometheusRule (exactly one)."""
    rules = [o for o in objs if o["kind"] == "PrometheusRule"]
    assert len(rules) == 1, f"expected one PrometheusRule, got {len(rules)}"
    return rules[0]["spec"]["groups"]


def dashboards(objs):
    """{ConfigMap name: dashboard} of every rendered ConfigMap labelled for the Grafana sidecar."""
    out = {}
    for o in objs:
        if o["kind"] == "ConfigMap" and o["metadata"].get("labels", {}).get("grafana_dashboard") == "1":
            (text,) = o["data"].values()
            out[o["metadata"]["name"]] = json.loads(text)
    return out


def panels(dash):
    """Every panel, those inside rows included, rows themselves left out."""
    out = []
    for p in dash.get("panels", []):
        if p.get("type") == "row":
            out += p.get("panels", [])
        else:
            out.append(p)
    return out


def queries(dash):
    """[(panel title, refId, expr)] of every panel target."""
    return [(p["title"], t["refId"], t["expr"]) for p in panels(dash) for t in p.get("targets", [])]


def variables(dash):
    return {v["name"]: v for v in dash.get("templating", {}).get("list", [])}


def variable_queries(dash):
    """{name: (series selector, label)} of the query variables (Grafana's label_values(...))."""
    out = {}
    for name, v in variables(dash).items():
        if v["type"] != "query":
            continue
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = LABEL_VALUES.match(q.strip())
        if not m:
            raise ValueError(f"variable {name}: {q!r} is not label_values(SELECTOR, LABEL)")
        out[name] = (m.group(1).strip(), m.group(2))
    return out


def fill(expr, values):
    """expr with every $var, ${var} and [[var]] replaced from values or BUILTINS; a variable
    that is neither raises KeyError."""
    def one(m):
        name = m.group(1) or m.group(2) or m.group(3)
        if name in values:
            return values[name]
        return BUILTINS[name]
    return VARIABLE.sub(one, expr)


def all_values(dash):
    """The values Grafana substitutes when every variable is at its default: constants their
    value, multi-value variables with All their allValue, the others a placeholder value."""
    out = {}
    for name, v in variables(dash).items():
        if v["type"] == "constant":
            out[name] = v["query"]
        elif v.get("includeAll"):
            out[name] = v.get("allValue", ".*")
        else:
            out[name] = (v.get("current") or {}).get("value") or "placeholder"
    return out


def recording_rules(named_exprs):
    """A rule file wrapping each (name, expr) into a recording rule, for `promtool check rules`
    (which parses and type-checks what it cannot evaluate)."""
    rules = []
    for i, (name, expr) in enumerate(named_exprs):
        slug = re.sub(r"[^a-zA-Z0-9_]+", "_", name).strip("_").lower()
        rules.append({"record": f"dashboard:{slug}:{i}", "expr": expr})
    return {"groups": [{"name": "dashboard-queries", "rules": rules}]}


def metric_names(expr):
    """The metric names an expression selects, from promql-parser's AST (the parser the PromQL
    checks use; raises ValueError when expr does not parse)."""
    import promql_parser  # the deploy venv's; the live test reads names only when it has it

    names = set()

    def visit(node):
        if isinstance(node, promql_parser.MatrixSelector):
            node = node.vector_selector
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def exported_families():
    """The families crates/hss-operator/src/metrics.rs documents (its table and the findings
    gauges it names); metrics.rs's own test holds the exposition to exactly that list."""
    text = METRICS_DOC.read_text()
    doc = "\n".join(line[3:].strip() for line in text.splitlines() if line.startswith("//!"))
    return set(re.findall(r"`(hss_operator_[a-z_]+)`", doc))


def unknown_metrics(expr, families):
    """Metric names of expr that are neither an exported family (with its sample suffixes) nor
    Prometheus's own `up`."""
    known = set(families) | {"up"}
    known |= {f + s for f in families for s in SUFFIXES}
    return sorted(metric_names(expr) - known)
