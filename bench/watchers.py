"""P8: watchers of replies can't starve the server.

Another visitor's conversation page (MESSAGES realistic messages, a finished reply), asked
for one request at a time, its p99 with WATCHERS event streams of replies being written
held open (WATCHERS_EACH for each of OWNERS guests) divided by its p99 with none: both on
the same ``resume-chat serve`` (its default processes, threads and stream limits), in the
same run. The offline model writes the watched replies, a chunk every CHUNK_DELAY_SECONDS,
so they are still being written while the page is measured, and every watcher is read
as it goes, as a browser would.
"""

import http.client
import re
import socket
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench import page, ttft
from bench.report import Row, duration, ratio
from tests.app_server import serving
from tests.limits import OUT_OF_REACH
from webapp.config import DEFAULTS

OWNERS, WATCHERS_EACH = 50, 4
WATCHERS = OWNERS * WATCHERS_EACH
SAMPLES, WARM_UP = 400, 50
CHUNK_DELAY_SECONDS = 2
"""The offline model's replies here are about 20 chunks: each takes about 40 s to write, so
the replies watched are still being written while the page is measured (those waiting for
a writer thread, past RUN_THREADS a process, are watched too)."""
WORKERS, THREADS = 2, 8
"""``resume-chat serve``'s defaults."""
GOAL = 2.0
EVENTS_PATH = re.compile(r'data-events="([^"]+)"')


@dataclass(frozen=True)
class Watching:
    idle: list[float]
    watched: list[float]
    """The page's latencies (s) with no watcher, then with WATCHERS open."""
    still_open: int
    """Watchers still open (not refused, not ended) when the measurement ended."""

    @property
    def ratio(self) -> float:
        return p99(self.watched) / p99(self.idle)


def p99(latencies: list[float]) -> float:
    return statistics.quantiles(latencies, n=100)[98]


def latencies(address: str, path: str, cookie: str, samples: int) -> list[float]:
    """``samples`` GETs of ``path`` one after another on a kept-alive connection."""
    host, port = address.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=ttft.HTTP_TIMEOUT_SECONDS)
    measured = []
    for _ in range(samples):
        began = time.perf_counter()
        connection.request("GET", path, headers={"Cookie": cookie})
        response = connection.getresponse()
        response.read()
        measured.append(time.perf_counter() - began)
        if response.status != 200:
            raise RuntimeError(f"GET {path}: HTTP {response.status}")
    connection.close()
    return measured


class Reader(threading.Thread):
    """Reads one watcher's frames as they come, as a browser does, until it is closed."""

    def __init__(self, stream: ttft.EventStream) -> None:
        super().__init__(daemon=True)
        self.stream, self.ended = stream, False

    def run(self) -> None:
        while frame := self.stream.read_frame():
            if "event: end" in frame:
                break
        self.ended = True


def watchers_cost(redis_url: str, instance: Path) -> Watching:
    """P8, on an app served on ``redis_url``."""
    env = {
        "FLASK_SECRET_KEY": page.SECRET_KEY,
        "FLASK_OFFLINE_CHUNK_DELAY_SECONDS": str(CHUNK_DELAY_SECONDS),
        # Every guest here is on loopback; the stream limits stay as configured.
        **{f"FLASK_{name}": str(value) for name, value in OUT_OF_REACH.items()},
    }
    with serving(redis_url, instance, workers=WORKERS, threads=THREADS, env=env) as server:
        address = f"127.0.0.1:{server.port}"
        cookie, owner = page.owners_cookie(server.url)
        path = f"/c/{page.fill_conversation(redis_url, owner)}"
        latencies(address, path, cookie, WARM_UP)
        idle = latencies(address, path, cookie, SAMPLES)
        readers = []
        for _ in range(OWNERS):
            browser = ttft.Browser(address)
            conversation = browser.start_chat("Tell me a long story, slowly.")
            events = EVENTS_PATH.search(browser.get(conversation))[1]
            readers += [Reader(browser.watch(events)) for _ in range(WATCHERS_EACH)]
            browser.close()
        for reader in readers:
            reader.start()
        watched = latencies(address, path, cookie, SAMPLES)
        still_open = sum(not reader.ended for reader in readers)
        for reader in readers:
            reader.stream.connection.sock.shutdown(socket.SHUT_RDWR)  # its read returns
            reader.join()
            reader.stream.connection.close()
    return Watching(idle, watched, still_open)


def p8_row(result: Watching) -> Row:
    return Row(
        "P8",
        f"another visitor's conversation page, p99 with {WATCHERS} reply watchers open "
        f"({OWNERS} owners) vs none",
        duration(p99(result.watched)),
        duration(p99(result.idle)),
        ratio(result.ratio),
        f"≤ {GOAL:g}",
        result.ratio <= GOAL and result.still_open == WATCHERS,
    )


def p8_note(result: Watching) -> str:
    return (
        f"P8: {SAMPLES} sequential GETs each way after {WARM_UP} to warm up; medians "
        f"{duration(statistics.median(result.watched))} with watchers, "
        f"{duration(statistics.median(result.idle))} without; {result.still_open} of "
        f"{WATCHERS} watchers still open at the end, on {WORKERS} processes × {THREADS} page "
        f"threads + {DEFAULTS['STREAMS_PER_PROCESS']} stream threads "
        f"(STREAMS_PER_OWNER {DEFAULTS['STREAMS_PER_OWNER']})."
    )
