"""P5, resume code redemption under load: the app as a real server, wrk POSTing pre-issued
codes to /resume (each code once), at 1, 2, 4 and 8 connections; GET /healthz at the same
connection counts as the baseline.

The codes are issued through the domain (``resume_codes.park``) with the server's secret, on
guest conversations, so each redemption is journey 3 in full: the code looked up by its
keyed hash, used once, the parked session resumed, and the conversation moved to the
redeeming browser. Every POST carries the cookie and CSRF token of one browser that has
only loaded /resume, as a new device has: its cookie names no guest yet, so each
redemption makes the guest that receives the conversation. Only correct codes are sent:
successful redemptions are not counted by the limit on failed entries, so the server never
answers 429 here (checked, with the server's own counters).
"""

import contextlib
import math
import os
import re
import statistics
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.load import LoadError, WrkResult, expect_only, run_wrk
from bench.report import Row, duration, ratio
from tests.app_server import AppServer, serving
from webapp import conversations, metrics, resume_codes
from webapp.conversations import Lifetimes, Message
from webapp.storage import connect

LEVELS = (1, 2, 4, 8)
"""Connections kept busy by wrk, each sending its next request as soon as it is answered."""
HEADLINE_CONNECTIONS = 8
HEADLINE_ROUNDS = 5
"""Interleaved pairs of runs (redemption, /healthz) at HEADLINE_CONNECTIONS, the load
levels' own included: the p99 of one short run moves by 2× or more on this machine, so the
headline is the median of the rounds' p99s."""
SECONDS = 2
"""Each wrk run's duration: one redemption run and one /healthz run per level."""
WARM_UP_SECONDS = 1
FIRST_RATE_GUESS = 600
"""Redemptions per second the warm-up's codes are prepared for (a run short of codes is
made again with twice as many)."""
CODE_MARGIN = 1.25
"""Codes prepared per run, over the most redemptions per second seen times its seconds."""
ATTEMPTS = 3
WORKERS, THREADS = 2, 8
SECRET_KEY = "bench-p5-secret-key"
CODE_TTL_SECONDS = 3600
LIFETIMES = Lifetimes(session_idle=1800, session_max=86400, transcript_retention=604800)
GOAL_RATIO = 2.0
"""Redemption p99 over /healthz p99 at the same load."""
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
REDIRECT = 302


@dataclass(frozen=True)
class Parked:
    code: str
    conversation_id: str


def park_conversations(redis_url: str, count: int) -> list[Parked]:
    """``count`` guest conversations (one exchange each), parked under fresh codes."""
    r = connect(redis_url)
    parked = []
    for number in range(count):
        owner = f"guest:bench-p5-{time.monotonic_ns()}-{number}"
        conversation_id = conversations.create_conversation(r, owner, LIFETIMES)
        for role, text in (("user", "Plan my week, please."), ("assistant", "Gladly. " * 40)):
            message = Message(conversations.new_id(), role, text, time.time())
            conversations.append_message_and_touch(r, conversation_id, owner, message, LIFETIMES)
        conversation = conversations.get_conversation(r, conversation_id)
        issued = resume_codes.park(r, SECRET_KEY, conversation, CODE_TTL_SECONDS)
        parked.append(Parked(issued.code, conversation_id))
    r.close()
    return parked


@dataclass(frozen=True)
class Browser:
    """The cookie and CSRF token a browser gets from GET /resume."""

    cookie: str
    csrf_token: str

    @classmethod
    def load_resume_page(cls, app_url: str) -> "Browser":
        with urllib.request.urlopen(f"{app_url}/resume") as response:
            cookie = response.headers["Set-Cookie"].split(";", 1)[0]
            page = response.read().decode()
        return cls(cookie, CSRF_FIELD.search(page)[1])

    @property
    def headers(self) -> dict[str, str]:
        return {"Cookie": self.cookie, "Content-Type": "application/x-www-form-urlencoded"}

    def write_bodies(self, codes: list[Parked], path: Path) -> Path:
        """The form bodies that type ``codes`` (lower case, spaces for hyphens, as on a
        phone), one a line, for wrk."""
        lines = (
            urllib.parse.urlencode(
                {"csrf_token": self.csrf_token, "code": p.code.lower().replace("-", " ")}
            )
            for p in codes
        )
        path.write_text("".join(f"{line}\n" for line in lines))
        return path


