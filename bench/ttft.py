"""P4, time to first token: the app as a real server, and the SDK calling the same fake
Messages API directly, timed on one clock.

The fake runs in this process, so the moment it receives a request and the moment it writes
its first text delta are read on the same clock as the clients' own timestamps. What the
provider takes between the two is its own time, not the app's: it is left out of both
sides. On the app's side the fake holds its first delta until the page's watcher waits for
it, as a real model's first token (hundreds of milliseconds) comes after the page has loaded.
"""

import contextlib
import http.client
import re
import socket
import statistics
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anthropic
import redis

from tests import fake_anthropic
from tests.app_server import serving
from tests.fake_anthropic import FakeAnthropic, Hang
from tests.limits import OUT_OF_REACH
from webapp import config
from webapp.conversations import new_id
from webapp.storage import connect, keys

P4_SAMPLES = 100
"""Samples of each kind, interleaved, after P4_WARM_UP rounds that are not kept."""
P4_WARM_UP = 5
WORKERS, THREADS = 1, 8
USER_TEXT = "Can you tighten the summary at the top of my résumé?"
SECRET_KEY = "bench-secret-key"
HTTP_TIMEOUT_SECONDS = 10
"""Characters of the app's output shown when P4 fails."""
BLOCKED_TIMEOUT_SECONDS = 2
SDK_HOLD_SECONDS = 0.003
"""How long the direct SDK call waits in its read before the fake sends the first delta."""
EVENTS_PATH = re.compile(r'data-events="(/c/([^/"]+)/runs/([^/"]+)/events)"')
RUN_TEXT = re.compile(r'id="run-text"[^>]*>([^<]*)<')
CONVERSATION_PATH = re.compile(r"/c/([^/#?]+)")
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
TEXT_DATA = 'data: {"text"'


class _TimedHandler(fake_anthropic._Handler):
    """The fake's handler with TCP_NODELAY, noting when it writes each request's first delta.

    The fake writes every event as its own small send: without TCP_NODELAY, Nagle holds the
    first delta behind the previous event's delayed ACK, some 40 ms on loopback."""

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _event(self, event_type: str, data: dict) -> None:
        if event_type == "content_block_delta" and data["delta"]["type"] == "text_delta":
            self.fake.first_deltas.setdefault(self.received.number, time.perf_counter())
        super()._event(event_type, data)


class TimedFake(FakeAnthropic):
    """FakeAnthropic that notes, per request, when it arrived and when its first delta left."""

    def __init__(self) -> None:
        self.arrivals: dict[int, float] = {}
        self.first_deltas: dict[int, float] = {}
        self.latest = 0
        """The number of the newest request received."""
        super().__init__()
        # The first token is the first text: the model's thinking, which the page shows only
        # as "Thinking…", is left out of both sides.
        self.thinking = None
        self._server.RequestHandlerClass = _TimedHandler

    def _receive(self, request):
        arrived = time.perf_counter()
        received = super()._receive(request)
        self.arrivals[received.number] = arrived
        self.latest = received.number
        return received

    def wait_for_request(self, number: int) -> None:
        """Until the ``number``-th request has arrived (a release lets only those through)."""
        deadline = time.monotonic() + HTTP_TIMEOUT_SECONDS
        while self.latest < number:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the fake did not receive request {number}")
            time.sleep(0.0005)

    def last_request(self) -> tuple[float, float]:
        """When the newest request arrived, and when its first text delta was written."""
        return self.arrivals[self.latest], self.first_deltas[self.latest]


@contextlib.contextmanager
def served_app(redis_url: str, fake_url: str, instance: Path) -> Iterator[str]:
    """``resume-chat serve`` on ``redis_url`` with Claude at ``fake_url``; yields host:port."""
    env = {
        "FLASK_SECRET_KEY": SECRET_KEY,
        "ANTHROPIC_API_KEY": "bench",
        "ANTHROPIC_BASE_URL": fake_url,
        "FLASK_ANTHROPIC_MAX_RETRIES": "0",
        # Each sample is a new guest on loopback: the limits are not what is measured.
        **{f"FLASK_{name}": str(value) for name, value in OUT_OF_REACH.items()},
    }
    with serving(redis_url, instance, workers=WORKERS, threads=THREADS, env=env) as server:
        yield f"127.0.0.1:{server.port}"


@dataclass
class EventStream:
    """One Server-Sent Events response, read frame by frame."""

    connection: http.client.HTTPConnection
    response: http.client.HTTPResponse

    def read_frame(self) -> list[str]:
        """The next frame's lines (none at the end of the response)."""
        lines = []
        while line := self.response.readline():
            line = line.decode().rstrip("\n")
            if line:
                lines.append(line)
            elif lines:
                break
        return lines

    def wait_for_text(self) -> float:
        """When the first frame with text arrived."""
        frames = []
        while frame := self.read_frame():
            if any(line.startswith(TEXT_DATA) for line in frame):
                return time.perf_counter()
            frames.append(frame)
        raise RuntimeError(f"the run's events ended without text: {frames}")

    def finish(self) -> None:
        """Read up to the end event, and close."""
        while (frame := self.read_frame()) and "event: end" not in frame:
            pass
        self.connection.close()


