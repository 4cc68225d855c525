"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager.

Owns ``ControlPlane``: it starts the three binaries that
``scripts/control-plane.sh`` builds (what controller-runtime's envtest runs,
plus the controller-manager), on free loopback ports, with everything in one
temporary directory, and stops them by PID. Why: the API-server double is
only as faithful as we wrote it; this is the server it imitates.

How it is set up, and why:

* etcd: one member, plain HTTP on loopback, ``--unsafe-no-fsync`` (a test
  store need not survive a power cut; fsyncs dominate on a shared disk);
* kube-apiserver: TLS with a certificate from a throwaway CA, which also
  signs client certificates (``--client-ca-file``: the admin is ``admin`` in
  ``system:masters``); a service-account signing key so the TokenRequest API
  mints tokens; ``--authorization-mode=Node,RBAC``; the default admission
  plugins with PodSecurity named explicitly; a service IP range; no cloud;
  an audit log of every request a ServiceAccount makes (``AUDIT_POLICY``), so
  a test can check what the operator asked for against the chart's RBAC;
* kube-controller-manager, with only the controllers the tests need (the
  Deployment, ReplicaSet, StatefulSet and garbage-collection controllers,
  service accounts and their tokens, namespace deletion, the root CA
  ConfigMap), logged in with the admin's certificate.

