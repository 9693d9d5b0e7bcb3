"""Shared pieces of the fault tests: a Redis server of the test's own, the app as real
gunicorn processes writing replies through the fake Claude API, guests that fill in and post
forms as a browser does, and a ledger of what the app acknowledged.

No fixture here is autouse: tests beside these that use only the root fixtures are unaffected.
"""

import html
import http.client
import http.cookiejar
import re
import threading
import time
import traceback
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import Message as Headers

import pytest
import redis

from tests.app_server import AppServer
from tests.conftest import CSRF_FIELD, MESSAGE_ID_FIELD
from tests.fake_anthropic import carrying_on
from tests.limits import OUT_OF_REACH
from tests.test_run_processes import FORM_BUTTON
from webapp import conversations
from webapp.storage import connect
from webapp.storage.embedded import EmbeddedRedis
from webapp.storage.scripts import ALL_SCRIPTS

REPLY = (
    "Every chunk of this reply is checkpointed in Redis as it is written, so a crash of the "
    "process writing it loses nothing that was already sent, and the reader can carry on "
    "from exactly there when the server is back."
)
"""What the fake Claude answers (or, to a prefilled beginning of it, the rest of it). Plain
words only, so that the page shows it as it is."""

RUN_SETTINGS = {
    "ANTHROPIC_MAX_RETRIES": 0,
    "RUN_HEARTBEAT_SECONDS": 0.2,
    "RUN_STALE_SECONDS": 2,
    "RUN_REAPER_INTERVAL_SECONDS": 0.5,
    **OUT_OF_REACH,
}
"""Short heartbeat, staleness and reaper period, so that a cut reply is reaped within
seconds."""

WRITING_MARK = 'id="run"'
"""In a conversation page while its latest reply is being written (templates/chat/_run.html)."""
RIGHT_BACK = "We'll be right back"
"""The title of the page every request gets while Redis is unreachable."""
TITLE = re.compile(r"<title>([^<]*)</title>")
JOIN_TIMEOUT_SECONDS = 15
"""Bound of the wait for guest threads to finish their last request once told to stop."""

TRANSPORT_ERRORS = (OSError, http.client.HTTPException)
"""What a request raises when the connection is refused, cut, or too slow (``timeout=``)."""


@dataclass(frozen=True)
class Answer:
    """One HTTP answer, as the app sent it (redirects are not followed), and when."""

    method: str
    path: str
    status: int
    headers: Headers
    body: str
    sent_at: float
    """time.monotonic() when the request was sent."""
    answered_at: float

    @property
    def location(self) -> str:
        """The path a redirect leads to (without its fragment)."""
        return urllib.parse.urlparse(self.headers.get("Location", "")).path

    @property
    def writing(self) -> bool:
        """The page shows a reply still being written."""
        return WRITING_MARK in self.body

    @property
    def right_back(self) -> bool:
        """The friendly 503 page for Redis being unreachable, with its Retry-After."""
        return (
            self.status == 503
            and RIGHT_BACK in html.unescape(self.body)
            and self.headers.get("Retry-After", "").isdigit()
        )

    def form_fields(self) -> dict[str, str]:
        """The hidden fields of the page's message form."""
        return {
            "csrf_token": CSRF_FIELD.search(self.body)[1],
            "message_id": MESSAGE_ID_FIELD.search(self.body)[1],
        }

    def buttons(self) -> dict[str, tuple[str, str]]:
        """The page's post buttons: label -> (action, csrf token)."""
        return {label: (action, token) for action, token, label in FORM_BUTTON.findall(self.body)}

    def __str__(self) -> str:
        title = TITLE.search(self.body)
        shown = html.unescape(title[1]) if title else self.body[:200]
        return f"{self.method} {self.path} -> {self.status} {shown!r}"


class _EveryAnswer(urllib.request.HTTPErrorProcessor):
    """Hands back every response as it came: redirects are not followed, errors not raised,
    so that a POST is seen to be acknowledged by its own 302."""

    def http_response(self, request, response):
        return response


class Guest:
    """One browser with its own cookies (so its own guest identity), talking to the app."""

    def __init__(self, base_url: str, timeout: float = 10) -> None:
        self.base_url, self.timeout = base_url, timeout
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), _EveryAnswer()
        )

    def request(self, path: str, data: dict | None = None) -> Answer:
        """GET ``path``, or POST ``data`` to it as a form. A refused or cut connection, or
        an answer slower than ``timeout``, raises (one of TRANSPORT_ERRORS)."""
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        request = urllib.request.Request(self.base_url + path, data=body)
        sent_at = time.monotonic()
        with self._opener.open(request, timeout=self.timeout) as response:
            text = response.read().decode()
        method = "GET" if data is None else "POST"
        return Answer(
            method, path, response.status, response.headers, text, sent_at, time.monotonic()
        )

    def page(self, path: str) -> Answer:
        """GET a page that must answer 200."""
        answer = self.request(path)
        assert answer.status == 200, answer
        return answer

    def wait_until_written(self, conversation_id: str, timeout: float = 20) -> Answer:
        """Reload the conversation page (as it does by itself without JavaScript) until no
        reply is being written; that page."""
        deadline = time.monotonic() + timeout
        while (page := self.page(f"/c/{conversation_id}")).writing:
            assert time.monotonic() < deadline, f"the reply still runs after {timeout} s"
            time.sleep(0.1)
        return page

    def press(self, conversation_id: str, label: str) -> Answer:
        """Press a post button of the conversation page, as the page offers it."""
        buttons = self.page(f"/c/{conversation_id}").buttons()
        assert label in buttons, f"the page offers no {label} button, only {sorted(buttons)}"
        action, token = buttons[label]
        return self.request(action, {"csrf_token": token})


