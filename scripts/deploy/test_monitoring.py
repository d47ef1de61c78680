"""The chart's alerts and dashboard against promtool (Debian's prometheus package, installed by
scripts/prometheus.sh, which scripts/test.sh runs first):

- the rendered PrometheusRule's groups pass `promtool check rules`, and `promtool test rules`
  with alerts-test.yaml, in which every alert fires on its condition and stays silent
  otherwise (and the tests are shown to fail against rules that never or always fire);
- every dashboard query, its template variables filled in as Grafana fills them, parses and
  type-checks as a recording rule, and selects only families the operator exports.

Run from the repository root with the deploy venv's python: `$(scripts/deploy-venv.sh) -m
pytest scripts/deploy`. PROMTOOL_BIN overrides the promtool on PATH.
"""
import copy
import os
import pathlib
import shutil
import subprocess

import pytest
import yaml

import monitoring
from monitoring import render

ALERTS_TEST = pathlib.Path(__file__).with_name("alerts-test.yaml")


@pytest.fixture(scope="module")
def objs():
    return render(monitoring.MONITORING_VALUES)


@pytest.fixture(scope="module")
def dashboard(objs):
    (dash,) = monitoring.dashboards(objs).values()
    return dash


@pytest.fixture(scope="module")
def promtool():
    path = os.environ.get("PROMTOOL_BIN") or shutil.which("promtool")
    if not path:
        pytest.fail("promtool is not installed: run scripts/prometheus.sh (Debian's prometheus package)")
    return path


def run(promtool, *args, cwd):
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True)


def write_rules(tmp_path, groups):
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    shutil.copy(ALERTS_TEST, tmp_path / ALERTS_TEST.name)


