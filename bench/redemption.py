"""P5, resume code redemption under load: the app as a real server, codes typed at /resume
by several browsers at once, timed from the client; GET /healthz under the same load as the
baseline.

The codes are issued through the domain (``resume_codes.park``) with the server's secret, on
guest conversations, so each redemption is journey 3 in full: the code looked up by its
keyed hash, used once, the parked session resumed, and the conversation moved to the
redeeming browser. Only correct codes are typed: successful redemptions are not counted by
the limit on failed entries, so the server never answers 429 here (checked).
"""

import contextlib
import http.client
import math
import os
import re
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.report import Row, duration, ratio
from tests.app_server import serving
from webapp import conversations, metrics, resume_codes
from webapp.conversations import Lifetimes, Message
from webapp.storage import connect

P5_CODES = 2000
"""Codes redeemed and timed, after P5_WARM_UP that are not kept."""
P5_WARM_UP = 100
P5_ALONE = 300
"""Codes redeemed by one client alone, for the diagnostic (unloaded) figures."""
CLIENT_THREADS = 8
"""Browsers redeeming at once, each on its own kept-alive connection."""
WORKERS, THREADS = 2, 8
SECRET_KEY = "bench-p5-secret-key"
CODE_TTL_SECONDS = 3600
LIFETIMES = Lifetimes(session_idle=1800, session_max=86400, transcript_retention=604800)
GOAL_SECONDS = 0.010
HTTP_TIMEOUT_SECONDS = 10
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass(frozen=True)
class Parked:
    code: str
    conversation_id: str


def park_conversations(redis_url: str, count: int) -> list[Parked]:
    """``count`` guest conversations (one exchange each), parked under fresh codes."""
    r = connect(redis_url)
    parked = []
    for number in range(count):
        owner = f"guest:bench-p5-{number}"
        conversation_id = conversations.create_conversation(r, owner, LIFETIMES)
        for role, text in (("user", "Plan my week, please."), ("assistant", "Gladly. " * 40)):
            message = Message(conversations.new_id(), role, text, time.time())
            conversations.append_message_and_touch(r, conversation_id, owner, message, LIFETIMES)
        conversation = conversations.get_conversation(r, conversation_id)
        issued = resume_codes.park(r, SECRET_KEY, conversation, CODE_TTL_SECONDS)
        parked.append(Parked(issued.code, conversation_id))
    r.close()
    return parked


@contextlib.contextmanager
def served_app(redis_url: str, instance: Path) -> Iterator[int]:
    """``resume-chat serve`` (offline model) on ``redis_url``; yields its port."""
    with serving(
        redis_url,
        instance,
        workers=WORKERS,
        threads=THREADS,
        env={"FLASK_SECRET_KEY": SECRET_KEY},
    ) as server:
        yield server.port


class Redeemer:
    """One client thread's kept-alive connection; each code is typed by a new browser (a
    cookie jar of its own), as on another device."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection(
            "127.0.0.1", port, timeout=HTTP_TIMEOUT_SECONDS
        )

    def _request(self, method: str, path: str, headers: dict, body: bytes | None = None):
        """(status, Location, Set-Cookie, body, seconds from sending to the whole answer)."""
        started = time.perf_counter()
        self.connection.request(method, path, body=body, headers=headers)
        response = self.connection.getresponse()
        text = response.read()
        elapsed = time.perf_counter() - started
        cookie = (response.getheader("Set-Cookie") or "").split(";", 1)[0]
        return response.status, response.getheader("Location"), cookie, text, elapsed

    def redeem(self, parked: Parked) -> float:
        """GET /resume (not timed: the form, a cookie and a CSRF token), then POST the code,
        typed as on a phone; the POST's seconds. Anything but the redirect into the
        conversation is an error."""
        status, _, cookie, page, _ = self._request("GET", "/resume", {})
        if status != 200 or not cookie:
            raise RuntimeError(f"GET /resume: HTTP {status}")
        token = CSRF_FIELD.search(page.decode())[1]
        typed = parked.code.lower().replace("-", " ")
        body = urllib.parse.urlencode({"csrf_token": token, "code": typed}).encode()
        headers = {"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"}
        status, location, _, _, elapsed = self._request("POST", "/resume", headers, body)
        if (status, location) != (302, f"/c/{parked.conversation_id}#latest"):
            raise RuntimeError(f"POST /resume: HTTP {status} to {location}")
        return elapsed

    def healthz(self) -> float:
        status, _, _, _, elapsed = self._request("GET", "/healthz", {})
        if status != 200:
            raise RuntimeError(f"GET /healthz: HTTP {status}")
        return elapsed


@dataclass(frozen=True)
class Load:
    """Seconds of each timed request, from every client thread, and the run's wall time."""

    redeem: list[float]
    healthz: list[float]
    wall: float