@contextlib.contextmanager
def served_app(redis_url: str, instance: Path) -> Iterator[AppServer]:
    """``resume-chat serve`` (offline model) on ``redis_url``."""
    env = {"FLASK_SECRET_KEY": SECRET_KEY}
    with serving(redis_url, instance, workers=WORKERS, threads=THREADS, env=env) as server:
        yield server


class Redeeming:
    """wrk POSTing fresh codes to one served app, the codes parked just before each run."""

    def __init__(self, redis_url: str, app: AppServer, work_dir: Path) -> None:
        self.redis_url, self.app, self.work_dir = redis_url, app, work_dir
        self.browser = Browser.load_resume_page(app.url)
        self.rate = FIRST_RATE_GUESS
        """The most redemptions per second seen so far, to size each run's codes."""
        self.runs = 0
        self.redirects = 0
        self.in_flight = 0
        """Requests at most still in flight when runs ended: wrk drops them, uncounted, while
        the server redeems their codes."""
        self.parking_seconds = 0.0
        self.parked = 0

    def _park(self, count: int) -> list[Parked]:
        started = time.perf_counter()
        parked = park_conversations(self.redis_url, count)
        self.parking_seconds += time.perf_counter() - started
        self.parked += count
        return parked

    def run(self, connections: int, seconds: float) -> WrkResult:
        """wrk redeems fresh codes for ``seconds``; every answer must be the redirect. A run
        whose connections ran out of codes is made again with twice as many."""
        for _ in range(ATTEMPTS):
            codes = self._park(math.ceil(self.rate * seconds * CODE_MARGIN))
            self.runs += 1
            bodies = self.browser.write_bodies(codes, self.work_dir / f"codes-{self.runs}.txt")
            result = run_wrk(
                f"{self.app.url}/resume",
                connections,
                seconds,
                self.browser.headers,
                bodies,
                server_pid=self.app.process.pid,
            )
            self.redirects += result.statuses.get(REDIRECT, 0)
            self.in_flight += connections
            if not result.exhausted:
                expect_only(result, REDIRECT, f"POST /resume, {connections} connections")
                self.rate = max(self.rate, result.per_second)
                return result
            self.rate *= 2
        raise LoadError(f"POST /resume: out of codes {ATTEMPTS} times at {self.rate:,.0f}/s")


@dataclass(frozen=True)
class Level:
    """One load level: redemptions, then /healthz, with the same connection count."""

    connections: int
    redeem: WrkResult
    healthz: WrkResult


@dataclass(frozen=True)
class Redemption:
    levels: list[Level]
    rounds: list[Level]
    """The headline's rounds at HEADLINE_CONNECTIONS (the first is that load level)."""
    warm_up_rate: float
    """Redemptions per second in the warm-up, at HEADLINE_CONNECTIONS."""
    redeemed: int
    """Redemptions the server counted (resume_codes_redeemed), warm-up included."""
    redirects: int
    """302 answers wrk counted, warm-up included."""
    failures: int
    """Failed entries it counted (any reason, rate_limited included): 0 expected."""
    parked: int
    parking_seconds: float

    def level(self, connections: int) -> Level:
        return next(level for level in self.levels if level.connections == connections)

    @property
    def p99s(self) -> tuple[float, float]:
        """The median over the headline's rounds of the redemption's p99 and /healthz's."""
        return (
            statistics.median(level.redeem.p99 for level in self.rounds),
            statistics.median(level.healthz.p99 for level in self.rounds),
        )


def redemption_latency(redis_url: str, instance: Path) -> Redemption:
    """Serve the app, warm it up, then at each of LEVELS: redeem for SECONDS, then GET
    /healthz for SECONDS; then as many pairs more at HEADLINE_CONNECTIONS as make
    HEADLINE_ROUNDS."""
    r = connect(redis_url)
    with served_app(redis_url, instance) as app:
        redeeming = Redeeming(redis_url, app, instance)
        before = metrics.read_counters(r)
        warm_up = redeeming.run(HEADLINE_CONNECTIONS, WARM_UP_SECONDS)

        def pair(connections: int) -> Level:
            redeem = redeeming.run(connections, SECONDS)
            healthz = run_wrk(
                f"{app.url}/healthz", connections, SECONDS, server_pid=app.process.pid
            )
            expect_only(healthz, 200, f"GET /healthz, {connections} connections")
            return Level(connections, redeem, healthz)

        levels = [pair(connections) for connections in LEVELS]
        rounds = [levels[LEVELS.index(HEADLINE_CONNECTIONS)]]
        rounds += [pair(HEADLINE_CONNECTIONS) for _ in range(HEADLINE_ROUNDS - 1)]
        after = metrics.read_counters(r)
    r.close()

    def delta(field: str) -> int:
        return after.get(field, 0) - before.get(field, 0)

    redirects, in_flight = redeeming.redirects, redeeming.in_flight
    failed = sum(delta(f) for f in after if f.startswith("resume_failures:"))
    if not 0 <= delta("resume_codes_redeemed") - redirects <= in_flight or failed:
        raise RuntimeError(
            f"the server counted {delta('resume_codes_redeemed')} redemptions and {failed} "
            f"failures for {redirects} redirects answered (and at most {in_flight} in flight)"
        )
    return Redemption(
        levels=levels,
        rounds=rounds,
        warm_up_rate=warm_up.per_second,
        redeemed=delta("resume_codes_redeemed"),
        redirects=redirects,
        failures=failed,
        parked=redeeming.parked,
        parking_seconds=redeeming.parking_seconds,
    )


