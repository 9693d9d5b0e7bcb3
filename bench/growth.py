"""P11 and P12: what the deployment's bookkeeping costs as conversations grow ten-fold.

Two embedded servers side by side, one holding SMALL and one LARGE conversations, each made
by the app's own ``create_conversation`` (so their deadlines are mirrored as every write
mirrors them), owned ten to an owner.

- P11: GET /metrics (the counts by state, and every counter) from ``resume-chat serve`` on
  each server, with the metrics token: the median at LARGE over the median at SMALL, and at
  LARGE over GET /healthz from the same server (no Redis), ROUNDS interleaved rounds of
  REQUESTS each.
- P12: ``deadlines.sweep`` (what the process holding the interval's lock runs) once EXPIRIES
  conversations have ended whole (their sessions and transcripts by their own TTLs): the
  median at LARGE over the median at SMALL, ROUNDS interleaved rounds. Each round makes
  its EXPIRIES on both servers, waits for Redis to expire them, and times one sweep on
  each, so the number of conversations is back where it was after every round.

The note also times, once on each server, the walk over every conversation that counting
by state cost before the deadlines were mirrored (``listing.walk_conversations``).
"""

import contextlib
import statistics
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import redis

from bench.report import Row, duration, ratio
from bench.server import embedded_server
from tests.app_server import serving
from webapp import conversations, deadlines
from webapp.admin import listing
from webapp.conversations import Lifetimes
from webapp.storage import connect

SMALL, LARGE = 10_000, 100_000
EXPIRIES = 1_000
ROUNDS = 9
REQUESTS = 20
"""GET /metrics (and as many GET /healthz) per round and server."""
LIFETIMES = Lifetimes(session_idle=1800, session_max=86400, transcript_retention=604800)
ENDING = Lifetimes(session_idle=1, session_max=60, transcript_retention=2)
"""The conversations a P12 round makes: their sessions end after a second, they after two."""
PER_OWNER = 10
FILL_THREADS = 4
METRICS_TOKEN = "bench-growth-metrics-token"
P11_GROWTH_GOAL, P11_HEALTHZ_GOAL, P12_GOAL = 1.2, 5.0, 1.5


def fill(r: redis.Redis, count: int, lifetimes: Lifetimes, tag: str) -> list[str]:
    """``count`` conversations made by the app's own write, ten to an owner."""

    def make(number: int) -> str:
        owner = f"guest:bench-{tag}-{number // PER_OWNER}"
        return conversations.create_conversation(r, owner, lifetimes)

    with ThreadPoolExecutor(FILL_THREADS) as pool:
        return list(pool.map(make, range(count), chunksize=500))


@dataclass(frozen=True)
class Side:
    """One server's measurements."""

    conversations: int
    metrics: list[float]
    healthz: list[float]
    sweeps: list[float]
    swept: list[deadlines.Swept]
    walk: float

    @property
    def metrics_median(self) -> float:
        return statistics.median(self.metrics)

    @property
    def healthz_median(self) -> float:
        return statistics.median(self.healthz)

    @property
    def sweep_median(self) -> float:
        return statistics.median(self.sweeps)


@dataclass(frozen=True)
class Growth:
    small: Side
    large: Side


def _timed_get(url: str, headers: dict[str, str]) -> float:
    request = urllib.request.Request(url, headers=headers)
    started = time.perf_counter()
    with urllib.request.urlopen(request) as response:
        response.read()
        assert response.status == 200
    return time.perf_counter() - started


class _Server:
    """One embedded server, its conversations, and the app served on it."""

    def __init__(self, r: redis.Redis, app_url: str, count: int) -> None:
        self.r, self.app_url, self.count = r, app_url, count
        self.metrics: list[float] = []
        self.healthz: list[float] = []
        self.sweeps: list[float] = []
        self.swept: list[deadlines.Swept] = []

    def requests(self) -> None:
        auth = {"Authorization": f"Bearer {METRICS_TOKEN}"}
        for _ in range(REQUESTS):
            self.metrics.append(_timed_get(f"{self.app_url}/metrics", auth))
            self.healthz.append(_timed_get(f"{self.app_url}/healthz", {}))

    def make_endings(self, round_number: int) -> None:
        fill(self.r, EXPIRIES, ENDING, f"ending-{round_number}")

    def all_ended(self) -> bool:
        return deadlines.count_live(self.r).conversations <= self.count

    def sweep(self) -> None:
        started = time.perf_counter()
        swept = deadlines.sweep(self.r)
        self.sweeps.append(time.perf_counter() - started)
        self.swept.append(swept)

    def side(self, walk: float) -> Side:
        return Side(self.count, self.metrics, self.healthz, self.sweeps, self.swept, walk)


