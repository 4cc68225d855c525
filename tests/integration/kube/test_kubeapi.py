"""The operator's own API client (``KubeApi``) with the credentials kopf logs in with.

The double serves HTTPS with a certificate from a throwaway CA, verifies
client certificates against that CA and knows one bearer token, as a kind,
minikube or cloud cluster does. The operator's login handler reads a kubeconfig
of the kind those clusters hand out (``*-data`` fields, base64 PEM), and
``KubeApi`` must then patch a CR's status and read a Secret over it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import kopf
import pytest

from coordshard_operator.kube import crd, handlers
from coordshard_operator.kube.errors import SecretUnavailableError
from coordshard_operator.kube.kubeapi import KubeApi
from coordshard_operator.local.natsserver import NatsServer
from coordshard_operator.rebalancer.errors import TransientError
from coordshard_operator.testing.apiserver import ApiServer
from coordshard_operator.testing.certs import Issued, TestCa
from coordshard_operator.testing.cluster import Cluster, OperatorProcess, wait_until

from .conftest import load_crd

pytestmark = pytest.mark.integration

NS = "ns"
TOKEN = "0123456789abcdef"
USER_OF_TOKEN = "token-operator"
USER_OF_CERT = "cert-operator"

Kubeconfig = Callable[..., Path]


@pytest.fixture
def ca() -> TestCa:
    return TestCa()


@pytest.fixture
async def tls_cluster(ca: TestCa) -> AsyncIterator[Cluster]:
    """A CR ``orders`` (4 shards) and a Secret ``creds`` in namespace ``ns``."""
    server = ApiServer(tls=ca.issue(), client_ca=ca.cert, tokens={TOKEN: USER_OF_TOKEN})
    await server.start()
    server.create_crd(load_crd())
    cluster = Cluster(server, namespace=NS)
    cluster.add_cr(shards=4)
    secrets = server.find_type("", "secrets")
    server.create(secrets, NS, {"metadata": {"name": "creds"}, "data": {"k": _b64(b"v")}})
    yield cluster
    await server.stop()


@pytest.fixture
def tls_apiserver(tls_cluster: Cluster) -> ApiServer:
    return tls_cluster.api


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def kubeconfig(
    tmp_path: Path, ca: TestCa, tls_apiserver: ApiServer, monkeypatch: pytest.MonkeyPatch
) -> Kubeconfig:
    """Write a one-context kubeconfig for the double and point $KUBECONFIG at it."""
    monkeypatch.delenv("COORDSHARD_KUBE_SERVER", raising=False)

    def write(*, user: dict[str, str], ca_pem: bytes | None = None, insecure: bool = False) -> Path:
        cluster: dict[str, Any] = {"server": tls_apiserver.url}
        if insecure:
            cluster["insecure-skip-tls-verify"] = True
        else:
            cluster["certificate-authority-data"] = _b64(ca_pem or ca.cert)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kind-test", "cluster": cluster}],
            "users": [{"name": "kind-test", "user": user}],
            "contexts": [
                {"name": "kind-test", "context": {"cluster": "kind-test", "user": "kind-test"}}
            ],
            "current-context": "kind-test",
        }
        path = tmp_path / "kubeconfig"
        path.write_text(json.dumps(config))  # YAML is a superset of JSON
        monkeypatch.setenv("KUBECONFIG", str(path))
        return path

    return write


def client_cert_user(pair: Issued) -> dict[str, str]:
    return {"client-certificate-data": _b64(pair.cert), "client-key-data": _b64(pair.key)}


def login() -> kopf.ConnectionInfo:
    """What kopf gets from the operator's login handler (no service account here)."""
    info = handlers.login(
        memo=kopf.Memo(), settings=kopf.OperatorSettings(), logger=logging.getLogger("test")
    )
    assert info is not None
    return info


@contextlib.asynccontextmanager
async def logged_in() -> AsyncIterator[KubeApi]:
    """A ``KubeApi`` over what the login handler read from the current kubeconfig."""
    info = login()
    api = KubeApi(lambda: info)
    try:
        yield api
    finally:
        await api.close()


async def patch_and_read(api: KubeApi, server: ApiServer) -> None:
    status: dict[str, Any] = {"shards": 4, "assignment": {"w-0": "0-3"}}
    assert await api.patch_status(namespace=NS, name="orders", status=status, previous={})
    cr = server.get(server.find_type(crd.GROUP, crd.PLURAL), NS, "orders")
    assert cr["status"]["assignment"] == {"w-0": "0-3"}
    secret = await api.get_secret(NS, "creds")
    assert secret.data == {"k": b"v"}


