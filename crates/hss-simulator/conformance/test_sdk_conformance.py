"""Conformance: the official Huawei Cloud Python SDK, unchanged, against our HSS simulator.

The reference client for HSS v5 is `huaweicloudsdkhss` (see shared/docs/hss-api.md). Whatever
that SDK sends, the simulator must accept, and whatever the simulator answers, the SDK must parse
into its own models and exceptions exactly as it would a real HSS answer.

Simulator contract (started once per session by the `simulator` fixture):
    $HSS_SIMULATOR_BIN --listen 127.0.0.1:0 --credential AK:SK --project-id PROJECT \
        --throttle-per-minute 0 --run-after 0s --finish-after 1s
whose first stdout line is `listening on http://IP:PORT` (conftest.py starts it).
HSS_SIMULATOR_BIN defaults to <repo>/target/debug/hss-simulator.

Run:  .venv/bin/python -m pytest crates/hss-simulator/conformance -v
"""
import time
from datetime import datetime, timedelta, timezone

import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkhss.v5 import (
    CreateTaskRequest,
    CreateTaskRequestBody,
    CreateTaskRequestBodyClusterScanInfo,
    CreateTaskRequestBodyIacScanInfo,
    CreateTaskResponse,
    HssClient,
    ListClusterRiskAffectResourcesRequest,
    ListClusterRiskAffectResourcesResponse,
    ListClusterRiskAffectResourcesResponseInfoDataList,
    ListClusterRisksRequest,
    ListClusterRisksResponseInfoDataList,
    ListIacFileRisksRequest,
    ListIacFileRisksResponseInfoDataList,
    ListKubernetesClusterDetailsRequest,
    ListSecurityCheckClusterReportsRequest,
    SecurityCheckClusterReports,
    ListTaskResourcesRequest,
    ListTaskResourcesRequestBody,
    ListTaskResourcesResponseInfoClusterScanDataList,
    ListTasksRequest,
    ListTasksRequestBody,
    ListTasksResponseInfoClusterScanInfo,
    ListTasksResponseInfoDataList,
    RetryTaskRequest,
    RetryTaskRequestBody,
    RetryTaskRequestBodyClusterScanInfo,
    RetryTaskRequestBodyClusterScanInfoClusterInfoList,
    ShowTaskStatisticsRequest,
)

AK = "AKCONFORMANCE0000001"
SK = "SKconformance00000000000000000000000000001"
WRONG_SK = "SKconformance0000000000000000000000000000X"
PROJECT_ID = "0123456789abcdef0123456789abcdef"

FINISH_TIMEOUT_S = 30.0  # the simulator runs with --run-after 0s --finish-after 1s
POLL_INTERVAL_S = 0.2

ALL_SCAN_TYPES = ["cluster_vul", "risk_assessment", "benchmark"]


# ------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def simulator(launch_simulator):
    """Start `hss-simulator` (see conftest.py), yield its base URL, stop it at the end."""
    sim = launch_simulator("--credential", "%s:%s" % (AK, SK),
                           "--project-id", PROJECT_ID,
                           "--throttle-per-minute", "0",
                           "--run-after", "0s",
                           "--finish-after", "1s")
    try:
        yield sim.url
    finally:
        sim.stop()


def make_client(endpoint, sk=SK):
    config = HttpConfig.get_default_config()
    config.timeout = (5, 15)  # fail fast instead of the SDK's default (60, 120)
    return (HssClient.new_builder()
            .with_http_config(config)
            .with_credentials(BasicCredentials(AK, sk, PROJECT_ID))  # project id given: no IAM lookup
            .with_endpoints([endpoint])  # http:// endpoint override, no region
            .build())


@pytest.fixture(scope="session")
def client(simulator):
    return make_client(simulator)


@pytest.fixture(scope="session")
def client_with_wrong_secret_key(simulator):
    return make_client(simulator, sk=WRONG_SK)


