"""The Pod Security Standards' Baseline and Restricted rules, as one pure check.

Owns ``restricted_violations(template)``: the reasons a pod (or a pod
template: anything with ``metadata`` and ``spec``) would be refused by a
namespace labelled ``pod-security.kubernetes.io/enforce: restricted``.
Restricted includes Baseline, so both profiles' controls are here, each
written from the published table (kubernetes.io, "Pod Security Standards"),
with the field path it restricts. Why our own: the chart's tests run without
a cluster, and a pod the admission controller refuses at install time is the
failure this guards against. Windows-only exemptions (``spec.os.name:
windows``) are not modelled: every pod we render is Linux.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["restricted_violations"]

BASELINE_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)
RESTRICTED_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
SELINUX_TYPES = frozenset(
    {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
)
RESTRICTED_VOLUMES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
SECCOMP_ALLOWED = frozenset({"RuntimeDefault", "Localhost"})
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"

Obj = Mapping[str, Any]


def restricted_violations(pod: Obj) -> list[str]:
    """Every Baseline and Restricted control ``pod`` fails, as "field: why" (empty: admitted)."""
    return [*_baseline(pod), *_restricted(pod)]


def _containers(spec: Obj) -> Iterator[tuple[str, Obj, Obj]]:
    """(field path, container, its securityContext) for every kind of container."""
    for kind in ("containers", "initContainers", "ephemeralContainers"):
        for i, container in enumerate(spec.get(kind) or []):
            yield f"spec.{kind}[{i}]", container, container.get("securityContext") or {}


def _baseline(pod: Obj) -> Iterator[str]:
    spec: Obj = pod.get("spec") or {}
    psc: Obj = spec.get("securityContext") or {}
    contexts = [("spec.securityContext", psc)] + [
        (f"{path}.securityContext", sc) for path, _, sc in _containers(spec)
    ]
    for path, sc in contexts:
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            yield f"{path}.windowsOptions.hostProcess: must be unset or false"
        selinux: Obj = sc.get("seLinuxOptions") or {}
        if selinux.get("type", "") not in SELINUX_TYPES:
            yield f"{path}.seLinuxOptions.type: {selinux['type']!r} is not a container type"
        for key in ("user", "role"):
            if selinux.get(key):
                yield f"{path}.seLinuxOptions.{key}: must be unset"
        seccomp = (sc.get("seccompProfile") or {}).get("type")
        if seccomp == "Unconfined":
            yield f"{path}.seccompProfile.type: Unconfined is not allowed"
        apparmor = (sc.get("appArmorProfile") or {}).get("type")
        if apparmor not in (None, "RuntimeDefault", "Localhost"):
            yield f"{path}.appArmorProfile.type: {apparmor!r} is not allowed"
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            yield f"spec.{key}: host namespaces are not allowed"
    for path, container, sc in _containers(spec):
        if sc.get("privileged"):
            yield f"{path}.securityContext.privileged: must be unset or false"
        extra = set((sc.get("capabilities") or {}).get("add") or []) - BASELINE_CAPABILITIES
        if extra:
            yield f"{path}.securityContext.capabilities.add: {sorted(extra)} are not allowed"
        if sc.get("procMount", "Default") != "Default":
            yield f"{path}.securityContext.procMount: must be Default"
        for j, port in enumerate(container.get("ports") or []):
            if port.get("hostPort"):
                yield f"{path}.ports[{j}].hostPort: host ports are not allowed"
    for i, volume in enumerate(spec.get("volumes") or []):
        if "hostPath" in volume:
            yield f"spec.volumes[{i}].hostPath: hostPath volumes are not allowed"
    for sysctl in psc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            yield f"spec.securityContext.sysctls: {sysctl.get('name')!r} is not a safe sysctl"
    annotations: Obj = (pod.get("metadata") or {}).get("annotations") or {}
    for key, value in annotations.items():
        if key.startswith(APPARMOR_ANNOTATION) and not (
            value == "runtime/default" or value.startswith("localhost/")
        ):
            yield f"metadata.annotations[{key}]: {value!r} is not allowed"


def _restricted(pod: Obj) -> Iterator[str]:
    spec: Obj = pod.get("spec") or {}
    psc: Obj = spec.get("securityContext") or {}
    for i, volume in enumerate(spec.get("volumes") or []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            yield f"spec.volumes[{i}]: volume type {sorted(kinds)} is not allowed"
    pod_non_root = psc.get("runAsNonRoot")
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    if psc.get("runAsUser") == 0:
        yield "spec.securityContext.runAsUser: must not be 0"
    if pod_seccomp is not None and pod_seccomp not in SECCOMP_ALLOWED:
        yield f"spec.securityContext.seccompProfile.type: {pod_seccomp!r} is not allowed"
    for path, _, sc in _containers(spec):
        where = f"{path}.securityContext"
        if sc.get("allowPrivilegeEscalation") is not False:
            yield f"{where}.allowPrivilegeEscalation: must be false"
        non_root = sc.get("runAsNonRoot", pod_non_root)
        if non_root is not True:
            yield f"{where}.runAsNonRoot: must be true (here or in spec.securityContext)"
        if sc.get("runAsUser") == 0:
            yield f"{where}.runAsUser: must not be 0"
        seccomp = (sc.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in SECCOMP_ALLOWED:
            yield f"{where}.seccompProfile.type: {seccomp!r}, not RuntimeDefault or Localhost"
        capabilities: Obj = sc.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            yield f"{where}.capabilities.drop: must include ALL"
        added = set(capabilities.get("add") or [])
        if added - RESTRICTED_CAPABILITIES:
            yield f"{where}.capabilities.add: only NET_BIND_SERVICE, not {sorted(added)}"