def send_path(conversation_id: str | None) -> tuple[str, str]:
    """The page with the message form, and where the form posts: the start page for a new
    conversation, else the conversation's."""
    if conversation_id is None:
        return "/", "/"
    return f"/c/{conversation_id}", f"/c/{conversation_id}/messages"


@dataclass(frozen=True)
class Sent:
    """A user message the app acknowledged."""

    conversation_id: str
    message_id: str
    text: str


class Ledger:
    """Every message guests sent, and those the app acknowledged (answered with its 302)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._attempted: set[str] = set()
        self._acknowledged: list[Sent] = []

    def attempt(self, message_id: str) -> None:
        with self._lock:
            self._attempted.add(message_id)

    def acknowledge(self, sent: Sent) -> None:
        with self._lock:
            self._acknowledged.append(sent)

    @property
    def acknowledged(self) -> list[Sent]:
        with self._lock:
            return list(self._acknowledged)

    @property
    def attempted(self) -> set[str]:
        with self._lock:
            return set(self._attempted)

    def conversation_ids(self) -> list[str]:
        return list(dict.fromkeys(sent.conversation_id for sent in self.acknowledged))

    def acknowledged_in(self, conversation_id: str) -> list[Sent]:
        return [sent for sent in self.acknowledged if sent.conversation_id == conversation_id]


def assert_ledger_stored(r: redis.Redis, ledger: Ledger) -> None:
    """Every acknowledged message is stored in its conversation exactly once, in the order
    it was acknowledged; every stored user message is one a guest sent."""
    assert ledger.acknowledged, "nothing was acknowledged"
    attempted = ledger.attempted
    for conversation_id in ledger.conversation_ids():
        stored = [m for m in conversations.read_messages(r, conversation_id) if m.role == "user"]
        acknowledged = [(s.message_id, s.text) for s in ledger.acknowledged_in(conversation_id)]
        ids = {message_id for message_id, _ in acknowledged}
        kept = [(m.id, m.content) for m in stored if m.id in ids]
        assert kept == acknowledged, (
            f"conversation {conversation_id}: acknowledged {acknowledged}, stored {kept}"
        )
        unknown = [(m.id, m.content) for m in stored if m.id not in attempted]
        assert not unknown, f"conversation {conversation_id} stores messages never sent: {unknown}"


class Senders:
    """Guests who keep sending messages through an outage, in a Crowd: each loads the form
    and sends it, and until it is acknowledged sends the same form again (a user pressing
    Send again, the page keeping the text), whatever the answer. Every answer is kept, and
    every acknowledged message is in the ledger."""

    EXPECTED = {"GET": {200, 503}, "POST": {302, 409, 503}}
    """What a request may be answered during an outage: 409 while the previous reply is
    being written, 503 (the right-back page) while Redis cannot take it."""

    def __init__(self, base_url: str, count: int, pause: float) -> None:
        self.guests = [Guest(base_url) for _ in range(count)]
        self.pause = pause
        self.ledger = Ledger()
        self.acknowledged_by = [0] * count
        self._answers: list[tuple[int, Answer]] = []
        self._lock = threading.Lock()

    def crowd(self) -> "Crowd":
        return Crowd(self._send, len(self.guests))

    def answers(self) -> list[Answer]:
        with self._lock:
            return [answer for _, answer in self._answers]

    def _keep(self, number: int, answer: Answer) -> Answer:
        with self._lock:
            self._answers.append((number, answer))
        return answer

    def _send(self, number: int, stop: threading.Event) -> None:
        guest = self.guests[number]
        conversation_id = None
        count = 0
        while not stop.is_set():
            page_path, action = send_path(conversation_id)
            page = self._keep(number, guest.request(page_path))
            if page.status != 200:
                stop.wait(self.pause)
                continue
            fields = page.form_fields()
            text = f"Writer {number}, message {count}"
            self.ledger.attempt(fields["message_id"])
            while not stop.is_set():
                answer = self._keep(number, guest.request(action, {**fields, "text": text}))
                if answer.status == 302:
                    conversation_id = answer.location.rsplit("/", 1)[-1]
                    self.ledger.acknowledge(Sent(conversation_id, fields["message_id"], text))
                    self.acknowledged_by[number] += 1
                    count += 1
                    break
                stop.wait(self.pause)

    def all_refused_since(self, moment: float) -> bool:
        """Whether every sender was refused (503) since ``moment``, a send among them."""
        with self._lock:
            refused = [(n, a) for n, a in self._answers if a.status == 503 and a.sent_at >= moment]
        return len({n for n, _ in refused}) == len(self.guests) and any(
            a.method == "POST" for _, a in refused
        )

    def each_acknowledged_more(self, before: list[int], more: int) -> bool:
        """Whether every sender has had ``more`` messages acknowledged since ``before``."""
        return all(
            now - then >= more for now, then in zip(self.acknowledged_by, before, strict=True)
        )

    def refusals(self) -> list[Answer]:
        """The answers refused with 503, once every answer is checked as EXPECTED and each
        refusal is the right-back page."""
        answered = self.answers()
        unexpected = [a for a in answered if a.status not in self.EXPECTED[a.method]]
        assert not unexpected, "\n".join(map(str, unexpected))
        refused = [a for a in answered if a.status == 503]
        wrong = [a for a in refused if not a.right_back]
        assert not wrong, "\n".join(map(str, wrong))
        return refused


class Crowd:
    """``size`` threads each running ``act(number, stop)`` until ``stop`` is set; what they
    raise is kept in ``errors`` for the test to fail with."""

    def __init__(self, act: Callable[[int, threading.Event], None], size: int) -> None:
        self.act, self.size = act, size
        self.stop = threading.Event()
        self.errors: list[str] = []
        self._threads = [
            threading.Thread(target=self._run, args=(number,), daemon=True)
            for number in range(size)
        ]

    def _run(self, number: int) -> None:
        try:
            self.act(number, self.stop)
        except BaseException:  # an assertion too: the test fails with it
            self.errors.append(f"guest {number}:\n{traceback.format_exc()}")

    def __enter__(self) -> "Crowd":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.halt()

    def wait_for(self, condition: Callable[[], object], what: str, timeout: float) -> None:
        """Poll ``condition`` until it is true; fail at once if a thread failed."""
        deadline = time.monotonic() + timeout
        while not condition():
            assert not self.errors, "\n".join(self.errors)
            assert time.monotonic() < deadline, f"gave up after {timeout} s waiting for {what}"
            time.sleep(0.01)
        assert not self.errors, "\n".join(self.errors)

    def halt(self) -> None:
        """Stop every thread and wait for each to finish its current request."""
        self.stop.set()
        deadline = time.monotonic() + JOIN_TIMEOUT_SECONDS
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = sum(thread.is_alive() for thread in self._threads)
        assert not stuck, f"{stuck} guest threads still busy {JOIN_TIMEOUT_SECONDS} s after stop"


@pytest.fixture
def own_redis(tmp_path) -> Iterator[EmbeddedRedis]:
    """A Redis server of this test's own (AOF, appendfsync everysec), which the test may
    kill, stop and start again on the same port and data folder."""
    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_redis_client(own_redis) -> redis.Redis:
    return connect(own_redis.url)


@pytest.fixture
def claude(fake_anthropic):
    """The fake Messages API, answering REPLY; tests set its ``token_delay``."""
    fake_anthropic.reply_text = carrying_on(REPLY)
    return fake_anthropic


@pytest.fixture
def launch_app(own_redis, claude, tmp_path) -> Iterator[Callable[..., AppServer]]:
    """``launch_app(workers=3, threads=4, **settings)`` starts ``resume-chat serve`` on
    ``own_redis``, writing replies with Claude through the fake, with RUN_SETTINGS and FLASK_
    ``settings`` by name. Every app is stopped (killed if need be) before the fake and Redis."""
    started: list[AppServer] = []

    def launch(workers: int = 3, threads: int = 4, **settings) -> AppServer:
        folder = tmp_path / f"app{len(started)}"
        folder.mkdir()
        env = {
            "ANTHROPIC_API_KEY": "test-key",
            "ANTHROPIC_BASE_URL": claude.url,
            **{f"FLASK_{name}": str(value) for name, value in (RUN_SETTINGS | settings).items()},
        }
        server = AppServer(
            own_redis.url, folder, folder / "app.log", workers=workers, threads=threads, env=env
        )
        started.append(server)
        server.start()
        return server

    yield launch
    for server in started:
        try:
            server.stop()
        finally:
            server.kill()


@pytest.fixture
def scripts_loaded(real_redis):
    """The app's scripts already on the session's server, so no first EVALSHA answers
    NOSCRIPT (and a proxy cutting one script's calls sees only EVALSHA)."""
    for script in ALL_SCRIPTS:
        real_redis.script_load(script.source)