# ------------------------------------------------------------------------------- helpers
def create_cluster_scan(client, scan_types=None, range_type="all_cluster", cluster_ids=None):
    info = CreateTaskRequestBodyClusterScanInfo(scan_type_list=list(scan_types or ALL_SCAN_TYPES),
                                                range_type=range_type, cluster_id_list=cluster_ids)
    return client.create_task(CreateTaskRequest(body=CreateTaskRequestBody(
        task_type="cluster_scan", cluster_scan_info=info)))


def create_iac_scan(client, file_type="k8s_yaml", file_ids=("conformance-file-1",)):
    info = CreateTaskRequestBodyIacScanInfo(file_type=file_type, file_id_list=list(file_ids))
    return client.create_task(CreateTaskRequest(body=CreateTaskRequestBody(task_type="iac_scan", iac_scan_info=info)))


def list_all_tasks(client, task_type, page_size=200, max_pages=50):
    """Every task of a type, paging with offset/limit (bounded)."""
    items, offset = [], 0
    for _ in range(max_pages):
        page = client.list_tasks(ListTasksRequest(offset=offset, limit=page_size,
                                                  body=ListTasksRequestBody(task_type=task_type)))
        assert page.status_code == 200
        assert isinstance(page.total_num, int)
        rows = page.data_list or []
        items.extend(rows)
        offset += len(rows)
        if not rows or offset >= page.total_num:
            return items
    raise AssertionError("list_tasks did not end within %d pages" % max_pages)


def find_task(client, task_type, task_id):
    return next((t for t in list_all_tasks(client, task_type) if t.task_id == task_id), None)


def wait_until(condition, timeout_s, what):
    """Poll `condition` (returns a truthy value when done) until a deadline; return its value."""
    deadline = time.monotonic() + timeout_s
    last = None
    while True:
        last = condition()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.0fs waiting for %s" % (timeout_s, what))
        time.sleep(POLL_INTERVAL_S)


def wait_for_finished(client, task_type, task_id):
    def finished():
        task = find_task(client, task_type, task_id)
        assert task is not None, "task %s vanished from list_tasks" % task_id
        return task if task.task_status == "finished" else None

    return wait_until(finished, FINISH_TIMEOUT_S, "task %s to reach task_status finished" % task_id)


def list_cluster_resources(client, task_id):
    return client.list_task_resources(ListTaskResourcesRequest(
        task_id=task_id, offset=0, limit=200, body=ListTaskResourcesRequestBody(task_type="cluster_scan")))


def task_statistics(client, task_type):
    return client.show_task_statistics(ShowTaskStatisticsRequest(task_type=task_type))


def assert_hss_error(exc_info, status_code, error_code):
    err = exc_info.value
    assert err.status_code == status_code, str(err)
    assert err.error_code == error_code, str(err)
    assert err.error_msg, "error_msg must be non-empty: %s" % err
    assert err.request_id, "X-Request-Id response header expected on errors: %s" % err


# ------------------------------------------------------------------------------- create_task
def test_create_task_for_a_cluster_scan_returns_a_task_id(client):
    response = create_cluster_scan(client)
    assert isinstance(response, CreateTaskResponse)
    assert response.status_code == 200
    assert isinstance(response.task_id, str) and response.task_id


def test_create_task_for_an_iac_scan_returns_a_task_id(client):
    response = create_iac_scan(client)
    assert isinstance(response, CreateTaskResponse)
    assert response.status_code == 200
    assert isinstance(response.task_id, str) and response.task_id


def test_every_create_task_call_makes_a_new_task_because_hss_has_no_idempotency_key(client):
    first = create_cluster_scan(client, scan_types=["benchmark"])
    second = create_cluster_scan(client, scan_types=["benchmark"])
    assert first.task_id != second.task_id