class Browser:
    """What a browser does on the chat pages, over a kept-alive connection with its cookie."""

    def __init__(self, address: str) -> None:
        host, port = address.split(":")
        self.host, self.port = host, int(port)
        self.connection = self._connect()
        self.cookie = ""
        self.csrf_token = CSRF_FIELD.search(self.get("/"))[1]

    def _connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=HTTP_TIMEOUT_SECONDS)

    def _request(self, method: str, path: str, form: dict | None = None):
        headers = {"Cookie": self.cookie} if self.cookie else {}
        body = None
        if form is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            body = urllib.parse.urlencode(form)
        self.connection.request(method, path, body=body, headers=headers)
        response = self.connection.getresponse()
        if not self.cookie and response.getheader("Set-Cookie"):
            self.cookie = response.getheader("Set-Cookie").split(";", 1)[0]
        return response

    def get(self, path: str) -> str:
        response = self._request("GET", path)
        page = response.read().decode()
        if response.status != 200:
            raise RuntimeError(f"GET {path}: HTTP {response.status}")
        return page

    def start_chat(self, text: str) -> str:
        """POST / with ``text``, as the start page's form does, without following the
        redirect; the new conversation's path."""
        form = {"csrf_token": self.csrf_token, "message_id": new_id(), "text": text}
        response = self._request("POST", "/", form)
        response.read()
        if response.status != 302:
            raise RuntimeError(f"POST /: HTTP {response.status}")
        return f"/c/{CONVERSATION_PATH.search(response.getheader('Location'))[1]}"

    def watch(self, events_path: str) -> EventStream:
        """Open a run's events from the start (after=0-0), on a connection of their own."""
        connection = self._connect()
        connection.request("GET", f"{events_path}?after=0-0", headers={"Cookie": self.cookie})
        stream = EventStream(connection, connection.getresponse())
        if stream.response.status != 200:
            raise RuntimeError(f"GET {events_path}: HTTP {stream.response.status}")
        stream.read_frame()  # "retry: 1000", sent before the first read of the events
        return stream

    def close(self) -> None:
        self.connection.close()


class StreamWatcher(threading.Thread):
    """Blocks in XREAD on a run's events and notes when the first one came."""

    def __init__(self, r: redis.Redis, key: str) -> None:
        super().__init__(daemon=True)
        self.r, self.key = r, key
        self.arrived: float | None = None

    def run(self) -> None:
        if self.r.xread({self.key: "0-0"}, count=1, block=HTTP_TIMEOUT_SECONDS * 1000):
            self.arrived = time.perf_counter()


def _wait_until_blocked(r: redis.Redis, clients: int) -> None:
    """Until ``clients`` connections are blocked in XREAD (the app's watcher and ours)."""
    deadline = time.monotonic() + BLOCKED_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        blocked = [c for c in r.client_list() if "b" in c["flags"] and c["cmd"] == "xread"]
        if len(blocked) >= clients:
            return
        time.sleep(0.0005)
    raise RuntimeError(f"fewer than {clients} clients blocked in XREAD")


@dataclass(frozen=True)
class AppSample:
    """One message through the app, the first delta held until the page's watcher waits."""

    upstream: float
    """POST sent → the fake received the app's model request."""
    to_redis: float
    """The fake wrote the first delta → a direct XREAD on the run's events returned it."""
    downstream: float
    """The fake wrote the first delta → the SSE frame with it arrived."""

    @property
    def net(self) -> float:
        """Time to first token, the provider's own time left out."""
        return self.upstream + self.downstream


@dataclass(frozen=True)
class SdkSample:
    """One direct SDK call, the first delta held a moment while the SDK waits for it."""

    upstream: float
    """SDK call → the fake received the request."""
    downstream: float
    """The fake wrote the first delta → text_stream yielded it."""

    @property
    def net(self) -> float:
        """Time to first token, the provider's own time left out."""
        return self.upstream + self.downstream


@dataclass(frozen=True)
class UnheldSample:
    """One message through the app with the fake answering at once, the client following
    the redirect and then watching the run's events."""

    post: float
    """POST sent → its redirect received."""
    page: float
    """→ the conversation page received."""
    sse: float
    """→ the first SSE frame with text received (replayed from the start)."""
    page_had_text: bool
    """Whether the page already carried the first token (the running reply's text so far)."""

    @property
    def total(self) -> float:
        return self.post + self.page + self.sse


def app_sample(browser: Browser, fake: TimedFake, r: redis.Redis) -> AppSample:
    """POST, GET the page for the run's events, watch them; the fake sends its first delta
    once the app's watcher (and a direct one on Redis) is blocked waiting for it."""
    fake.enqueue(Hang(after=0))
    request = fake.latest + 1
    sent = time.perf_counter()
    page = browser.get(browser.start_chat(USER_TEXT))
    events_path, conversation_id, run_id = EVENTS_PATH.search(page).groups()
    stream = browser.watch(events_path)
    watcher = StreamWatcher(r, keys.run_events(conversation_id, run_id))
    watcher.start()
    _wait_until_blocked(r, clients=2)
    fake.wait_for_request(request)
    fake.release()
    arrived = stream.wait_for_text()
    stream.finish()
    watcher.join()
    received, first_delta = fake.last_request()
    if watcher.arrived is None:
        raise RuntimeError("the direct XREAD saw no chunk")
    return AppSample(
        upstream=received - sent,
        to_redis=watcher.arrived - first_delta,
        downstream=arrived - first_delta,
    )


