"""The load generator: Debian's wrk, run with the bench's Lua script, its summary parsed."""

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).with_name("wrk_report.lua")
SUMMARY_PREFIX = "BENCH-JSON "
TIMEOUT_SECONDS = 2
"""wrk's own: a request unanswered this long is counted as a timeout."""


class LoadError(RuntimeError):
    """wrk is missing, failed, or its requests were not all answered as expected."""


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise LoadError("wrk is missing: `make bench` installs it (apt-get install wrk)")
    return path


def wrk_version() -> str:
    """E.g. "wrk debian/4.1.0-3+b2 [epoll]" (``wrk -v`` prints it and exits 1)."""
    shown = subprocess.run([wrk_path(), "-v"], capture_output=True, text=True, check=False)
    return shown.stdout.splitlines()[0].split(" Copyright")[0].strip()


@dataclass(frozen=True)
class WrkResult:
    """One wrk run: answers by status, and the latency histogram's figures in seconds."""

    connections: int
    requests: int
    seconds: float
    p50: float
    p90: float
    p99: float
    max: float
    statuses: dict[int, int]
    socket_errors: int
    timeouts: int
    exhausted: int
    server_cpu: float | None
    """CPU seconds (user + system) the server's worker processes used during the run."""

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_per_request(self) -> float | None:
        """The workers' CPU seconds per answered request: unlike the rate, barely changed
        by other work on the machine."""
        return None if self.server_cpu is None else self.server_cpu / self.requests


def workers_cpu_seconds(master_pid: int) -> float:
    """CPU seconds used so far by the children of ``master_pid`` (gunicorn's workers)."""
    ticks = 0
    with open(f"/proc/{master_pid}/task/{master_pid}/children") as listed:
        children = listed.read().split()
    for pid in children:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def run_wrk(
    url: str,
    connections: int,
    seconds: float,
    headers: dict[str, str] | None = None,
    bodies: Path | None = None,
    server_pid: int | None = None,
) -> WrkResult:
    """wrk on ``url`` for ``seconds`` with ``connections`` kept-alive connections (one wrk
    thread per connection, at most two: one per CPU). With ``bodies``, each request POSTs
    the next line of that file, every line once. With ``server_pid`` (gunicorn's master),
    the CPU time its workers used is measured too."""
    threads = min(connections, 2)
    command = [
        wrk_path(),
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={seconds:g}s",
        f"--timeout={TIMEOUT_SECONDS}s",
        "--latency",
        f"--script={SCRIPT}",
    ]
    for name, value in (headers or {}).items():
        command.append(f"--header={name}: {value}")
    command.append(url)
    if bodies is not None:
        command += ["--", str(bodies), str(threads)]
    cpu_before = workers_cpu_seconds(server_pid) if server_pid else None
    finished = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 30, check=False
    )
    server_cpu = workers_cpu_seconds(server_pid) - cpu_before if server_pid else None
    summary = next(
        (line for line in finished.stdout.splitlines() if line.startswith(SUMMARY_PREFIX)), None
    )
    if finished.returncode != 0 or summary is None:
        raise LoadError(
            f"{' '.join(command)} exited {finished.returncode}:\n{finished.stdout}\n"
            f"{finished.stderr}"
        )
    data = json.loads(summary.removeprefix(SUMMARY_PREFIX))
    return WrkResult(
        connections=connections,
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        p50=data["p50_us"] / 1e6,
        p90=data["p90_us"] / 1e6,
        p99=data["p99_us"] / 1e6,
        max=data["max_us"] / 1e6,
        statuses={int(status): count for status, count in data["statuses"].items()},
        socket_errors=data["socket_errors"],
        timeouts=data["timeouts"],
        exhausted=data["exhausted"],
        server_cpu=server_cpu,
    )


def expect_only(result: WrkResult, status: int, what: str) -> None:
    """LoadError unless every answer of ``result`` had ``status`` and nothing failed."""
    unexpected = {s: n for s, n in result.statuses.items() if s != status}
    if unexpected or result.socket_errors or result.timeouts or result.exhausted:
        raise LoadError(
            f"{what}: answers by status {result.statuses} (expected only {status}), "
            f"{result.socket_errors} socket errors, {result.timeouts} timeouts, "
            f"{result.exhausted} requests beyond the prepared bodies"
        )