There is no scheduler and no kubelet: ``testing.kubelet`` plays their part.
Readiness is awaited, not slept for: etcd's ``/health``, the apiserver's
``/readyz`` and the controller-manager's ``/healthz`` are polled with a
deadline. ``stop`` (idempotent, also registered with ``atexit`` so a crashed
test run leaves no process behind) sends SIGTERM, then SIGKILL past a bound,
and removes the directory.
"""

from __future__ import annotations

import atexit
import base64
import http.client
import json
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from coordshard_operator.local.natsserver import free_port
from coordshard_operator.testing.certs import Issued, TestCa, signing_key
from coordshard_operator.testing.kuberest import KubeRest, write_kubeconfig

__all__ = ["AUDIT_POLICY", "CONTROLLERS", "ControlPlane", "ControlPlaneError"]

CONTROLLERS = (
    "deployment-controller",
    "replicaset-controller",
    "statefulset-controller",
    "garbage-collector-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "namespace-controller",
    "root-ca-certificate-publisher-controller",
)
"""What the controller-manager runs: enough for StatefulSets to make pods in a
namespace whose ``default`` ServiceAccount exists, and for owners to take their
dependents when they go."""

SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
START_TIMEOUT = 90.0
"""Seconds each component may take to become ready (2 busy cores: the apiserver
alone takes several seconds to install its APIs)."""
STOP_TIMEOUT = 10.0
"""Seconds between SIGTERM and SIGKILL."""
ADMIN = "admin"
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "Metadata", "userGroups": ["system:serviceaccounts"]},
        {"level": "None"},
    ],
}
"""Who is audited: ServiceAccounts only (the operator runs as one; the admin and the
controller-manager do not), at Metadata level (verb, resource, user, response code)."""


class ControlPlaneError(RuntimeError):
    """A component exited or did not become ready; the message ends with its log."""


@dataclass
class _Component:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager from ``bin_dir``.

    After ``start``: ``url`` is the apiserver, ``ca`` its CA (PEM), ``admin``
    the admin's client certificate, ``kubeconfig`` a file holding both, and
    ``startup_seconds`` how long the start took.
    """

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.url = ""
        self.startup_seconds = 0.0
        self.root: Path | None = None
        self._components: list[_Component] = []
        self._etcd = ""
        self._apiserver_args: list[str] = []
        self.unready: list[tuple[datetime, datetime]] = []
        """(from, to) of each restart: the old apiserver stopping until the new one's
        ``/readyz`` passed. Meanwhile it may answer before its RBAC caches are filled,
        refusing (403) what RBAC grants."""
        self._ca = TestCa()
        self.ca = self._ca.cert
        self.admin: Issued = self._ca.issue(ADMIN, organizations=("system:masters",))

    @property
    def kubeconfig(self) -> Path:
        """The admin's kubeconfig (``*-data`` fields, no file references)."""
        return self._dir / "admin.kubeconfig"

    @property
    def _dir(self) -> Path:
        if self.root is None:
            raise ControlPlaneError("the control plane is not started")
        return self.root

    @property
    def pids(self) -> list[int]:
        """The running components' process ids (etcd, apiserver, controller-manager)."""
        return [c.proc.pid for c in self._components]

    def rest(self) -> KubeRest:
        """A client logged in as the admin."""
        return KubeRest(self.url, ca=self.ca, cert=self.admin)

    def start(self) -> None:
        began = time.monotonic()
        self.root = Path(tempfile.mkdtemp(prefix="coordshard-control-plane-"))
        atexit.register(self.stop)
        try:
            etcd = self._start_etcd()
            self._start_apiserver(etcd)
            self._start_controller_manager()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began

    def stop(self) -> None:
        for component in reversed(self._components):
            component.stop()
        self._components.clear()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
        atexit.unregister(self.stop)

    def was_ready(self, stamp: str) -> bool:
        """Whether the apiserver was ready at ``stamp`` (an audit event's RFC 3339 time):
        outside every ``unready`` window."""
        when = datetime.fromisoformat(stamp)
        return not any(begin <= when <= end for begin, end in self.unready)

    def audit_events(self, *, user: str) -> list[dict[str, Any]]:
        """The audit log's events for ``user`` (e.g. ``system:serviceaccount:ns:name``),
        oldest first: one per request once answered, a watch's when it started and
        again when it ended."""
        lines = (self._dir / "audit.log").read_text().splitlines()
        events = [json.loads(line) for line in lines if line]
        return [e for e in events if e["user"]["username"] == user]

    def logs(self, lines: int = 30) -> str:
        """The last ``lines`` of each component's log (for a failing test's report)."""
        return "\n".join(f"--- {c.name}\n{c.tail(lines)}" for c in self._components)

    # --- the components ----------------------------------------------------

    def _spawn(self, name: str, args: list[str]) -> _Component:
        log = self._dir / f"{name}.log"
        with log.open("ab") as out:  # a restart appends
            proc = subprocess.Popen(
                [str(self.bin_dir / name), *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C of the test run is ours to forward
            )
        component = _Component(name, proc, log)
        self._components.append(component)
        return component

    def _write(self, name: str, data: bytes) -> str:
        path = self._dir / name
        path.write_bytes(data)
        path.chmod(0o600)
        return str(path)

    def _start_etcd(self) -> str:
        client, peer = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
        etcd = self._spawn(
            "etcd",
            [
                "--name=test",
                f"--data-dir={self._dir / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=test={peer}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        _await_ok(etcd, f"{client}/health", None)
        self._etcd = client
        return client

    def _start_apiserver(self, etcd: str) -> None:
        port = free_port()
        self.url = f"https://127.0.0.1:{port}"
        serving = self._ca.issue("kube-apiserver")
        sa = signing_key()
        audit_policy = self._write("audit-policy.json", json.dumps(AUDIT_POLICY).encode())
        self._apiserver_args = [
            f"--etcd-servers={etcd}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            # No "kubernetes" Service endpoints: they may not be loopback, and no pod
            # here dials the apiserver through the Service (as envtest does).
            "--endpoint-reconciler-type=none",
            f"--secure-port={port}",
            f"--tls-cert-file={self._write('apiserver.crt', serving.cert)}",
            f"--tls-private-key-file={self._write('apiserver.key', serving.key)}",
            f"--client-ca-file={self._write('ca.crt', self.ca)}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={self._write('sa.pub', sa.public)}",
            f"--service-account-signing-key-file={self._write('sa.key', sa.private)}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=PodSecurity",  # on by default; named, as relied on
            f"--audit-policy-file={audit_policy}",
            f"--audit-log-path={self._dir / 'audit.log'}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            f"--cert-dir={self._dir / 'apiserver-certs'}",
            "--v=1",
        ]
        apiserver = self._spawn("kube-apiserver", self._apiserver_args)
        write_kubeconfig(self.kubeconfig, server=self.url, ca=self.ca, user=ADMIN, cert=self.admin)
        _await_ok(apiserver, f"{self.url}/readyz", _client_context(self.ca, self.admin, self._dir))

    def restart_apiserver(self, *, compact: bool = False) -> None:
        """Stop kube-apiserver and start it again on the same port and certificates (every
        kubeconfig stays valid; every watch breaks).

        ``compact``: meanwhile write to etcd and compact its history up to that write, so
        a watch resuming from any resourceVersion seen before is told 410 Gone and must
        list again, as after a long outage.
        """
        (old,) = [c for c in self._components if c.name == "kube-apiserver"]
        stopping = datetime.now(UTC)
        old.stop()
        self._components.remove(old)
        if compact:
            _compact_etcd(self._etcd)
        apiserver = self._spawn("kube-apiserver", self._apiserver_args)
        self._components.insert(1, self._components.pop())  # keep the stop order
        _await_ok(apiserver, f"{self.url}/readyz", _client_context(self.ca, self.admin, self._dir))
        self.unready.append((stopping, datetime.now(UTC)))

    def _start_controller_manager(self) -> None:
        port = free_port()
        kubeconfig = str(self.kubeconfig)
        manager = self._spawn(
            "kube-controller-manager",
            [
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self._dir / 'controller-manager-certs'}",
                f"--controllers={','.join(CONTROLLERS)}",
                "--leader-elect=false",
                "--use-service-account-credentials=false",
                f"--service-account-private-key-file={self._dir / 'sa.key'}",
                f"--root-ca-file={self._dir / 'ca.crt'}",
                "--concurrent-statefulset-syncs=2",
                "--v=1",
            ],
        )
        # Its serving certificate is self-signed (in --cert-dir): /healthz is checked
        # for liveness, not for who serves it.
        insecure = ssl.create_default_context()
        insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE
        _await_ok(manager, f"https://127.0.0.1:{port}/healthz", insecure)


def _client_context(ca: bytes, cert: Issued, directory: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=ca.decode())
    crt, key = directory / "admin.crt", directory / "admin.key"
    crt.write_bytes(cert.cert)
    key.write_bytes(cert.key)
    key.chmod(0o600)
    ctx.load_cert_chain(crt, key)
    return ctx


def _compact_etcd(etcd: str) -> None:
    """A write, then a compaction up to it, through etcd's JSON gateway (``/v3/kv``)."""

    def call(path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{etcd}{path}", data=json.dumps(body).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            result: dict[str, Any] = json.loads(answer.read())
            return result

    key = base64.b64encode(b"/coordshard-test/compaction").decode()
    put = call("/v3/kv/put", {"key": key, "value": base64.b64encode(b"x").decode()})
    call("/v3/kv/compaction", {"revision": put["header"]["revision"], "physical": True})


def _await_ok(component: _Component, url: str, context: ssl.SSLContext | None) -> None:
    """Poll ``url`` until it answers 200; ControlPlaneError if the process exits or
    ``START_TIMEOUT`` passes first."""
    deadline = time.monotonic() + START_TIMEOUT
    last = "no answer"
    while time.monotonic() < deadline:
        if component.proc.poll() is not None:
            raise ControlPlaneError(
                f"{component.name} exited with {component.proc.returncode}:\n{component.tail()}"
            )
        try:
            with urllib.request.urlopen(url, timeout=5, context=context) as answer:
                if answer.status == 200:
                    return
                last = f"{answer.status}"
        except (OSError, http.client.HTTPException) as e:  # refused, reset, or an HTTP error
            last = str(e)
        time.sleep(0.1)
    raise ControlPlaneError(
        f"{component.name} not ready at {url} after {START_TIMEOUT}s ({last}):\n{component.tail()}"
    )