# ------------------------------------------------------------------------------- list_tasks
def test_list_tasks_with_a_task_type_filter_finds_the_created_cluster_scan_task_with_its_fields_parsed(client):
    task_id = create_cluster_scan(client, scan_types=["cluster_vul", "benchmark"]).task_id
    task = find_task(client, "cluster_scan", task_id)
    assert task is not None, "created task %s not returned by list_tasks" % task_id
    assert isinstance(task, ListTasksResponseInfoDataList)
    assert task.task_type == "cluster_scan"
    assert task.task_status in ("ready", "running", "finished")
    assert task.trigger_type == "manual"
    assert isinstance(task.start_time, int) and task.start_time > 0
    assert isinstance(task.cluster_scan_info, ListTasksResponseInfoClusterScanInfo)
    assert sorted(task.cluster_scan_info.scan_type_list) == ["benchmark", "cluster_vul"]


def test_list_tasks_with_a_task_type_filter_returns_only_tasks_of_that_type(client):
    iac_id = create_iac_scan(client).task_id
    cluster_id = create_cluster_scan(client).task_id
    cluster_tasks = list_all_tasks(client, "cluster_scan")
    iac_tasks = list_all_tasks(client, "iac_scan")
    assert all(t.task_type == "cluster_scan" for t in cluster_tasks)
    assert all(t.task_type == "iac_scan" for t in iac_tasks)
    assert cluster_id in {t.task_id for t in cluster_tasks}
    assert iac_id in {t.task_id for t in iac_tasks}
    assert iac_id not in {t.task_id for t in cluster_tasks}


def test_a_cluster_scan_task_reaches_finished_and_then_reports_its_cluster_counts(client):
    task_id = create_cluster_scan(client).task_id
    task = wait_for_finished(client, "cluster_scan", task_id)
    info = task.cluster_scan_info
    assert info is not None
    assert info.scanning_cluster_num == 0
    assert info.success_cluster_num + info.failed_cluster_num >= 1
    assert isinstance(task.end_time, int) and task.end_time >= task.start_time


# ------------------------------------------------------------------------------- list_task_resources
def test_list_task_resources_returns_cluster_rows_for_a_finished_cluster_scan_task(client):
    scan_types = ["cluster_vul", "risk_assessment"]
    task_id = create_cluster_scan(client, scan_types=scan_types).task_id
    wait_for_finished(client, "cluster_scan", task_id)
    resources = list_cluster_resources(client, task_id)
    assert resources.status_code == 200
    rows = resources.cluster_scan_data_list
    assert rows, "a finished all_cluster scan must list at least one cluster"
    assert resources.total_num == len(rows)
    for row in rows:
        assert isinstance(row, ListTaskResourcesResponseInfoClusterScanDataList)
        assert row.cluster_id and row.cluster_name
        assert row.scan_status in ("success", "failed")
        assert row.scan_detail_list, "each cluster row lists one detail per scan type"
        assert {d.scan_type for d in row.scan_detail_list} <= set(scan_types)


# ------------------------------------------------------------------------------- retry_task
def test_retry_task_on_a_finished_cluster_scan_task_succeeds(client):
    task_id = create_cluster_scan(client, scan_types=["benchmark"]).task_id
    wait_for_finished(client, "cluster_scan", task_id)
    cluster_id = list_cluster_resources(client, task_id).cluster_scan_data_list[0].cluster_id
    response = client.retry_task(RetryTaskRequest(task_id=task_id, body=RetryTaskRequestBody(
        task_type="cluster_scan", cluster_scan_info=RetryTaskRequestBodyClusterScanInfo(
            range_type="specific_cluster",
            cluster_info_list=[RetryTaskRequestBodyClusterScanInfoClusterInfoList(
                cluster_id=cluster_id, scan_type_list=["benchmark"])]))))
    assert 200 <= response.status_code < 300


# ------------------------------------------------------------------------------- show_task_statistics
def test_show_task_statistics_counts_every_created_task(client):
    before = task_statistics(client, "cluster_scan").total_num
    created = [create_cluster_scan(client).task_id for _ in range(2)]
    after = task_statistics(client, "cluster_scan")
    assert after.status_code == 200
    assert after.total_num >= before + len(created)
    assert after.total_num >= len(list_all_tasks(client, "cluster_scan")) >= len(created)
    assert isinstance(after.running_num, int) and 0 <= after.running_num <= after.total_num
    assert isinstance(after.last_task_start_time, int)


