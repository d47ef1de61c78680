"""Conformance: the official Python SDK's own credential providers, unchanged, against the
simulator's identity endpoints (crates/hss-simulator/src/server/identity.rs).

Each provider of huaweicloudsdkcore.auth.provider (3.1.219) gets temporary AK/SK + security token
from the simulator, and HssClient then creates a task signed with them:

| SDK provider | configured by | simulator route |
|---|---|---|
| PodIdentityCredentialProvider | HC_CONTAINER_CREDENTIALS_FULL_URI, HC_CONTAINER_AUTHORIZATION_TOKEN_FILE | POST /v1/pod-identity/credentials |
| MetadataCredentialProvider | MetadataAccessor._METADATA_ENDPOINT (hard-coded 169.254.169.254) | PUT /meta-data/latest/api/token, GET /openstack/latest/securitykey |
| EnvCredentialProvider (federation) | HUAWEICLOUD_SDK_IDP_ID, HUAWEICLOUD_SDK_ID_TOKEN_FILE, HUAWEICLOUD_SDK_IAM_ENDPOINT | POST /v3.0/OS-AUTH/id-token/tokens, POST /v3.0/OS-CREDENTIAL/securitytokens |
| OidcStsCredentialProvider | HUAWEICLOUD_OIDC_*, HUAWEICLOUD_SDK_STS_ENDPOINT | POST /v5/agencies/assume-with-oidc |

The pod identity and metadata providers fetch credentials in get_credentials(); the other two
only when the client first signs a request. The simulator's control plane (/__sim/tasks,
/__sim/identity/issued, /__sim/calls, /__sim/identity/revoke) tells what happened.

Run:  .venv/bin/python -m pytest crates/hss-simulator/conformance/test_sdk_credentials.py -v
"""
import os
import time
from dataclasses import dataclass

import pytest
import requests
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.auth.internal import MetadataAccessor, PodIdentityAccessor
from huaweicloudsdkcore.auth.provider import (
    CredentialProviderChain,
    EnvCredentialProvider,
    MetadataCredentialProvider,
    OidcStsCredentialProvider,
    PodIdentityCredentialProvider,
)
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException, SdkException
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkhss.v5 import (
    CreateTaskRequest,
    CreateTaskRequestBody,
    CreateTaskRequestBodyClusterScanInfo,
    HssClient,
    ShowTaskStatisticsRequest,
)

PROJECT_ID = "0123456789abcdef0123456789abcdef"
ID_TOKEN = "sim-id-token"  # what the simulator accepts (--identity-token)
IDP_ID = "sim-idp"  # the identity provider the simulator's federation knows
OIDC_PROVIDER_URN = "iam::0123456789abcdef0123456789abcdef:identity-provider:sim-oidc"
OIDC_AGENCY_URN = "iam::0123456789abcdef0123456789abcdef:agency:sim-agency"
AGENCY_USER = "agency-user"  # the user the simulator records for tasks made with issued keys
SHORT_TTL_S = 2.0
POLL_INTERVAL_S = 0.1
# Nothing listens on port 1 of loopback: connections are refused at once.
REFUSING_ENDPOINT = "http://127.0.0.1:1"

SIM_FLAGS = ("--project-id", PROJECT_ID, "--throttle-per-minute", "0",
             "--run-after", "0s", "--finish-after", "1s", "--identity-token", ID_TOKEN)


# ------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def sim(launch_simulator):
    """The simulator every test here shares (temporary credentials live 1h, its default)."""
    running = launch_simulator(*SIM_FLAGS)
    try:
        yield running.url
    finally:
        running.stop()


@pytest.fixture(scope="module")
def no_agency_metadata(launch_simulator):
    """A second simulator standing in for the metadata service of an ECS without an agency: its
    identity is revoked, so GET /openstack/latest/securitykey answers 401 "Please configure
    Cloud Service Agency first", which the SDK neither retries nor lets end its provider chain."""
    running = launch_simulator(*SIM_FLAGS)
    requests.post(running.url + "/__sim/identity/revoke", timeout=5).raise_for_status()
    try:
        yield running.url
    finally:
        running.stop()


