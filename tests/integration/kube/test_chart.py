"""The Helm chart: lint, render, validate, and the CRD/example/RBAC contracts.

Uses a real helm binary (scripts/get-helm.sh puts a static one in the venv;
the ``helm`` fixture skips with the reason when there is none, and fails
under ``CI=true``).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from coordshard_operator.testing.apiserver import ApiServer
from coordshard_operator.testing.podsecurity import restricted_violations

from .conftest import RBAC_RECORD, RBAC_SETS, rbac_rules

Render = Callable[..., list[dict[str, Any]]]
Helm = Callable[..., subprocess.CompletedProcess[str]]

ROOT = Path(__file__).parents[3]
CHART = ROOT / "charts" / "coordshard"
KUBE_VERSION = "1.28.0"
NOT_BUILTIN = ("CoordinateShards", "KopfPeering", "ServiceMonitor")
"""Custom resources kubernetes-validate has no schema for (ours, kopf's, prometheus-operator's)."""
EVERY_OPTION = (
    "example.enabled=true",
    "example.natsTlsSecret=nats-mtls",
    "operator.standby=true",
    "operator.watchNamespaces={team-a,team-b}",
    "serviceMonitor.enabled=true",
    "serviceMonitor.labels.release=prom",
    "imagePullSecrets[0].name=regcred",
    *(
        option
        for part in ("operator", "example")
        for option in (
            f"{part}.nodeSelector.disk=ssd",
            f"{part}.tolerations[0].key=dedicated",
            f"{part}.tolerations[0].operator=Exists",
            f"{part}.tolerations[0].effect=NoSchedule",
            f"{part}.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
            ".nodeSelectorTerms[0].matchExpressions[0].key=zone",
            f"{part}.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
            ".nodeSelectorTerms[0].matchExpressions[0].operator=Exists",
            f"{part}.podAnnotations.team=orders",
        )
    ),
)
"""Every value the chart offers, set away from its default (a string list for --set)."""


def test_the_charts_crd_is_the_crd() -> None:
    assert (CHART / "crds" / "coordinateshards.yaml").read_text() == (
        ROOT / "crds" / "coordinateshards.yaml"
    ).read_text()


def test_helm_lint_is_clean(helm: Helm) -> None:
    out = helm("lint", "--strict", str(CHART), "--set", "example.enabled=true")
    assert out.returncode == 0, out.stdout + out.stderr


def test_values_schema_refuses_bad_values(helm: Helm) -> None:
    out = helm("template", "rel", str(CHART), "--set", "example.shards=0")
    assert out.returncode != 0 and "shards" in out.stderr
    out = helm("template", "rel", str(CHART), "--set", "operator.typo=1")
    assert out.returncode != 0


@pytest.mark.parametrize("tls", ["", "nats-mtls"])
def test_rendered_builtin_objects_validate_strictly(render_chart: Render, tls: str) -> None:
    docs = render_chart("example.enabled=true", f"example.natsTlsSecret={tls}")
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "CoordinateShards",
            *["CustomResourceDefinition"] * 3,  # ours + kopf's two peering CRDs
            "Deployment",
            "PodDisruptionBudget",
            "Secret",
            "Service",
            "ServiceAccount",
            "StatefulSet",
        ]
    )
    for doc in docs:
        if doc["kind"] == "CoordinateShards":
            continue
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def pod_templates(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each Deployment's and StatefulSet's pod template, by "Kind/name" of its owner."""
    return {
        f"{d['kind']}/{d['metadata']['name']}": d["spec"]["template"]
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet")
    }


SOME_OPTIONS = [
    pytest.param((), id="defaults"),
    pytest.param(("example.enabled=true",), id="example"),
    pytest.param(EVERY_OPTION, id="every-option"),
]


def test_every_option_renders_objects_that_validate_strictly(render_chart: Render) -> None:
    docs = render_chart(*EVERY_OPTION)
    kinds = {d["kind"] for d in docs}
    assert {"ServiceMonitor", "PodDisruptionBudget", "Service", "RoleBinding"} <= kinds
    for doc in docs:
        if doc["kind"] not in NOT_BUILTIN:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


@pytest.mark.parametrize("sets", SOME_OPTIONS)
def test_every_rendered_pod_passes_the_restricted_pod_security_profile(
    render_chart: Render, sets: tuple[str, ...]
) -> None:
    templates = pod_templates(render_chart(*sets))
    assert templates
    violations = {owner: restricted_violations(t) for owner, t in templates.items()}
    assert violations == {owner: [] for owner in templates}