def _sdk_stream(client: anthropic.Anthropic):
    """The SDK's stream call with the request the app makes for a first message."""
    return client.messages.stream(
        model=config.DEFAULTS["ANTHROPIC_MODEL"],
        max_tokens=config.DEFAULTS["MAX_TOKENS"],
        system=config.DEFAULTS["SYSTEM_PROMPT"],
        messages=[{"role": "user", "content": USER_TEXT}],
        thinking={"type": "adaptive", "display": "omitted"},
        output_config={"effort": config.DEFAULTS["THINKING_EFFORT"]},
        cache_control={"type": "ephemeral", "ttl": config.DEFAULTS["PROMPT_CACHE_TTL"]},
    )


def _first_text(stream) -> float:
    """When text_stream yielded its first text; reads the rest, as the app does, so that
    the connection is kept for the next call."""
    texts = iter(stream.text_stream)
    next(texts)
    arrived = time.perf_counter()
    for _ in texts:
        pass
    return arrived


def sdk_sample(client: anthropic.Anthropic, fake: TimedFake) -> SdkSample:
    """The SDK straight to the fake, the first delta held a moment so that the SDK waits for
    it in its read, as the app's SDK does."""
    fake.enqueue(Hang(after=0))
    sent = time.perf_counter()
    with _sdk_stream(client) as stream:
        threading.Timer(SDK_HOLD_SECONDS, fake.release).start()
        arrived = _first_text(stream)
    received, first_delta = fake.last_request()
    return SdkSample(upstream=received - sent, downstream=arrived - first_delta)


def sdk_unheld(client: anthropic.Anthropic) -> float:
    """The SDK straight to the fake, nothing held: call → first text."""
    sent = time.perf_counter()
    with _sdk_stream(client) as stream:
        return _first_text(stream) - sent


def unheld_sample(browser: Browser, fake: TimedFake) -> UnheldSample:
    """The app with the first delta sent at once: POST, page, the first token replayed over
    SSE. The rest of the reply waits for that, so that the page shows a running reply."""
    fake.enqueue(Hang(after=1))
    sent = time.perf_counter()
    path = browser.start_chat(USER_TEXT)
    posted = time.perf_counter()
    page = browser.get(path)
    loaded = time.perf_counter()
    stream = browser.watch(EVENTS_PATH.search(page)[1])
    arrived = stream.wait_for_text()
    fake.release()
    stream.finish()
    run_text = RUN_TEXT.search(page)
    return UnheldSample(
        post=posted - sent,
        page=loaded - posted,
        sse=arrived - loaded,
        page_had_text=bool(run_text and run_text[1].strip()),
    )


@dataclass(frozen=True)
class FirstToken:
    """P4's samples after the warm-up, one of each kind per round."""

    app: list[AppSample]
    sdk: list[SdkSample]
    sdk_unheld: list[float]
    unheld: list[UnheldSample]
    bare: list[float]
    """One bare Flask + Redis request each round: GET /readyz (a Redis PING), on the same
    kept-alive connection and server."""


def bare_request(browser: Browser) -> float:
    """The time of one GET /readyz, the app's least request that asks Redis."""
    started = time.perf_counter()
    browser.get("/readyz")
    return time.perf_counter() - started


def first_token(redis_url: str, instance: Path) -> FirstToken:
    """P4: the app served on ``redis_url`` and the SDK direct, on one fake model, in
    interleaved rounds; the server and the fake are stopped on the way out."""
    kept = FirstToken(app=[], sdk=[], sdk_unheld=[], unheld=[], bare=[])
    r = connect(redis_url, socket_timeout=HTTP_TIMEOUT_SECONDS + 1)
    client = None
    try:
        with TimedFake() as fake, served_app(redis_url, fake.url, instance) as address:
            fake.token_delay = 0.0
            client = anthropic.Anthropic(api_key="bench", base_url=fake.url, max_retries=0)
            kinds = (kept.app, kept.sdk, kept.sdk_unheld, kept.unheld, kept.bare)
            for round_ in range(P4_WARM_UP + P4_SAMPLES):
                # A new guest each round, as the app limits model calls per person and minute.
                browser = Browser(address)
                try:
                    samples = (
                        app_sample(browser, fake, r),
                        sdk_sample(client, fake),
                        sdk_unheld(client),
                        unheld_sample(browser, fake),
                        bare_request(browser),
                    )
                finally:
                    browser.close()
                if round_ >= P4_WARM_UP:
                    for kind, sample in zip(kinds, samples, strict=True):
                        kind.append(sample)
    finally:
        if client is not None:
            client.close()
        r.close()
    return kept


def p90(values: list[float]) -> float:
    """The 90th percentile."""
    return statistics.quantiles(values, n=10)[-1]