@pytest.fixture(autouse=True)
def sdk_environment(monkeypatch, tmp_path):
    """No SDK variable of the caller's environment leaks into a test, nor a test's into others."""
    for name in list(os.environ):
        if name.startswith(("HUAWEICLOUD_", "HC_CONTAINER_")):
            monkeypatch.delenv(name)
    # ProfileCredentialProvider would read ~/.huaweicloud/credentials: name a file that does not exist.
    monkeypatch.setenv("HUAWEICLOUD_SDK_CREDENTIALS_FILE", str(tmp_path / "no-such-credentials-file"))
    # Configuration, not a code change: the SDK hard-codes the metadata service's address in the
    # class attribute MetadataAccessor._METADATA_ENDPOINT ("http://169.254.169.254"). Every test
    # gets a refusing address unless it points it at a simulator, so none can reach a real one.
    monkeypatch.setattr(MetadataAccessor, "_METADATA_ENDPOINT", REFUSING_ENDPOINT)


@pytest.fixture
def id_token_file(tmp_path):
    path = tmp_path / "id-token"
    path.write_text(ID_TOKEN + "\n")
    return path


# ------------------------------------------------------------------------------- the providers
def pod_identity_credentials(monkeypatch, sim, id_token_file):
    monkeypatch.setenv("HC_CONTAINER_CREDENTIALS_FULL_URI", sim + "/v1/pod-identity/credentials")
    monkeypatch.setenv("HC_CONTAINER_AUTHORIZATION_TOKEN_FILE", str(id_token_file))
    credentials = PodIdentityCredentialProvider.get_basic().get_credentials()
    assert credentials.project_id is None  # the provider leaves it unset ...
    return credentials.with_project_id(PROJECT_ID)  # ... so no IAM project lookup is attempted


def metadata_credentials(monkeypatch, sim, id_token_file):
    # Configuration, not a code change: see sdk_environment.
    monkeypatch.setattr(MetadataAccessor, "_METADATA_ENDPOINT", sim)
    provider = MetadataCredentialProvider.get_basic()
    provider.project_id = PROJECT_ID
    return provider.get_credentials()


def federation_credentials(monkeypatch, sim, id_token_file):
    monkeypatch.setenv("HUAWEICLOUD_SDK_IDP_ID", IDP_ID)
    monkeypatch.setenv("HUAWEICLOUD_SDK_ID_TOKEN_FILE", str(id_token_file))
    monkeypatch.setenv("HUAWEICLOUD_SDK_IAM_ENDPOINT", sim)
    monkeypatch.setenv("HUAWEICLOUD_SDK_PROJECT_ID", PROJECT_ID)
    return EnvCredentialProvider.get_basic().get_credentials()


def oidc_credentials(monkeypatch, sim, id_token_file):
    monkeypatch.setenv("HUAWEICLOUD_OIDC_PROVIDER_URN", OIDC_PROVIDER_URN)
    monkeypatch.setenv("HUAWEICLOUD_OIDC_AGENCY_URN", OIDC_AGENCY_URN)
    monkeypatch.setenv("HUAWEICLOUD_OIDC_TOKEN_FILE", str(id_token_file))
    monkeypatch.setenv("HUAWEICLOUD_SDK_STS_ENDPOINT", sim)
    monkeypatch.setenv("HUAWEICLOUD_SDK_PROJECT_ID", PROJECT_ID)
    return OidcStsCredentialProvider.get_basic().get_credentials()


@dataclass(frozen=True)
class Source:
    name: str  # the simulator's key in /__sim/identity/issued
    credentials: object  # (monkeypatch, sim URL, ID token file) -> BasicCredentials
    eager: bool  # whether get_credentials() itself fetches (else: the first signed request)
    refusal: str  # what the SDK's exception says when the simulator refuses the identity