def test_every_pod_is_placed_and_annotated_as_the_values_say(render_chart: Render) -> None:
    templates = pod_templates(render_chart(*EVERY_OPTION))
    assert len(templates) == 3  # active and standby operator, workers
    for template in templates.values():
        spec = template["spec"]
        assert template["metadata"]["annotations"] == {"team": "orders"}
        assert spec["imagePullSecrets"] == [{"name": "regcred"}]
        assert spec["nodeSelector"] == {"disk": "ssd"}
        assert spec["tolerations"] == [
            {"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}
        ]
        terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert terms["nodeSelectorTerms"][0]["matchExpressions"] == [
            {"key": "zone", "operator": "Exists"}
        ]


@pytest.mark.parametrize("sets", SOME_OPTIONS)
def test_every_container_with_a_read_only_root_has_an_in_memory_tmpdir(
    render_chart: Render, sets: tuple[str, ...]
) -> None:
    """natsauth writes a Secret's client key for ``ssl`` to load: TMPDIR must be writable."""
    for template in pod_templates(render_chart(*sets)).values():
        spec = template["spec"]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in spec["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            env = {e["name"]: e.get("value") for e in container["env"]}
            tmpdir = env.get("TMPDIR", "/tmp")
            mounts = [m for m in container.get("volumeMounts", []) if m["mountPath"] == tmpdir]
            assert mounts, f"{container['name']}: nothing writable at {tmpdir}"
            (mount,) = mounts
            assert not mount.get("readOnly")
            assert volumes[mount["name"]]["emptyDir"]["medium"] == "Memory"


def test_workers_read_the_database_url_from_a_secret(render_chart: Render) -> None:
    def database_env(docs: list[dict[str, Any]]) -> dict[str, Any]:
        pod = next(d for d in docs if d["kind"] == "StatefulSet")["spec"]["template"]["spec"]
        env = {e["name"]: e for e in pod["containers"][0]["env"]}
        return dict(env["COORDSHARD_DATABASE_URL"])

    url = "postgresql+psycopg://u:secret@db:5432/x"
    made = render_chart("example.enabled=true", f"example.databaseUrl={url}")
    ref = database_env(made)["valueFrom"]["secretKeyRef"]
    secret = next(d for d in made if d["kind"] == "Secret")
    assert secret["metadata"]["name"] == ref["name"]
    assert secret["stringData"] == {ref["key"]: url}
    assert url not in json.dumps(list(pod_templates(made).values()))
    theirs = render_chart(
        "example.enabled=true", "example.existingSecret=pg-app", "example.existingSecretKey=uri"
    )
    assert database_env(theirs) == {
        "name": "COORDSHARD_DATABASE_URL",
        "valueFrom": {"secretKeyRef": {"name": "pg-app", "key": "uri"}},
    }
    assert not [d for d in theirs if d["kind"] == "Secret"]


def test_workers_have_resources_a_headless_service_and_a_disruption_budget(
    render_chart: Render,
) -> None:
    docs = render_chart("example.enabled=true")
    sts = next(d for d in docs if d["kind"] == "StatefulSet")
    labels = sts["spec"]["template"]["metadata"]["labels"]
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    service = next(d for d in docs if d["kind"] == "Service")
    assert service["metadata"]["name"] == sts["spec"]["serviceName"]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"].items() <= labels.items()
    pdb = next(d for d in docs if d["kind"] == "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    off = render_chart("example.enabled=true", "example.podDisruptionBudget.enabled=false")
    assert not [d for d in off if d["kind"] == "PodDisruptionBudget"]


def test_each_service_monitor_scrapes_a_named_port_of_a_service_over_pods(
    render_chart: Render,
) -> None:
    docs = render_chart(*EVERY_OPTION)
    monitors = [d for d in docs if d["kind"] == "ServiceMonitor"]
    services = [d for d in docs if d["kind"] == "Service"]
    templates = pod_templates(docs).values()
    assert len(monitors) == 2  # the operator's, the workers'
    for monitor in monitors:
        assert monitor["metadata"]["labels"]["release"] == "prom"
        wanted = monitor["spec"]["selector"]["matchLabels"].items()
        (service,) = [s for s in services if wanted <= s["metadata"]["labels"].items()]
        (endpoint,) = monitor["spec"]["endpoints"]
        (port,) = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
        behind = [
            t
            for t in templates
            if service["spec"]["selector"].items() <= t["metadata"]["labels"].items()
        ]
        assert behind, service["metadata"]["name"]
        for template in behind:
            names = {p["name"] for p in template["spec"]["containers"][0]["ports"]}
            assert port["targetPort"] in names
    assert not [d for d in render_chart() if d["kind"] == "ServiceMonitor"]


def test_worker_pods_carry_the_downward_api_and_probes(render_chart: Render) -> None:
    sts = next(d for d in render_chart("example.enabled=true") if d["kind"] == "StatefulSet")
    pod = sts["spec"]["template"]
    assert pod["metadata"]["labels"]["coordshard.io/worker"] == "true"
    container = pod["spec"]["containers"][0]
    env = {
        e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        for e in container["env"]
    }
    assert env["COORDSHARD_POD_NAME"] == "metadata.name"
    assert env["COORDSHARD_POD_UID"] == "metadata.uid"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["lifecycle"]["preStop"]


def test_the_example_shares_one_nats_tls_secret_between_workers_and_operator(
    render_chart: Render,
) -> None:
    docs = render_chart("example.enabled=true", "example.natsTlsSecret=nats-mtls")
    pod = next(d for d in docs if d["kind"] == "StatefulSet")["spec"]["template"]["spec"]
    assert pod["volumes"][1:] == [
        {"name": "nats-tls", "secret": {"secretName": "nats-mtls", "defaultMode": 0o400}}
    ]
    container = pod["containers"][0]
    (mount,) = [m["mountPath"] for m in container["volumeMounts"] if m["name"] == "nats-tls"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["COORDSHARD_NATS_TLS_CA"] == f"{mount}/ca.crt"
    assert env["COORDSHARD_NATS_TLS_CERT"] == f"{mount}/tls.crt"
    assert env["COORDSHARD_NATS_TLS_KEY"] == f"{mount}/tls.key"
    cr = next(d for d in docs if d["kind"] == "CoordinateShards")
    assert cr["spec"]["nats"] == {"tlsSecretRef": {"name": "nats-mtls"}}
    plain = render_chart("example.enabled=true")
    volumes = next(d for d in plain if d["kind"] == "StatefulSet")["spec"]["template"]["spec"]
    assert [v["name"] for v in volumes["volumes"]] == ["tmp"]


async def test_the_example_cr_is_accepted_by_the_crd_schema(render_chart: Render) -> None:
    docs = render_chart("example.enabled=true")
    crd = next(d for d in docs if d["metadata"]["name"] == "coordinateshards.coordshard.io")
    example = next(d for d in docs if d["kind"] == "CoordinateShards")
    server = ApiServer()
    server.create_crd(crd)
    created = server.create(server.find_type("coordshard.io", "coordinateshards"), "apps", example)
    assert created["spec"]["shards"] == 64


def test_the_operator_runs_standalone_with_a_liveness_probe(render_chart: Render) -> None:
    dep = next(d for d in render_chart() if d["kind"] == "Deployment")
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:2] == ["operator", "--standalone"]
    assert dep["spec"]["replicas"] == 1
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_standby_runs_two_peered_operators_with_distinct_priorities(
    render_chart: Render,
) -> None:
    docs = render_chart("operator.standby=true")
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    args = [d["spec"]["template"]["spec"]["containers"][0]["args"] for d in deployments]
    priorities = sorted(a for arg in args for a in arg if a.startswith("--priority="))
    assert priorities == ["--priority=100", "--priority=50"]
    assert not any("--standalone" in arg for arg in args)
    assert [d["kind"] for d in docs if d["kind"].endswith("KopfPeering")] == ["ClusterKopfPeering"]
    for doc in deployments:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_secrets_are_granted_only_in_the_watched_namespaces(render_chart: Render) -> None:
    docs = render_chart("operator.watchNamespaces={team-a,team-b}")
    cluster_role = next(d for d in docs if d["kind"] == "ClusterRole")
    assert not any("secrets" in r["resources"] for r in cluster_role["rules"])
    roles = {d["metadata"]["namespace"]: d for d in docs if d["kind"] == "Role"}
    assert set(roles) == {"team-a", "team-b"}
    for role in roles.values():
        assert role["rules"] == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
    bindings = [d for d in docs if d["kind"] == "RoleBinding"]
    assert {b["metadata"]["namespace"] for b in bindings} == {"team-a", "team-b"}
    assert all(b["subjects"][0]["namespace"] == "apps" for b in bindings)
    for doc in [*roles.values(), *bindings]:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    # Cluster-wide (no watchNamespaces) the ClusterRole grants it; readSecrets=false: nowhere.
    everywhere = next(d for d in render_chart() if d["kind"] == "ClusterRole")
    assert any("secrets" in r["resources"] for r in everywhere["rules"])
    none = render_chart("operator.watchNamespaces={team-a}", "operator.readSecrets=false")
    assert not [d for d in none if d["kind"] in ("Role", "RoleBinding")]


def test_the_recorded_chart_rbac_is_what_helm_renders(render_chart: Render) -> None:
    """The operator tests compare their API requests with this record, without helm."""
    rendered = {" ".join(sets): sorted(rbac_rules(render_chart(*sets))) for sets in RBAC_SETS}
    if os.environ.get("COORDSHARD_RECORD_RBAC") == "1":
        RBAC_RECORD.write_text(_one_rule_a_line(rendered))
    recorded = json.loads(RBAC_RECORD.read_text())
    assert {k: [list(r) for r in v] for k, v in rendered.items()} == recorded, (
        f"{RBAC_RECORD.name} is stale: rerun this test with COORDSHARD_RECORD_RBAC=1"
    )


def _one_rule_a_line(record: dict[str, list[tuple[str, str, str]]]) -> str:
    blocks = [
        f"  {json.dumps(key)}: [\n" + ",\n".join(f"    {json.dumps(r)}" for r in rules) + "\n  ]"
        for key, rules in record.items()
    ]
    return "{\n" + ",\n".join(blocks) + "\n}\n"