@contextlib.contextmanager
def _served(data_dir: Path, name: str, count: int) -> Iterator[_Server]:
    with embedded_server(f"resume-chat-bench-{name}-") as (_, url):
        r = connect(url)
        fill(r, count, LIFETIMES, name)
        env = {
            "FLASK_SECRET_KEY": "bench-growth",
            "FLASK_METRICS_TOKEN": METRICS_TOKEN,
            "FLASK_SWEEP_INTERVAL_SECONDS": "3600",  # only the timed sweeps sweep
        }
        with serving(url, data_dir / name, workers=1, threads=4, env=env) as app:
            yield _Server(r, app.url, count)
        r.close()


def _walk_seconds(r: redis.Redis) -> float:
    started = time.perf_counter()
    for _ in listing.walk_conversations(r):
        pass
    return time.perf_counter() - started


def growth(data_dir: Path) -> Growth:
    """P11 and P12 on two servers side by side, interleaved."""
    with _served(data_dir, "small", SMALL) as small, _served(data_dir, "large", LARGE) as large:
        servers = (small, large)
        for server in servers:
            server.requests()  # warm-up, not kept
            server.metrics.clear()
            server.healthz.clear()
        for round_number in range(ROUNDS):
            for server in servers if round_number % 2 else reversed(servers):
                server.requests()
            for server in servers:
                server.make_endings(round_number)
            deadline = time.monotonic() + 30
            while not all(server.all_ended() for server in servers):
                assert time.monotonic() < deadline, "the conversations did not end"
                time.sleep(0.1)
            for server in servers if round_number % 2 else reversed(servers):
                server.sweep()
        return Growth(small.side(_walk_seconds(small.r)), large.side(_walk_seconds(large.r)))


def rows(result: Growth) -> list[Row]:
    """P11's two ratios, P12."""
    small, large = result.small, result.large
    metrics_growth = large.metrics_median / small.metrics_median
    metrics_over_healthz = large.metrics_median / large.healthz_median
    sweep_growth = large.sweep_median / small.sweep_median
    return [
        Row(
            "P11",
            f"GET /metrics at {LARGE:,} conversations ÷ at {SMALL:,}, medians",
            duration(large.metrics_median),
            duration(small.metrics_median),
            ratio(metrics_growth),
            f"≤ {P11_GROWTH_GOAL:g}",
            metrics_growth <= P11_GROWTH_GOAL,
        ),
        Row(
            "P11 healthz",
            f"GET /metrics at {LARGE:,} conversations ÷ GET /healthz, same server, medians",
            duration(large.metrics_median),
            duration(large.healthz_median),
            ratio(metrics_over_healthz),
            f"≤ {P11_HEALTHZ_GOAL:g}",
            metrics_over_healthz <= P11_HEALTHZ_GOAL,
        ),
        Row(
            "P12",
            f"sweep of {EXPIRIES:,} ended conversations at {LARGE:,} ÷ at {SMALL:,}, medians",
            duration(large.sweep_median),
            duration(small.sweep_median),
            ratio(sweep_growth),
            f"≤ {P12_GOAL:g}",
            sweep_growth <= P12_GOAL,
        ),
    ]


def note(result: Growth) -> str:
    """How P11 and P12 were run, what each sweep settled, and the walk they replace."""
    small, large = result.small, result.large

    def settled(side: Side) -> str:
        sessions = sorted({swept.sessions_ended for swept in side.swept})
        gone = sorted({swept.conversations_gone for swept in side.swept})
        return f"sessions ended {sessions}, conversations gone {gone}"

    return (
        f"P11/P12: two embedded servers side by side, {SMALL:,} and {LARGE:,} conversations "
        f"made by create_conversation ({PER_OWNER} to an owner); /metrics from `resume-chat "
        f"serve` (1 worker, 4 threads) on each, {ROUNDS} interleaved rounds of {REQUESTS} "
        f"requests (and as many /healthz: {duration(small.healthz_median)} at {SMALL:,}); "
        f"each round then ends {EXPIRIES:,} conversations whole on both by their TTLs and "
        f"times one sweep on each: at {SMALL:,} {settled(small)}; at {LARGE:,} "
        f"{settled(large)}. Before the deadlines were mirrored, counting by state walked "
        f"every conversation: here {duration(small.walk)} at {SMALL:,} and "
        f"{duration(large.walk)} at {LARGE:,} (×{large.walk / small.walk:.1f})."
    )