SOURCES = [
    Source("pod-identity", pod_identity_credentials, eager=True, refusal="403 Client Error"),
    Source("metadata", metadata_credentials, eager=True, refusal="status_code:401"),
    Source("federation", federation_credentials, eager=False, refusal="status_code:401"),
    Source("oidc", oidc_credentials, eager=False, refusal="status_code:403"),
]
SOURCE_IDS = [s.name for s in SOURCES]


# ------------------------------------------------------------------------------- helpers
def hss_client(endpoint, credentials):
    config = HttpConfig.get_default_config()
    config.timeout = (5, 15)  # fail fast instead of the SDK's default (60, 120)
    return (HssClient.new_builder()
            .with_http_config(config)
            .with_credentials(credentials)
            .with_endpoints([endpoint])  # http:// endpoint override, no region
            .build())


def create_task(client):
    info = CreateTaskRequestBodyClusterScanInfo(scan_type_list=["benchmark"], range_type="all_cluster")
    return client.create_task(CreateTaskRequest(body=CreateTaskRequestBody(
        task_type="cluster_scan", cluster_scan_info=info)))


def control(sim, path):
    response = requests.get(sim + path, timeout=5)
    response.raise_for_status()
    return response.json()


@dataclass
class Snapshot:
    tasks: list  # GET /__sim/tasks
    issued: dict  # GET /__sim/identity/issued: source -> count
    calls: dict  # GET /__sim/calls: API -> {status: count}

    def issued_by(self, source):
        return self.issued.get(source, 0)

    def calls_with(self, status, api=None):
        return sum(n for name, by_status in self.calls.items() if api in (None, name)
                   for s, n in by_status.items() if s == str(status))


def snapshot(sim):
    return Snapshot(control(sim, "/__sim/tasks"), control(sim, "/__sim/identity/issued"), control(sim, "/__sim/calls"))


def assert_issued(sim, before, **expected):
    """Credentials issued since `before`, per source (`pod_identity` for `pod-identity`); others none."""
    after = snapshot(sim)
    got = {s: after.issued_by(s) - before.issued_by(s) for s in SOURCE_IDS}
    want = {s: expected.get(s.replace("-", "_"), 0) for s in SOURCE_IDS}
    assert got == want, "issued since the test began: %s, expected %s" % (got, want)


def assert_one_task_created_with_temporary_credentials(sim, before, response):
    after = snapshot(sim)
    assert response.status_code == 200 and response.task_id
    new = after.tasks[len(before.tasks):]
    assert [t["task_id"] for t in new] == [response.task_id], "exactly the one task created"
    assert new[0]["user"] == AGENCY_USER, "signed with the issued temporary keys, not a configured AK/SK"
    assert new[0]["project_id"] == PROJECT_ID
    assert after.calls_with(200, "CreateTask") == before.calls_with(200, "CreateTask") + 1
    assert after.calls_with(401) == before.calls_with(401), "no HSS call got 401: %s" % after.calls


def assert_apigw_401(exc_info):
    err = exc_info.value
    assert err.status_code == 401, str(err)
    assert err.error_code == "APIGW.0301", str(err)
    assert err.error_msg, str(err)


@pytest.fixture
def revoked(sim):
    """The simulator's identity revoked for one test, then restored."""
    requests.post(sim + "/__sim/identity/revoke", timeout=5).raise_for_status()
    try:
        yield
    finally:
        requests.delete(sim + "/__sim/identity/revoke", timeout=5).raise_for_status()