# ------------------------------------------------------------------------------- list_kubernetes_cluster_details
def test_list_kubernetes_cluster_details_lists_the_clusters_a_scan_can_target(client):
    response = client.list_kubernetes_cluster_details(ListKubernetesClusterDetailsRequest(offset=0, limit=200))
    assert response.status_code == 200
    clusters = response.cluster_info_list
    assert clusters, "the simulator should expose at least one cluster"
    assert response.total_num == len(clusters)
    for cluster in clusters:
        assert cluster.cluster_id and cluster.cluster_name and cluster.status


def test_a_specific_cluster_scan_lists_exactly_the_requested_clusters_as_resources(client):
    clusters = client.list_kubernetes_cluster_details(
        ListKubernetesClusterDetailsRequest(offset=0, limit=200)).cluster_info_list
    wanted = [clusters[0].cluster_id]
    task_id = create_cluster_scan(client, range_type="specific_cluster", cluster_ids=wanted).task_id
    wait_for_finished(client, "cluster_scan", task_id)
    rows = list_cluster_resources(client, task_id).cluster_scan_data_list
    assert [r.cluster_id for r in rows] == wanted


# ------------------------------------------------------------------------------- findings
def test_list_cluster_risks_pages_the_findings_of_a_finished_scan_and_filters_by_cluster_and_level(client):
    clusters = [c.cluster_id for c in client.list_kubernetes_cluster_details(
        ListKubernetesClusterDetailsRequest(offset=0, limit=200)).cluster_info_list]
    task_id = create_cluster_scan(client, scan_types=["risk_assessment"], range_type="specific_cluster",
                                  cluster_ids=clusters).task_id
    wait_for_finished(client, "cluster_scan", task_id)
    everything = client.list_cluster_risks(ListClusterRisksRequest(
        risk_type="risk_assessment", offset=0, limit=200))
    assert everything.status_code == 200
    rows = everything.data_list
    assert everything.total_num == len(rows) and rows, "seeded findings for the simulator's clusters"
    for row in rows:
        assert isinstance(row, ListClusterRisksResponseInfoDataList)
        assert row.cluster_id in clusters and row.risk_id and row.risk_name
        assert row.risk_level in ("high", "medium", "low", "tips")
        assert isinstance(row.risk_num, int) and isinstance(row.last_scan_time, int)
    # Paging: ten at a time (HSS's smallest page) gives the same rows.
    paged, offset = [], 0
    while offset < everything.total_num:
        paged += client.list_cluster_risks(ListClusterRisksRequest(
            risk_type="risk_assessment", offset=offset, limit=10)).data_list
        offset += 10
    assert [r.risk_id for r in paged] == [r.risk_id for r in rows]
    one = rows[0]
    filtered = client.list_cluster_risks(ListClusterRisksRequest(
        risk_type="risk_assessment", cluster_id=one.cluster_id, risk_level=one.risk_level, offset=0, limit=200))
    assert filtered.data_list and all(
        r.cluster_id == one.cluster_id and r.risk_level == one.risk_level for r in filtered.data_list)
    with pytest.raises(ClientRequestException) as err:
        client.list_cluster_risks(ListClusterRisksRequest(risk_type="risk_assessment", offset=0, limit=500))
    assert err.value.status_code == 400 and err.value.error_code == "HSS.0001"


def test_list_security_check_cluster_reports_counts_what_a_cluster_vul_scan_found(client):
    clusters = [c.cluster_id for c in client.list_kubernetes_cluster_details(
        ListKubernetesClusterDetailsRequest(offset=0, limit=200)).cluster_info_list]
    task_id = create_cluster_scan(client, scan_types=["cluster_vul"], range_type="specific_cluster",
                                  cluster_ids=clusters[:1]).task_id
    wait_for_finished(client, "cluster_scan", task_id)
    response = client.list_security_check_cluster_reports(ListSecurityCheckClusterReportsRequest(
        cluster_id=clusters[0], offset=0, limit=10))
    assert response.status_code == 200 and response.total_num == 1
    report = response.data_list[0]
    assert isinstance(report, SecurityCheckClusterReports)
    assert report.cluster_id == clusters[0]
    assert report.severity in ("Security", "Insecurity")
    for n in (report.local_image_vul_num, report.risk_config_num, report.privileged_container_num, report.scan_time):
        assert isinstance(n, int) and n >= 0