def test_the_rendered_rules_pass_promtool_check_rules(objs, promtool, tmp_path):
    write_rules(tmp_path, monitoring.rule_groups(objs))
    out = run(promtool, "check", "rules", "rules.yaml", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    alerts = sum(len(g["rules"]) for g in monitoring.rule_groups(objs))
    assert f"SUCCESS: {alerts} rules found" in out.stdout


def test_each_alert_fires_on_its_condition_and_stays_silent_otherwise(objs, promtool, tmp_path):
    write_rules(tmp_path, monitoring.rule_groups(objs))
    out = run(promtool, "test", "rules", ALERTS_TEST.name, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_has_a_case_where_it_fires_and_one_where_it_stays_silent(objs):
    alerts = {r["alert"] for g in monitoring.rule_groups(objs) for r in g["rules"]}
    cases = [c for t in yaml.safe_load(ALERTS_TEST.read_text())["tests"] for c in t["alert_rule_test"]]
    fires = {c["alertname"] for c in cases if c["exp_alerts"]}
    silent = {c["alertname"] for c in cases if not c["exp_alerts"]}
    assert alerts - fires == set(), "alerts never shown to fire"
    assert alerts - silent == set(), "alerts never shown to stay silent"
    assert (fires | silent) - alerts == set(), "tests of alerts the chart does not have"


@pytest.mark.parametrize("expr, why", [
    ("vector(1) > 2", "rules that never fire fail the firing cases"),
    ("vector(1)", "rules that always fire fail the silent cases"),
])
def test_the_rule_tests_fail_against_rules_that_ignore_their_condition(objs, promtool, tmp_path, expr, why):
    groups = copy.deepcopy(monitoring.rule_groups(objs))
    for g in groups:
        for r in g["rules"]:
            r["expr"] = expr
    write_rules(tmp_path, groups)
    out = run(promtool, "test", "rules", ALERTS_TEST.name, cwd=tmp_path)
    assert out.returncode != 0, why
    assert "FAILED" in out.stdout + out.stderr


def filled_queries(dash, values):
    named = [(f"{title} {ref}", monitoring.fill(expr, values)) for title, ref, expr in monitoring.queries(dash)]
    for name, (selector, _) in monitoring.variable_queries(dash).items():
        named.append((f"variable {name}", monitoring.fill(selector, values)))
    return named


def value_sets(dash):
    """Every variable at its default (All, the pinned constants), and one value each."""
    defaults = monitoring.all_values(dash)
    one = dict(defaults, namespace="team-a", cluster="cce-sim-0001")
    many = dict(defaults, namespace="(team-a|team-b)", cluster="(cce-sim-0001|cce-sim-0002)")
    return {"defaults": defaults, "one value": one, "two values": many}


def test_every_dashboard_query_parses_as_a_recording_rule(dashboard, promtool, tmp_path):
    named = []
    for label, values in value_sets(dashboard).items():
        named += [(f"{label} {n}", e) for n, e in filled_queries(dashboard, values)]
    assert len(named) > 20
    (tmp_path / "queries.yaml").write_text(yaml.safe_dump(monitoring.recording_rules(named), sort_keys=False))
    out = run(promtool, "check", "rules", "queries.yaml", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(named)} rules found" in out.stdout


def test_a_query_that_does_not_parse_fails_the_check(promtool, tmp_path):
    rules = monitoring.recording_rules([("broken", 'sum by (api (hss_operator_budget_rate)')])
    (tmp_path / "queries.yaml").write_text(yaml.safe_dump(rules))
    assert run(promtool, "check", "rules", "queries.yaml", cwd=tmp_path).returncode != 0


def test_every_variable_the_queries_use_is_defined(dashboard):
    defined = set(monitoring.variables(dashboard))
    for title, ref, expr in monitoring.queries(dashboard):
        used = {a or b or c for a, b, c in monitoring.VARIABLE.findall(expr)}
        assert used - defined - set(monitoring.BUILTINS) == set(), f"{title} {ref}: {expr}"


def test_the_dashboard_selects_only_families_the_operator_exports(dashboard):
    families = monitoring.exported_families()
    assert "hss_operator_findings" in families and "hss_operator_leader" in families
    for name, expr in filled_queries(dashboard, monitoring.all_values(dashboard)):
        assert monitoring.unknown_metrics(expr, families) == [], f"{name}: {expr}"


def test_the_unknown_metric_check_catches_a_misspelt_family():
    families = monitoring.exported_families()
    assert monitoring.unknown_metrics("rate(hss_operator_hss_call_total[5m])", families) == ["hss_operator_hss_call_total"]
    assert monitoring.unknown_metrics("sum(rate(hss_operator_hss_calls_total[5m]))", families) == []


# What issue #23 asks the dashboard to show, by the family that shows it.
SUBJECTS = {
    "scans by phase and outcome": "hss_operator_objects",
    "HSS calls by API": "hss_operator_hss_calls_total",
    "429s by API": "hss_operator_hss_throttled_total",
    "budget rate": "hss_operator_budget_rate",
    "budget waits": "hss_operator_budget_wait_seconds_count",
    "queue depth by namespace": "hss_operator_budget_queue_waiting",
    "findings by level and cluster": "hss_operator_findings",
    "security checks by cluster": "hss_operator_cluster_check_findings",
    "age of each cluster's last scan": "hss_operator_cluster_last_scan_timestamp_seconds",
    "reconcile failures by category": "hss_operator_reconcile_failures_total",
    "leadership": "hss_operator_leader",
}


@pytest.mark.parametrize("subject", SUBJECTS)
def test_the_dashboard_has_a_panel_for(dashboard, subject):
    family = SUBJECTS[subject]
    values = monitoring.all_values(dashboard)
    assert any(family in monitoring.metric_names(monitoring.fill(e, values)) for _, _, e in monitoring.queries(dashboard))


def test_each_release_gets_its_own_dashboard_pinned_to_it():
    a = monitoring.dashboards(render(monitoring.MONITORING_VALUES, "hss", "team-a"))
    b = monitoring.dashboards(render(monitoring.MONITORING_VALUES, "hss", "team-b"))
    (da,), (db,) = a.values(), b.values()
    assert da["uid"] != db["uid"] and len(da["uid"]) <= 40
    for dash, ns in ((da, "team-a"), (db, "team-b")):
        v = monitoring.variables(dash)
        assert (v["operator_namespace"]["type"], v["operator_namespace"]["query"]) == ("constant", ns)
        assert (v["job"]["type"], v["job"]["query"]) == ("constant", "hss-hss-operator")
        assert ns in dash["title"]


def test_the_dashboard_file_works_on_its_own_with_its_variables_as_queries():
    import json

    dash = json.loads(monitoring.DASHBOARD_FILE.read_text())
    v = monitoring.variables(dash)
    assert v["operator_namespace"]["type"] == "query" and v["job"]["type"] == "query"
    assert {p["datasource"]["uid"] for p in monitoring.panels(dash)} == {"${datasource}"}