# ------------------------------------------------------------------------------- each provider
@pytest.mark.parametrize("source", SOURCES, ids=SOURCE_IDS)
def test_the_sdk_provider_gets_temporary_credentials_that_create_a_task(source, sim, monkeypatch, id_token_file):
    before = snapshot(sim)
    credentials = source.credentials(monkeypatch, sim, id_token_file)
    assert isinstance(credentials, BasicCredentials)
    assert credentials.project_id == PROJECT_ID
    if source.eager:
        assert credentials.ak and credentials.sk and credentials.security_token
    assert_issued(sim, before, **{source.name.replace("-", "_"): 1 if source.eager else 0})

    response = create_task(hss_client(sim, credentials))

    assert_one_task_created_with_temporary_credentials(sim, before, response)
    assert credentials.ak.startswith("TMPAK") and credentials.security_token
    # Exactly one fetch: with the default 1h lifetime the SDK does not refresh (it does when
    # less than 40 minutes remain).
    assert_issued(sim, before, **{source.name.replace("-", "_"): 1})


def test_the_provider_chain_picks_pod_identity_on_a_pod_whose_node_has_no_agency(
        sim, no_agency_metadata, monkeypatch, id_token_file):
    monkeypatch.setenv("HC_CONTAINER_CREDENTIALS_FULL_URI", sim + "/v1/pod-identity/credentials")
    monkeypatch.setenv("HC_CONTAINER_AUTHORIZATION_TOKEN_FILE", str(id_token_file))
    # Configuration, not a code change: see sdk_environment.
    monkeypatch.setattr(MetadataAccessor, "_METADATA_ENDPOINT", no_agency_metadata)
    before = snapshot(sim)
    before_metadata = snapshot(no_agency_metadata)

    # Order: OIDC (no variables), env (no AK/SK), profile (no file), metadata (no agency), pod identity.
    credentials = CredentialProviderChain.get_basic_credential_provider_chain().get_credentials()

    assert isinstance(credentials, BasicCredentials)
    assert isinstance(credentials.sts_accessor, PodIdentityAccessor)
    assert_issued(sim, before, pod_identity=1)
    assert_issued(no_agency_metadata, before_metadata)
    response = create_task(hss_client(sim, credentials.with_project_id(PROJECT_ID)))
    assert_one_task_created_with_temporary_credentials(sim, before, response)
    assert_issued(sim, before, pod_identity=1)


def test_an_unreachable_metadata_service_ends_the_sdk_chain_before_pod_identity(sim, monkeypatch, id_token_file):
    # SDK behaviour (3.1.219), pinned here: CredentialProviderChain.get_credentials catches only
    # ApiTypeError, ApiValueError and SdkException, while MetadataAccessor lets requests'
    # ConnectionError (refused, or a connect timeout) through. A pod that cannot reach
    # 169.254.169.254 at all never gets to the pod identity provider through the chain.
    monkeypatch.setenv("HC_CONTAINER_CREDENTIALS_FULL_URI", sim + "/v1/pod-identity/credentials")
    monkeypatch.setenv("HC_CONTAINER_AUTHORIZATION_TOKEN_FILE", str(id_token_file))
    before = snapshot(sim)
    with pytest.raises(requests.exceptions.ConnectionError):
        CredentialProviderChain.get_basic_credential_provider_chain().get_credentials()
    assert_issued(sim, before)


# ------------------------------------------------------------------------------- revocation
@pytest.mark.parametrize("source", SOURCES, ids=SOURCE_IDS)
def test_a_revoked_identity_makes_the_sdk_provider_raise_and_creates_nothing(
        source, sim, revoked, monkeypatch, id_token_file):
    before = snapshot(sim)
    if source.eager:
        with pytest.raises(SdkException) as exc_info:
            source.credentials(monkeypatch, sim, id_token_file)
    else:
        credentials = source.credentials(monkeypatch, sim, id_token_file)
        with pytest.raises(SdkException) as exc_info:
            create_task(hss_client(sim, credentials))  # the fetch before signing raises
    assert source.refusal in str(exc_info.value), str(exc_info.value)
    after = snapshot(sim)
    assert after.tasks == before.tasks
    assert after.calls == before.calls, "no HSS call was made"
    assert_issued(sim, before)