def test_list_iac_file_risks_lists_one_scanned_files_risks_and_nothing_for_a_failed_file(client):
    files = ["conformance-iac-%d" % i for i in range(6)] + ["bad-conformance"]
    task_id = create_iac_scan(client, file_ids=files).task_id
    wait_for_finished(client, "iac_scan", task_id)
    found = {}
    for file_id in files:
        response = client.list_iac_file_risks(ListIacFileRisksRequest(file_id=file_id, offset=0, limit=200))
        assert response.status_code == 200 and response.total_num == len(response.data_list)
        found[file_id] = response.data_list
    assert found["bad-conformance"] == [], "a failed scan leaves no findings"
    rows = [r for f in files[:-1] for r in found[f]]
    assert rows, "seeded findings for six files"
    for row in rows:
        assert isinstance(row, ListIacFileRisksResponseInfoDataList)
        assert row.risk_id and row.rule_id and row.risk_name
        assert row.risk_level in ("high", "medium", "low", "tips")
        assert isinstance(row.risk_num, int) and isinstance(row.last_scan_time, int)


def test_list_cluster_risk_affect_resources_names_the_resources_of_each_risk_and_pages(client):
    clusters = ["conformance-affected-%d" % i for i in range(6)]
    task_id = create_cluster_scan(client, scan_types=["risk_assessment", "benchmark"],
                                  range_type="specific_cluster", cluster_ids=clusters).task_id
    wait_for_finished(client, "cluster_scan", task_id)
    risks = [r for risk_type in ("risk_assessment", "benchmark") for cluster in clusters
             for r in client.list_cluster_risks(ListClusterRisksRequest(
                 risk_type=risk_type, cluster_id=cluster, offset=0, limit=200)).data_list]
    assert risks, "seeded findings for six clusters"
    found = {}
    for risk in risks:
        response = client.list_cluster_risk_affect_resources(ListClusterRiskAffectResourcesRequest(
            risk_id=risk.risk_id, cluster_id=risk.cluster_id, offset=0, limit=200))
        assert isinstance(response, ListClusterRiskAffectResourcesResponse)
        assert response.status_code == 200
        rows = response.data_list or []
        assert response.total_num == len(rows)
        found[risk.risk_id] = rows
        for row in rows:
            assert isinstance(row, ListClusterRiskAffectResourcesResponseInfoDataList)
            assert row.resource_name and row.resource_id and row.resource_type and row.hit_rule
            assert row.namespace is None or isinstance(row.namespace, str)
            assert row.hit_path_list and all(isinstance(p, str) and p for p in row.hit_path_list)
            assert isinstance(row.first_scan_time, int) and isinstance(row.last_scan_time, int)
            assert row.last_scan_time == risk.last_scan_time
    assert any(len({r.namespace for r in rows if r.namespace}) >= 2 for rows in found.values()), \
        "some risk affects several namespaces"
    # Paging: ten at a time (HSS's smallest page) gives the same rows, in order.
    risk_id, rows = max(found.items(), key=lambda item: len(item[1]))
    cluster = next(r.cluster_id for r in risks if r.risk_id == risk_id)
    assert len(rows) > 10, "a risk with more than one page"
    paged, offset = [], 0
    while offset < len(rows):
        paged += client.list_cluster_risk_affect_resources(ListClusterRiskAffectResourcesRequest(
            risk_id=risk_id, cluster_id=cluster, offset=offset, limit=10)).data_list
        offset += 10
    assert [r.resource_id for r in paged] == [r.resource_id for r in rows]
    namespace = next(r.namespace for r in rows if r.namespace)
    narrowed = client.list_cluster_risk_affect_resources(ListClusterRiskAffectResourcesRequest(
        risk_id=risk_id, cluster_id=cluster, namespace=namespace, offset=0, limit=200)).data_list
    assert narrowed and all(r.namespace == namespace for r in narrowed)
    unknown = client.list_cluster_risk_affect_resources(ListClusterRiskAffectResourcesRequest(
        risk_id="no-such-risk", offset=0, limit=10))
    assert unknown.status_code == 200 and unknown.total_num == 0
    with pytest.raises(ClientRequestException) as err:
        client.list_cluster_risk_affect_resources(ListClusterRiskAffectResourcesRequest(
            risk_id=risk_id, offset=0, limit=500))
    assert err.value.status_code == 400 and err.value.error_code == "HSS.0001"