@pytest.mark.parametrize(
    ("credentials", "user"),
    [
        pytest.param("client-cert", USER_OF_CERT, id="client-certificate-data"),
        pytest.param("token", USER_OF_TOKEN, id="token"),
    ],
)
async def test_a_kubeconfig_with_data_fields_patches_status_and_reads_secrets(
    kubeconfig: Kubeconfig,
    tls_apiserver: ApiServer,
    ca: TestCa,
    credentials: str,
    user: str,
) -> None:
    kubeconfig(
        user=client_cert_user(ca.issue(USER_OF_CERT))
        if credentials == "client-cert"
        else {"token": TOKEN}
    )
    async with logged_in() as api:
        await patch_and_read(api, tls_apiserver)
    assert set(tls_apiserver.users) == {user}


async def test_an_unknown_token_is_401_and_the_next_login_is_used(
    kubeconfig: Kubeconfig, tls_apiserver: ApiServer
) -> None:
    kubeconfig(user={"token": "not-" + TOKEN})
    current = [login()]
    api = KubeApi(lambda: current[0])
    try:
        with pytest.raises(TransientError, match="401 Unauthorized"):
            await api.patch_status(namespace=NS, name="orders", status={"shards": 4}, previous={})
        assert tls_apiserver.users == []
        kubeconfig(user={"token": TOKEN})
        current[0] = login()  # what kopf's re-login after a 401 stores in memo
        await patch_and_read(api, tls_apiserver)
    finally:
        await api.close()
    assert set(tls_apiserver.users) == {USER_OF_TOKEN}


async def test_no_credentials_is_anonymous_and_forbidden(
    kubeconfig: Kubeconfig, tls_apiserver: ApiServer
) -> None:
    kubeconfig(user={})
    async with logged_in() as api:
        with pytest.raises(SecretUnavailableError, match="forbidden"):
            await api.get_secret(NS, "creds")
    assert tls_apiserver.users == []


async def test_a_client_certificate_from_another_ca_fails_the_handshake(
    kubeconfig: Kubeconfig, tls_apiserver: ApiServer
) -> None:
    kubeconfig(user=client_cert_user(TestCa().issue(USER_OF_CERT)))
    async with logged_in() as api:
        with pytest.raises(TransientError, match="reading Secret ns/creds"):
            await api.get_secret(NS, "creds")
    assert tls_apiserver.users == []


async def test_insecure_skip_tls_verify_trusts_any_server_certificate(
    kubeconfig: Kubeconfig, tls_apiserver: ApiServer
) -> None:
    kubeconfig(user={"token": TOKEN}, insecure=True)
    async with logged_in() as api:
        await patch_and_read(api, tls_apiserver)


async def test_a_server_certificate_from_another_ca_is_refused(
    kubeconfig: Kubeconfig, tls_apiserver: ApiServer
) -> None:
    kubeconfig(user={"token": TOKEN}, ca_pem=TestCa().cert)
    async with logged_in() as api:
        with pytest.raises(TransientError, match="certificate verify failed"):
            await api.get_secret(NS, "creds")
    assert tls_apiserver.users == []


async def test_the_operator_runs_with_a_kind_style_kubeconfig(
    kubeconfig: Kubeconfig,
    tls_cluster: Cluster,
    ca: TestCa,
    nats_server: NatsServer,
    tmp_path: Path,
) -> None:
    """kopf's watches and the operator's own status patches, both over the kubeconfig."""
    path = kubeconfig(user=client_cert_user(ca.issue(USER_OF_CERT)))
    cluster = tls_cluster
    cluster.add_pod("w-0")
    log = tmp_path / "operator.log"
    proc = OperatorProcess(
        api_url="",
        nats_url=nats_server.url,
        log=log,
        env={"COORDSHARD_KUBE_SERVER": "", "KUBECONFIG": str(path)},
    )
    try:
        await wait_until(
            lambda: cluster.assignment() == {"w-0": "0-3"} or not proc.running(),
            timeout=30,
            what="the status patched over TLS",
        )
        assert proc.running(), log.read_text()[-3000:]
    finally:
        proc.stop(timeout=3)
    assert set(cluster.api.users) == {USER_OF_CERT}