def test_credentials_issued_before_a_revocation_are_refused_with_401(sim, monkeypatch, id_token_file):
    credentials = pod_identity_credentials(monkeypatch, sim, id_token_file)
    client = hss_client(sim, credentials)
    requests.post(sim + "/__sim/identity/revoke", timeout=5).raise_for_status()
    try:
        before = snapshot(sim)
        with pytest.raises(ClientRequestException) as exc_info:
            create_task(client)  # still an hour to live: the SDK signs with them as they are
        assert_apigw_401(exc_info)
        after = snapshot(sim)
        assert after.tasks == before.tasks
        assert after.calls_with(401, "CreateTask") == before.calls_with(401, "CreateTask") + 1
    finally:
        requests.delete(sim + "/__sim/identity/revoke", timeout=5).raise_for_status()


# ------------------------------------------------------------------------------- security token
def test_issued_keys_are_refused_without_their_own_security_token(sim, monkeypatch, id_token_file):
    mine = pod_identity_credentials(monkeypatch, sim, id_token_file)
    other = pod_identity_credentials(monkeypatch, sim, id_token_file)
    before = snapshot(sim)
    for token in (None, other.security_token):
        direct = BasicCredentials(mine.ak, mine.sk, PROJECT_ID).with_security_token(token)
        with pytest.raises(ClientRequestException) as exc_info:
            create_task(hss_client(sim, direct))
        assert_apigw_401(exc_info)
    assert snapshot(sim).tasks == before.tasks
    direct = BasicCredentials(mine.ak, mine.sk, PROJECT_ID).with_security_token(mine.security_token)
    assert_one_task_created_with_temporary_credentials(sim, snapshot(sim), create_task(hss_client(sim, direct)))


# ------------------------------------------------------------------------------- expiry
def test_short_lived_credentials_are_refreshed_by_the_sdk_and_refused_with_401_once_expired(
        launch_simulator, monkeypatch, id_token_file):
    short = launch_simulator(*SIM_FLAGS, "--temporary-credential-ttl", "%gs" % SHORT_TTL_S)
    try:
        url = short.url
        before = snapshot(url)
        credentials = pod_identity_credentials(monkeypatch, url, id_token_file)
        first_ak = credentials.ak
        client = hss_client(url, credentials)
        assert_issued(url, before, pod_identity=1)

        # Less than 40 minutes to live: the SDK fetches fresh credentials before signing.
        issued_after = time.monotonic()
        response = create_task(client)
        assert_one_task_created_with_temporary_credentials(url, before, response)
        assert_issued(url, before, pod_identity=2)
        assert credentials.ak != first_ak
        # The keys that just signed the CreateTask, used from now on directly (no refresh).
        stale = hss_client(url, BasicCredentials(credentials.ak, credentials.sk, PROJECT_ID)
                           .with_security_token(credentials.security_token))

        # Poll a read-only API with them until the simulator refuses them; they were issued after
        # `issued_after`, so that must not happen before their lifetime has passed.
        deadline = issued_after + SHORT_TTL_S + 10
        while True:
            try:
                stale.show_task_statistics(ShowTaskStatisticsRequest(task_type="cluster_scan"))
            except ClientRequestException as err:
                refused_at = time.monotonic()
                assert err.status_code == 401 and err.error_code == "APIGW.0301", str(err)
                break
            assert time.monotonic() < deadline, "temporary credentials still accepted %.0fs after issue" % (
                time.monotonic() - issued_after)
            time.sleep(POLL_INTERVAL_S)
        assert refused_at >= issued_after + SHORT_TTL_S, "refused %.2fs after issue, before the %gs lifetime" % (
            refused_at - issued_after, SHORT_TTL_S)

        expired = snapshot(url)
        with pytest.raises(ClientRequestException) as exc_info:
            create_task(stale)
        assert_apigw_401(exc_info)
        after = snapshot(url)
        assert after.tasks == expired.tasks
        assert after.calls_with(401) == expired.calls_with(401) + 1

        # The SDK's own credentials refresh again and keep working.
        response = create_task(client)
        assert_one_task_created_with_temporary_credentials(url, after, response)
        assert_issued(url, before, pod_identity=3)
    finally:
        short.stop()