# ------------------------------------------------------------------------------- authentication
def test_a_client_with_a_wrong_secret_key_gets_a_401_apigw_0301_client_request_exception(
        client_with_wrong_secret_key):
    with pytest.raises(ClientRequestException) as exc_info:
        client_with_wrong_secret_key.list_tasks(ListTasksRequest(body=ListTasksRequestBody(task_type="cluster_scan")))
    assert_hss_error(exc_info, 401, "APIGW.0301")


def test_a_create_task_with_a_bad_signature_is_rejected_and_creates_no_task(client, client_with_wrong_secret_key):
    before = task_statistics(client, "cluster_scan").total_num
    with pytest.raises(ClientRequestException) as exc_info:
        create_cluster_scan(client_with_wrong_secret_key)
    assert_hss_error(exc_info, 401, "APIGW.0301")
    assert task_statistics(client, "cluster_scan").total_num == before


def test_a_request_signed_twenty_minutes_in_the_past_is_rejected_as_clock_skew(client):
    # The SDK signs with an X-Sdk-Date header it is given instead of "now": the signature is valid,
    # only the date is outside the gateway's 15-minute window.
    stale = (datetime.now(timezone.utc) - timedelta(minutes=20)).strftime("%Y%m%dT%H%M%SZ")
    invoker = client.show_task_statistics_invoker(ShowTaskStatisticsRequest(task_type="cluster_scan"))
    with pytest.raises(ClientRequestException) as exc_info:
        invoker.add_header("X-Sdk-Date", stale).invoke()
    assert_hss_error(exc_info, 401, "APIGW.0301")


# ------------------------------------------------------------------------------- invalid input
INVALID_CREATE_BODIES = {
    "cluster scan with an empty scan type list": CreateTaskRequestBody(
        task_type="cluster_scan", cluster_scan_info=CreateTaskRequestBodyClusterScanInfo(
            scan_type_list=[], range_type="all_cluster")),
    "cluster scan with an unknown scan type": CreateTaskRequestBody(
        task_type="cluster_scan", cluster_scan_info=CreateTaskRequestBodyClusterScanInfo(
            scan_type_list=["no_such_scan"], range_type="all_cluster")),
    "specific cluster scan without cluster ids": CreateTaskRequestBody(
        task_type="cluster_scan", cluster_scan_info=CreateTaskRequestBodyClusterScanInfo(
            scan_type_list=["benchmark"], range_type="specific_cluster")),
    "cluster scan without cluster scan info": CreateTaskRequestBody(task_type="cluster_scan"),
    "iac scan with an unknown file type": CreateTaskRequestBody(
        task_type="iac_scan", iac_scan_info=CreateTaskRequestBodyIacScanInfo(
            file_type="helm_chart_x", file_id_list=["conformance-file-1"])),
    "unknown task type": CreateTaskRequestBody(task_type="no_such_task_type"),
}


@pytest.mark.parametrize("body", INVALID_CREATE_BODIES.values(), ids=INVALID_CREATE_BODIES.keys())
def test_create_task_with_invalid_input_is_rejected_with_400_hss_0001_and_creates_no_task(client, body):
    before = task_statistics(client, "cluster_scan").total_num
    with pytest.raises(ClientRequestException) as exc_info:
        client.create_task(CreateTaskRequest(body=body))
    assert_hss_error(exc_info, 400, "HSS.0001")
    assert task_statistics(client, "cluster_scan").total_num == before