def p5_rows(result: Redemption) -> list[Row]:
    """P5 at HEADLINE_CONNECTIONS, and /healthz at the same load."""
    app, base = result.p99s
    return [
        Row(
            "P5",
            f"resume code redemption, POST /resume, wrk {HEADLINE_CONNECTIONS} connections, "
            f"p99 (median of {HEADLINE_ROUNDS} rounds)",
            duration(app),
            duration(base),
            ratio(app / base),
            f"≤ {GOAL_RATIO:g}",
            app / base <= GOAL_RATIO,
        ),
        Row(
            "P5 baseline",
            f"GET /healthz (no Redis), wrk {HEADLINE_CONNECTIONS} connections, p99 (same)",
            duration(base),
        ),
    ]


def p5_notes(result: Redemption) -> list[str]:
    """Each level's figures, the load, and what a redemption does."""

    def figures(run: WrkResult) -> str:
        return (
            f"{run.per_second:,.0f}/s, p50 {duration(run.p50)}, p90 {duration(run.p90)}, "
            f"p99 {duration(run.p99)}, workers' CPU {duration(run.cpu_per_request)}/request"
        )

    redeem_cpu = statistics.median(level.redeem.cpu_per_request for level in result.levels)
    levels = "; ".join(
        f"{level.connections} conn: redeem {figures(level.redeem)} | /healthz "
        f"{figures(level.healthz)}"
        for level in result.levels
    )
    return [
        f"P5: `resume-chat serve --workers {WORKERS} --threads {THREADS}` (offline model); "
        f"wrk (wrk_report.lua) POSTs one fresh code per request with one browser's cookie and "
        f"CSRF token (from GET /resume), typed in lower case with spaces; {SECONDS} s per run, "
        f"redemption then /healthz at each connection count, after a {WARM_UP_SECONDS} s "
        f"warm-up ({result.warm_up_rate:,.0f} redemptions/s); latencies are wrk's "
        "(--latency), to the whole answer.",
        f"P5 by load level: {levels}.",
        f"P5 rounds at {HEADLINE_CONNECTIONS} connections (redemption p99 / /healthz p99): "
        + ", ".join(
            f"{duration(level.redeem.p99)} / {duration(level.healthz.p99)} "
            f"({ratio(level.redeem.p99 / level.healthz.p99)})"
            for level in result.rounds
        )
        + ".",
        f"P5 bound: a redemption costs the app's workers {duration(redeem_cpu)} of CPU "
        f"(median over levels), so {os.cpu_count()} CPUs shared with Redis and wrk serve at "
        f"most {os.cpu_count() / redeem_cpu:,.0f}/s, and c connections each waiting for the "
        f"others wait about c × {duration(redeem_cpu / os.cpu_count())} on average, before "
        "Redis, wrk and the rest of the machine take their share.",
        f"P5 checks: every answer a 302 ({result.redirects:,}); the server counted "
        f"{result.redeemed:,} redemptions (the 302s and those still in flight when a run "
        f"ended) and {result.failures} failures; "
        f"{result.parked:,} conversations parked through resume_codes.park beforehand "
        f"({result.parking_seconds:.1f} s, not timed).",
        "P5 a redemption, in two round trips: the HMAC of the code, the failed-entry "
        "limit's slot taken and the code read; RESUME_AND_SETTLE, which uses the code, "
        "gives the conversation to the redeeming guest, moves its index entries, mirrors "
        "its deadlines and counts it, with the code marked used and the slot given back; "
        "and a new guest id in the signed session cookie.",
    ]
