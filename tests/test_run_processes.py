"""Runs across real processes: the app (``resume-chat serve``) killed, stopped or doubled while
Claude (the fake API, with slow tokens) is writing a reply. Driven over HTTP as a browser
would, checked in the session's real Redis."""

import http.cookiejar
import json
import re
import signal
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator

import pytest

from tests.app_server import AppServer
from tests.fake_anthropic import carrying_on
from webapp import conversations, runs
from webapp.llm import carry_on_request
from webapp.storage import keys

REPLY = (
    "Checkpointing every chunk in a Redis stream lets long replies outlive the process writing "
    "them. When one worker dies, another notices its stale heartbeat, marks that run "
    "interrupted, keeps what was written so far, and offers Continue from exactly there."
)
QUESTION = "How does a reply survive the server?"
TOKEN_DELAY_SECONDS = 0.08
"""Between the fake's tokens: the whole reply takes about 3 s, so a test acts mid-way."""
CHUNKS_BEFORE_ACTING = 6
TIMEOUT_SECONDS = 15
"""Bound of every wait; the conditions are normally met well within it."""

RUN_ENV = {
    "ANTHROPIC_API_KEY": "test-key",
    "FLASK_ANTHROPIC_MAX_RETRIES": "0",
    "FLASK_RUN_HEARTBEAT_SECONDS": "0.2",
    "FLASK_RUN_STALE_SECONDS": "1",
    "FLASK_RUN_REAPER_INTERVAL_SECONDS": "0.5",
}
REAPER_LOG_LINE = "stale runs interrupted"
"""What the app logs when its reaper marks runs interrupted (webapp/run_worker.py)."""


@pytest.fixture
def fake(fake_anthropic):
    fake_anthropic.reply_text = carrying_on(REPLY)
    fake_anthropic.token_delay = TOKEN_DELAY_SECONDS
    return fake_anthropic


@pytest.fixture
def start_app(real_redis, redis_server, fake, tmp_path) -> Iterator[Callable[..., AppServer]]:
    """``start_app(name)`` starts an instance of the app on the session's Redis, with Claude
    through the fake and short run settings; all are ended after the test (before Redis is
    flushed and the fake stops)."""
    started: list[AppServer] = []

    def start(name: str = "a") -> AppServer:
        instance = tmp_path / name
        instance.mkdir()
        server = AppServer(
            redis_server.url,
            instance,
            tmp_path / f"{name}.log",
            env={**RUN_ENV, "ANTHROPIC_BASE_URL": fake.url},
        )
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        try:
            server.stop()
        finally:
            server.kill()


