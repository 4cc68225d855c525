"""The Pod Security Standards check refuses each kind of non-compliant pod."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from coordshard_operator.testing.podsecurity import restricted_violations

Pod = dict[str, Any]


def compliant() -> Pod:
    return {
        "metadata": {"annotations": {}},
        "spec": {
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "volumes": [{"name": "tmp", "emptyDir": {"medium": "Memory"}}],
            "containers": [
                {
                    "name": "app",
                    "ports": [{"containerPort": 8080}],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
                    },
                }
            ],
        },
    }


def container(pod: Pod) -> dict[str, Any]:
    sc: dict[str, Any] = pod["spec"]["containers"][0]["securityContext"]
    return sc


def set_(*path: str, value: Any) -> Callable[[Pod], None]:
    def change(pod: Pod) -> None:
        obj = pod
        for key in path[:-1]:
            obj = obj.setdefault(key, {})
        obj[path[-1]] = value

    return change


def delete(*path: str) -> Callable[[Pod], None]:
    def change(pod: Pod) -> None:
        obj = pod
        for key in path[:-1]:
            obj = obj[key]
        del obj[path[-1]]

    return change


def on_container(**values: Any) -> Callable[[Pod], None]:
    return lambda pod: container(pod).update(values)


def add_init_container(pod: Pod) -> None:
    pod["spec"]["initContainers"] = [{"name": "init"}]


def add_volume(volume: dict[str, Any]) -> Callable[[Pod], None]:
    return lambda pod: pod["spec"]["volumes"].append({"name": "v", **volume})


def test_a_compliant_pod_passes() -> None:
    assert restricted_violations(compliant()) == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        # Baseline
        pytest.param(
            set_("spec", "securityContext", "windowsOptions", value={"hostProcess": True}),
            "windowsOptions.hostProcess",
            id="host-process",
        ),
        pytest.param(set_("spec", "hostNetwork", value=True), "spec.hostNetwork", id="host-net"),
        pytest.param(set_("spec", "hostPID", value=True), "spec.hostPID", id="host-pid"),
        pytest.param(set_("spec", "hostIPC", value=True), "spec.hostIPC", id="host-ipc"),
        pytest.param(on_container(privileged=True), "privileged", id="privileged"),
        pytest.param(
            on_container(capabilities={"drop": ["ALL"], "add": ["SYS_ADMIN"]}),
            "capabilities.add",
            id="cap-sys-admin",
        ),
        pytest.param(add_volume({"hostPath": {"path": "/"}}), "hostPath", id="host-path"),
        pytest.param(
            lambda pod: pod["spec"]["containers"][0]["ports"].append({"hostPort": 80}),
            "hostPort",
            id="host-port",
        ),
        pytest.param(
            set_(
                "metadata",
                "annotations",
                value={"container.apparmor.security.beta.kubernetes.io/app": "unconfined"},
            ),
            "apparmor",
            id="apparmor-annotation",
        ),
        pytest.param(
            on_container(appArmorProfile={"type": "Unconfined"}),
            "appArmorProfile",
            id="apparmor-field",
        ),
        pytest.param(
            on_container(seLinuxOptions={"type": "spc_t"}), "seLinuxOptions.type", id="selinux"
        ),
        pytest.param(
            set_("spec", "securityContext", "seLinuxOptions", value={"user": "root"}),
            "seLinuxOptions.user",
            id="selinux-user",
        ),
        pytest.param(on_container(procMount="Unmasked"), "procMount", id="proc-mount"),
        pytest.param(
            set_("spec", "securityContext", "seccompProfile", value={"type": "Unconfined"}),
            "seccompProfile",
            id="seccomp-unconfined",
        ),
        pytest.param(
            set_("spec", "securityContext", "sysctls", value=[{"name": "kernel.msgmax"}]),
            "sysctls",
            id="sysctl",
        ),
        # Restricted
        pytest.param(add_volume({"nfs": {"server": "x"}}), "volume type", id="nfs-volume"),
        pytest.param(
            lambda pod: container(pod).pop("allowPrivilegeEscalation"),
            "allowPrivilegeEscalation",
            id="escalation-unset",
        ),
        pytest.param(
            on_container(allowPrivilegeEscalation=True), "allowPrivilegeEscalation", id="escalate"
        ),
        pytest.param(
            delete("spec", "securityContext", "runAsNonRoot"), "runAsNonRoot", id="non-root-unset"
        ),
        pytest.param(on_container(runAsNonRoot=False), "runAsNonRoot", id="non-root-false"),
        pytest.param(set_("spec", "securityContext", "runAsUser", value=0), "runAsUser", id="uid0"),
        pytest.param(on_container(runAsUser=0), "runAsUser", id="container-uid0"),
        pytest.param(
            delete("spec", "securityContext", "seccompProfile"), "seccompProfile", id="no-seccomp"
        ),
        pytest.param(
            on_container(capabilities={"drop": ["NET_RAW"]}), "drop: must include ALL", id="drop"
        ),
        pytest.param(
            on_container(capabilities={"drop": ["ALL"], "add": ["CHOWN"]}),
            "only NET_BIND_SERVICE",
            id="cap-chown",
        ),
        pytest.param(add_init_container, "initContainers[0]", id="init-container-unhardened"),
    ],
)
def test_a_non_compliant_pod_is_refused_naming_the_field(
    change: Callable[[Pod], None], field: str
) -> None:
    pod = copy.deepcopy(compliant())
    change(pod)
    violations = restricted_violations(pod)
    assert any(field in v for v in violations), violations