def _under_load(port: int, codes: list[Parked], clients: int = CLIENT_THREADS) -> Load:
    """Each of ``clients`` threads redeems its share of ``codes``, each followed by a GET
    /healthz, all threads at once."""
    shares = [codes[i::clients] for i in range(clients)]
    redeem: list[list[float]] = [[] for _ in shares]
    healthz: list[list[float]] = [[] for _ in shares]
    errors: list[BaseException] = []
    start = threading.Barrier(clients + 1)

    def client(number: int) -> None:
        redeemer = Redeemer(port)
        start.wait()
        try:
            for parked in shares[number]:
                redeem[number].append(redeemer.redeem(parked))
                healthz[number].append(redeemer.healthz())
        except BaseException as error:  # reported by the caller, with the others
            errors.append(error)
        finally:
            redeemer.connection.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    if errors:
        raise RuntimeError(f"{len(errors)} client threads failed; the first: {errors[0]!r}")
    return Load(
        [s for share in redeem for s in share], [s for share in healthz for s in share], wall
    )


@dataclass(frozen=True)
class Redemption:
    load: Load
    alone: Load
    """One client at a time: the same requests without load."""
    redeemed: int
    """Redemptions the server counted (resume_codes_redeemed) during the timed run."""
    failures: int
    """Failed entries it counted (any reason, rate_limited included): 0 expected."""
    parking_seconds: float


def redemption_latency(redis_url: str, instance: Path) -> Redemption:
    """Park P5_WARM_UP + P5_CODES + P5_ALONE conversations, start the server, redeem them
    all: the warm-up, the timed run under load, then one client alone."""
    started = time.perf_counter()
    codes = park_conversations(redis_url, P5_WARM_UP + P5_CODES + P5_ALONE)
    parking = time.perf_counter() - started
    r = connect(redis_url)
    with served_app(redis_url, instance) as port:
        _under_load(port, codes[:P5_WARM_UP])
        before = metrics.read_counters(r)
        load = _under_load(port, codes[P5_WARM_UP : P5_WARM_UP + P5_CODES])
        after = metrics.read_counters(r)
        alone = _under_load(port, codes[P5_WARM_UP + P5_CODES :], clients=1)
    r.close()

    def delta(field: str) -> int:
        return after.get(field, 0) - before.get(field, 0)

    failed = sum(delta(f) for f in after if f.startswith("resume_failures:"))
    if delta("resume_codes_redeemed") != P5_CODES or failed:
        raise RuntimeError(
            f"the server counted {delta('resume_codes_redeemed')} redemptions and {failed} "
            f"failures for {P5_CODES} correct codes"
        )
    return Redemption(load, alone, delta("resume_codes_redeemed"), failed, parking)


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def p5_row(result: Redemption) -> Row:
    """P5: the redemption's p99 against a trivial endpoint's, under the same load."""
    app = percentile(result.load.redeem, 99)
    base = percentile(result.load.healthz, 99)
    return Row(
        "P5",
        f"resume code redemption under load (POST /resume, {CLIENT_THREADS} clients), p99",
        duration(app),
        duration(base),
        ratio(app / base),
        "p99 ≤ 10 ms",
        app <= GOAL_SECONDS,
    )


def p5_notes(result: Redemption) -> list[str]:
    """Percentiles of both sides, the load, and what a redemption does."""
    load = result.load

    def spread(values: list[float]) -> str:
        return ", ".join(f"p{p} {duration(percentile(values, p))}" for p in (50, 90, 99))

    requests = len(load.redeem) + len(load.healthz) + len(load.redeem)  # GET /resume too
    return [
        f"P5: `resume-chat serve --workers {WORKERS} --threads {THREADS}` (offline model) "
        "on the bench's "
        f"server; {CLIENT_THREADS} client threads at once, each on a kept-alive connection, "
        f"redeemed {P5_CODES} codes (after {P5_WARM_UP} warm-up, not kept), every code by a "
        "new browser: GET /resume for its cookie and CSRF token (not timed), POST the code "
        "typed in lower case with spaces (timed, to the whole 302 answer), then GET /healthz "
        "(timed, the baseline, under the same load).",
        f"P5 redemption {spread(load.redeem)}; /healthz {spread(load.healthz)}; "
        f"{requests:,} requests in {load.wall:.1f} s ({requests / load.wall:,.0f}/s), "
        f"{result.redeemed} redemptions counted by the server, {result.failures} failures. "
        f"The clients share the machine's {os.cpu_count()} CPUs with the server and Redis.",
        f"P5 diagnostic, one client alone ({P5_ALONE} codes): redemption "
        f"{spread(result.alone.redeem)}; /healthz {spread(result.alone.healthz)}.",
        "P5 a redemption: HMAC of the code, HGET of its owner, REDEEM_CODE_ONCE, "
        "RESUME_PARKED_SESSION, the conversation moved to the redeeming guest (CHANGE_OWNER "
        "and its index), a counter, the rate-limit test, a signed-cookie guest id; "
        f"{P5_WARM_UP + P5_CODES + P5_ALONE} conversations parked through resume_codes.park in "
        f"{result.parking_seconds:.1f} s beforehand.",
    ]