def start_apps(start_app, *names: str) -> list[AppServer]:
    """Start several instances at once (each takes a moment to boot)."""
    servers: dict[str, AppServer] = {}
    errors: list[BaseException] = []

    def start(name):
        try:
            servers[name] = start_app(name)
        except BaseException as error:  # pytest.fail raises a BaseException
            errors.append(error)

    threads = [threading.Thread(target=start, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return [servers[name] for name in names]


FORM_BUTTON = re.compile(
    r'<form class="inline" method="post" action="([^"]+)">\s*'
    r'<input type="hidden" name="csrf_token" value="([^"]+)">\s*'
    r"<button[^>]*>([^<]+)</button>"
)


class Client:
    """A cookie-keeping HTTP client that fills in forms the way the pages ask. Clients that
    share a cookie jar are one browser (cookies are per host, whatever the port)."""

    def __init__(self, base: str, jar: http.cookiejar.CookieJar | None = None):
        self.base = base
        self.jar = jar if jar is not None else http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def at(self, base: str) -> "Client":
        """The same browser, talking to another instance."""
        return Client(base, self.jar)

    def open(self, path: str, data: dict | None = None, headers: dict | None = None):
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        request = urllib.request.Request(self.base + path, data=body, headers=headers or {})
        return self.opener.open(request, timeout=10)

    def get(self, path: str) -> str:
        with self.open(path) as response:
            return response.read().decode()

    def start_conversation(self, text: str) -> str:
        """Send ``text`` from the start page; the id of the conversation it started."""
        page = self.get("/")
        fields = dict(re.findall(r'name="(csrf_token|message_id)" value="([^"]+)"', page))
        action = re.search(r'<form class="composer" method="post" action="([^"]+)"', page)[1]
        with self.open(action, {**fields, "text": text}) as response:
            landed = urllib.parse.urlparse(response.geturl()).path
        assert landed.startswith("/c/"), landed
        return landed.rsplit("/", 1)[-1]

    def buttons(self, conversation_id: str) -> dict[str, tuple[str, str]]:
        """The conversation page's post buttons: label -> (action, csrf token)."""
        page = self.get(f"/c/{conversation_id}")
        return {label: (action, token) for action, token, label in FORM_BUTTON.findall(page)}

    def press(self, conversation_id: str, label: str) -> str:
        """Press a button of the conversation page; the page it lands on."""
        buttons = self.buttons(conversation_id)
        assert label in buttons, f"the page offers no {label} button, only {sorted(buttons)}"
        action, token = buttons[label]
        with self.open(action, {"csrf_token": token}) as response:
            return response.read().decode()


def wait_for(condition: Callable, what: str, timeout: float = TIMEOUT_SECONDS):
    """Poll ``condition`` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"gave up after {timeout} s waiting for {what}"
        time.sleep(0.02)
    return value


def wait_for_run(r, conversation_id: str) -> runs.Run:
    return wait_for(lambda: runs.latest_run(r, conversation_id), "the run to start")


def wait_for_chunks(r, run: runs.Run, count: int = CHUNKS_BEFORE_ACTING) -> None:
    """Wait until the run has written ``count`` chunks (it is then mid-way through)."""
    events = keys.run_events(run.conversation_id, run.id)
    wait_for(lambda: r.xlen(events) >= count, f"{count} chunks of the reply")


def wait_until_ended(r, conversation_id: str, run_id: str) -> runs.Run:
    """Wait until run ``run_id`` is no longer running; the run as it ended."""

    def ended():
        run = runs.latest_run(r, conversation_id)
        return run if run.id == run_id and not run.running else None

    return wait_for(ended, f"run {run_id} to end")


def wait_for_new_run_to_end(r, conversation_id: str, old_run_id: str) -> runs.Run:
    """Wait until a run after ``old_run_id`` has ended; that run."""

    def ended():
        run = runs.latest_run(r, conversation_id)
        return run if run.id != old_run_id and not run.running else None

    return wait_for(ended, "the new run to end")


def transcript(r, conversation_id: str) -> list[conversations.Message]:
    return conversations.read_messages(r, conversation_id)


def written_so_far(r, run: runs.Run) -> str:
    return runs.run_text(r, run)[0]


def assert_partial_kept(r, conversation_id: str, run: runs.Run, status: str) -> str:
    """The run wrote part of REPLY, and exactly that is the last message, marked ``status``."""
    partial = written_so_far(r, run)
    assert partial, "the run wrote nothing before it ended"
    assert REPLY.startswith(partial) and partial != REPLY, partial
    messages = transcript(r, conversation_id)
    assert [(m.role, m.content) for m in messages] == [
        ("user", QUESTION),
        ("assistant", partial),
    ]
    assert messages[-1].id == run.message_id
    assert messages[-1].status == status
    return partial


def continue_and_complete(
    r, client: Client, fake, conversation_id: str, run: runs.Run, partial: str
) -> None:
    """Press Continue: a new run carries on from the partial text (prefilled) to the whole
    REPLY, stored in place of the partial message."""
    requests_before = len(fake.message_requests)
    client.press(conversation_id, "Continue")
    done = wait_for_new_run_to_end(r, conversation_id, run.id)
    assert done.status == runs.DONE, done
    assert done.message_id == run.message_id
    messages = transcript(r, conversation_id)
    assert [(m.role, m.content, m.status) for m in messages] == [
        ("user", QUESTION, None),
        ("assistant", REPLY, None),
    ]
    assert messages[-1].id == run.message_id  # replaced in place, not appended
    (continuation,) = fake.message_requests[requests_before:]
    assert continuation.body["messages"] == [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": partial.rstrip()},
        {"role": "user", "content": carry_on_request(partial)},  # it ends with a user turn
    ]
    assert "This reply was interrupted" not in client.get(f"/c/{conversation_id}")


def test_a_reply_cut_by_kill_9_is_reaped_after_restart_and_can_be_continued(
    start_app, real_redis, fake
):
    server = start_app()
    client = Client(server.url)
    conversation_id = client.start_conversation(QUESTION)
    run = wait_for_run(real_redis, conversation_id)
    wait_for_chunks(real_redis, run)

    server.kill()

    # The process vanished: nothing ended the run, but the question is safe.
    assert runs.latest_run(real_redis, conversation_id).status == runs.RUNNING
    messages = transcript(real_redis, conversation_id)
    assert [(m.role, m.content) for m in messages] == [("user", QUESTION)]
    partial = written_so_far(real_redis, run)

    server.start()

    ended = wait_until_ended(real_redis, conversation_id, run.id)
    assert ended.status == runs.INTERRUPTED
    # Its reaper did it (it logs just after the run has ended).
    wait_for(lambda: REAPER_LOG_LINE in server.output(), "the reaper's log line")
    assert assert_partial_kept(real_redis, conversation_id, run, runs.INTERRUPTED) == partial
    page = client.get(f"/c/{conversation_id}")
    assert "This reply was interrupted" in page
    buttons = client.buttons(conversation_id)
    csrf_token = re.search(r'name="csrf_token" value="([^"]+)"', page)[1]
    run_path = f"/c/{conversation_id}/runs/{run.id}"
    assert buttons["Continue"] == (f"{run_path}/continue", csrf_token)
    assert buttons["Retry"] == (f"{run_path}/retry", csrf_token)

    continue_and_complete(real_redis, client, fake, conversation_id, run, partial)


def test_sigterm_marks_the_running_reply_interrupted_before_exiting(start_app, real_redis, fake):
    server = start_app()
    client = Client(server.url)
    conversation_id = client.start_conversation(QUESTION)
    run = wait_for_run(real_redis, conversation_id)
    wait_for_chunks(real_redis, run)

    assert server.stop(signal.SIGTERM) == 0, server.output()

    # Checked before anything else runs: only the app itself can have ended the run, and
    # not with its reaper.
    assert runs.latest_run(real_redis, conversation_id).status == runs.INTERRUPTED
    assert REAPER_LOG_LINE not in server.output()
    assert real_redis.zscore(keys.RUNS_RUNNING, run.index_member) is None
    partial = assert_partial_kept(real_redis, conversation_id, run, runs.INTERRUPTED)

    server.start()

    assert "This reply was interrupted" in client.get(f"/c/{conversation_id}")
    continue_and_complete(real_redis, client, fake, conversation_id, run, partial)


def test_stop_from_another_instance_ends_the_writer_on_the_first(start_app, real_redis, fake):
    a, b = start_apps(start_app, "a", "b")
    client_a = Client(a.url)
    client_b = client_a.at(b.url)  # the same browser, on the other instance
    conversation_id = client_a.start_conversation(QUESTION)
    run = wait_for_run(real_redis, conversation_id)
    wait_for_chunks(real_redis, run)

    client_b.press(conversation_id, "Stop")

    # Stop ends the run at once, whichever instance is writing it.
    assert runs.latest_run(real_redis, conversation_id).status == runs.STOPPED
    partial = assert_partial_kept(real_redis, conversation_id, run, runs.STOPPED)
    assert "You stopped this reply." in client_a.get(f"/c/{conversation_id}")

    # Instance A's writer notices at its next chunk and lets go of Claude's stream...
    def fake_connections_open() -> int:
        with fake._lock:  # the fake keeps a connection until its client closes it
            return len(fake._connections)

    wait_for(lambda: fake_connections_open() == 0, "A to close its stream from Claude")
    # ...and wrote nothing after the stop: the stream ends with the end event.
    events = real_redis.xrange(keys.run_events(conversation_id, run.id))
    assert events[-1][1] == {"status": runs.STOPPED, "error_kind": ""}
    assert "".join(fields.get("t", "") for _, fields in events) == partial
    assert len(fake.message_requests) == 1
    assert not runs.latest_run(real_redis, conversation_id).running


def sse_events(response) -> Iterator[dict]:
    """The events of a text/event-stream response, as dicts of their fields."""
    event: dict = {}
    for raw in response:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if "data" in event:
                yield event
            event = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "data" and "data" in event:
                value = event["data"] + "\n" + value
            event[field] = value


def read_to_end(events: Iterator[dict], seen: list[dict]) -> list[dict]:
    """Read ``events`` up to and including the end event, appending to ``seen``."""
    for event in events:
        seen.append(event)
        if event.get("event") == "end":
            return seen
    raise AssertionError(f"the stream closed without an end event after {seen}")


def text_of(events: list[dict]) -> str:
    return "".join(json.loads(e["data"])["text"] for e in events if "event" not in e)


def test_watchers_on_another_instance_get_the_reply_exactly_once(start_app, real_redis, fake):
    a, b = start_apps(start_app, "a", "b")
    client_a = Client(a.url)
    client_b = client_a.at(b.url)
    conversation_id = client_a.start_conversation(QUESTION)
    run = wait_for_run(real_redis, conversation_id)
    path = f"/c/{conversation_id}/runs/{run.id}/events"

    with client_b.open(path) as from_start:
        assert from_start.headers["Content-Type"].startswith("text/event-stream")
        start_events = sse_events(from_start)
        seen = [next(start_events) for _ in range(4)]
        middle = seen[1]
        assert runs.latest_run(real_redis, conversation_id).running, "act while it streams"
        with client_b.open(path, headers={"Last-Event-ID": middle["id"]}) as from_middle:
            after_middle = read_to_end(sse_events(from_middle), [])
        read_to_end(start_events, seen)

    reply = transcript(real_redis, conversation_id)[-1]
    assert (reply.role, reply.content) == ("assistant", REPLY)
    up_to_middle = text_of(seen[:2])
    assert REPLY.startswith(up_to_middle)
    for events, text in ((seen, REPLY), (after_middle, REPLY[len(up_to_middle) :])):
        *chunks, end = events
        assert text_of(chunks) == text
        ids = [e["id"] for e in events]
        assert len(set(ids)) == len(ids)
        # Text chunks, and the phase events that say Claude is thinking (never text).
        assert all(e.get("event") in (None, "phase") for e in chunks)
        assert end["event"] == "end"
        assert json.loads(end["data"]) == {"status": runs.DONE, "error_kind": ""}
    assert after_middle[0]["id"] == seen[2]["id"]
    assert after_middle == seen[2:]
