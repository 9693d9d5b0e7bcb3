"""/metrics: counters kept in Redis (shared by every process), rendered in the Prometheus
text format, and who may read them."""

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import expiry
from tests.conftest import CSRF_FIELD, Chat
from tests.fake_anthropic import FakeAnthropic, Status, StreamError
from webapp import accounts, conversations, metrics, resume_codes
from webapp.llm import Usage
from webapp.storage import connect, keys

PASSWORD = "correct horse battery"
TOKEN = "scrape-me-please"


def log_in(client, username, password=PASSWORD):
    page = client.get("/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)[1]
    response = client.post(
        "/login", data={"csrf_token": token, "username": username, "password": password}
    )
    assert response.status_code == 302, response.text
    return client


def admin_client_of(app, real_redis):
    if accounts.find_user(real_redis, "root") is None:
        accounts.make_admin(real_redis, accounts.register(real_redis, "root", PASSWORD))
    return log_in(app.test_client(), "root")


@pytest.fixture
def admin_client(app, real_redis):
    return admin_client_of(app, real_redis)


def scrape(client, **headers):
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.content_type.startswith("text/plain; version=")
    return response.text


def samples(text):
    """{(sample name, ((label, value), ...)): value} of a scrape."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(text, name, **labels):
    return samples(text)[(name, tuple(sorted(labels.items())))]


def test_a_reply_counts_a_model_call_and_the_messages_stored(chat, admin_client):
    before = scrape(admin_client)
    assert value(before, "model_calls_total", outcome="done") == 0
    assert value(before, "messages_appended_total", role="user") == 0

    conversation_id = chat.start_conversation()
    after_one = scrape(admin_client)
    assert value(after_one, "model_calls_total", outcome="done") == 1
    assert value(after_one, "messages_appended_total", role="user") == 1
    assert value(after_one, "messages_appended_total", role="assistant") == 1

    chat.send(conversation_id, "again")
    chat.wait_for_reply(conversation_id)
    after_two = scrape(admin_client)
    assert value(after_two, "model_calls_total", outcome="done") == 2
    assert value(after_two, "messages_appended_total", role="user") == 2
    assert value(after_two, "messages_appended_total", role="assistant") == 2
    assert value(after_two, "model_calls_total", outcome="failed") == 0
    assert value(after_two, "model_errors_total", kind="busy") == 0


def test_model_errors_are_counted_by_kind(claude_app, fake_anthropic, chat_factory, real_redis):
    chat = chat_factory(claude_app)
    fake_anthropic.enqueue(Status(529, retry_after_ms=1))
    conversation_id = chat.start_conversation()
    fake_anthropic.enqueue(StreamError(after=2))
    chat.send(conversation_id, "and now break mid-stream")
    assert chat.wait_for_reply(conversation_id) == "failed"

    text = scrape(admin_client_of(claude_app, real_redis))
    assert value(text, "model_calls_total", outcome="failed") == 2
    assert value(text, "model_errors_total", kind="busy") == 1
    assert value(text, "model_errors_total", kind="broken") == 1
    assert value(text, "messages_appended_total", role="assistant") == 0


def test_resume_codes_catch_ups_and_resume_failures_by_reason(admin_client, real_redis):
    metrics.count_resume_code_issued(real_redis)
    metrics.count_resume_code_issued(real_redis)
    pipe = real_redis.pipeline()
    metrics.queue_resume_code_redeemed(pipe)
    pipe.execute()
    metrics.count_catch_up(real_redis, "model", 300, 12_000)
    metrics.count_catch_up(real_redis, "extractive", 50, 900)
    metrics.count_catch_up(real_redis, "extractive", 50, 900)
    for reason in ("unknown", "unknown", "expired"):
        metrics.count_resume_failure(real_redis, reason)

    text = scrape(admin_client)
    assert "# TYPE resume_failures_total counter" in text
    assert value(text, "resume_failures_total", reason="unknown") == 2
    assert value(text, "resume_failures_total", reason="expired") == 1
    assert value(text, "resume_codes_issued_total") == 2
    assert value(text, "resume_codes_redeemed_total") == 1
    assert value(text, "catch_ups_total", outcome="model") == 1
    assert value(text, "catch_ups_total", outcome="extractive") == 2
    assert value(text, "catch_ups_total", outcome="browser") == 0
    # The hour's bucket feeds the console's chart, and goes after two days.
    assert "Resume failures in the last 24 hours: 3 in all" in admin_client.get("/admin").text
    (bucket,) = real_redis.scan_iter(match="rc:metrics:resume-failures:*")
    assert 47 * 3600 < real_redis.ttl(bucket) <= 48 * 3600


def test_resume_failures_fall_into_hourly_buckets(real_redis):
    now = 1_800_000_000.0
    metrics.count_resume_failure(real_redis, "unknown", now=now - 5 * 3600)
    metrics.count_resume_failure(real_redis, "unknown", now=now)
    metrics.count_resume_failure(real_redis, "expired", now=now)
    metrics.count_resume_failure(real_redis, "expired", now=now - 30 * 3600)  # too old to show
    hours = metrics.resume_failures_by_hour(real_redis, now=now)
    assert len(hours) == 24
    assert hours[-1].count == 2
    assert hours[-6].count == 1
    assert sum(hour.count for hour in hours) == 3
    assert hours[-1].starts_at == now // 3600 * 3600


def test_conversations_by_state_are_a_gauge(chat, admin_client, real_redis):
    chat.start_conversation()
    expired = chat.start_conversation()
    expiry.end_session(real_redis, expired)
    text = scrape(admin_client)
    assert "# TYPE conversations gauge" in text
    assert value(text, "conversations", state="active") == 1
    assert value(text, "conversations", state="parked") == 0
    assert value(text, "conversations", state="expired") == 1


def test_counters_are_shared_by_every_instance(make_app, chat_factory, real_redis):
    first, second = make_app(), make_app()
    chat_factory(first).start_conversation()
    text = scrape(admin_client_of(second, real_redis))
    assert value(text, "model_calls_total", outcome="done") == 1
    assert real_redis.hget(keys.METRICS_COUNTERS, "model_calls:done") == "1"


def test_only_the_apps_own_metrics_are_exposed(admin_client):
    text = scrape(admin_client)
    assert "python_gc" not in text
    assert "process_" not in text


COUNTS = {
    "count_messages_appended": ("user",),
    "count_model_call": ("failed", "busy"),
    "count_resume_failure": (resume_codes.UNKNOWN,),
    "count_resume_code_issued": (),
    "count_catch_up": ("model", 300, 12_000),
    "count_model_tokens": ("claude-sonnet-5-5", Usage(input_tokens=10, output_tokens=5)),
    "count_sessions_expired": (1,),
    "count_fork": (),
}
"""Every count of metrics.py, with arguments that make it count."""


def test_every_count_is_tried_against_an_unreachable_redis():
    assert set(COUNTS) == {name for name in vars(metrics) if name.startswith("count_")}


@pytest.mark.parametrize("count", COUNTS)
def test_counting_never_fails_what_it_counts(count, caplog):
    unreachable = connect("redis://127.0.0.1:1/0")
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger=metrics.__name__):
        getattr(metrics, count)(unreachable, *COUNTS[count])  # raises nothing
    # Refused at once; with a hung server, two attempts of at most 0.5 s and a backoff.
    assert time.monotonic() - started < 2
    (record,) = [record for record in caplog.records if record.name == metrics.__name__]
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith("a count was lost: ")


def test_metrics_need_an_admin_or_the_token(make_app, real_redis):
    app = make_app(METRICS_TOKEN=TOKEN)
    stranger = app.test_client()
    no_token = stranger.get("/metrics")
    assert no_token.status_code == 401
    assert no_token.headers["WWW-Authenticate"].startswith("Bearer")
    assert stranger.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert stranger.get("/metrics", headers={"Authorization": "Basic " + TOKEN}).status_code == 401
    scrape(stranger, Authorization=f"Bearer {TOKEN}")

    accounts.register(real_redis, "ada", PASSWORD)
    assert log_in(app.test_client(), "ada").get("/metrics").status_code == 403
    scrape(admin_client_of(app, real_redis))


def test_without_a_token_setting_only_admins_may_read_metrics(app, client, real_redis):
    assert app.config["METRICS_TOKEN"] is None
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer None"}).status_code == 403
    assert client.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 401
    scrape(admin_client_of(app, real_redis))


# The README lists every counter, and nothing else.

README = Path(__file__).resolve().parents[1] / "README.md"
METRIC_NAME = re.compile(r"`([a-z][a-z0-9_]*)_total(?:\{([a-z_,]+)\})?`")
"""A counter as the README writes it: `name_total`, or `name_total{label,label}`."""
RESUME_FAILURE_REASONS = (
    resume_codes.MALFORMED,
    resume_codes.UNKNOWN,
    resume_codes.EXPIRED,
    resume_codes.USED,
    resume_codes.WRONG_ACCOUNT,
    resume_codes.RATE_LIMITED,
    metrics.SESSION_ENDED,
)


def test_the_readme_lists_every_counter_and_nothing_else():
    text = README.read_text(encoding="utf-8")
    mentioned = METRIC_NAME.findall(text)
    named = {name for name, _ in mentioned}
    counters = {counter.name: counter for counter in metrics.COUNTERS}
    assert set(counters) - named == set(), "counters the README does not list"
    assert named - set(counters) == set(), "names the README lists that are no counter"
    assert "`conversations{state}`" in text  # the one gauge
    for counter in counters.values():
        labels = {label for name, label in mentioned if name == counter.name and label}
        assert labels == ({",".join(counter.labels)} if counter.labels else set()), counter.name


def test_the_readme_names_every_reason_a_resume_fails():
    text = README.read_text(encoding="utf-8")
    for reason in RESUME_FAILURE_REASONS:
        assert f"`{reason}`" in text, reason
    assert "not page views" in text


# Every counter is moved by something a person does, over HTTP.


def count_of(text, name, **labels):
    """The sample's value in a scrape; 0 for a series not counted yet (a label without
    known values shows only the values counted)."""
    return samples(text).get((name, tuple(sorted(labels.items()))), 0)


def csrf_of(client, path):
    return CSRF_FIELD.search(client.get(path).text)[1]


def issue_code(client, conversation_id):
    """Ask for a resume code as the idle timer does."""
    response = client.post(
        f"/c/{conversation_id}/park",
        data={"csrf_token": csrf_of(client, f"/c/{conversation_id}")},
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 200, response.text
    return response.json["code"]


def enter_code(client, code):
    """Type a code at /resume, as the form sends it."""
    return client.post("/resume", data={"csrf_token": csrf_of(client, "/resume"), "code": code})


def wrong_code():
    return resume_codes.formatted(resume_codes.generate())


def wait_for_the_session_to_end(chat, conversation_id, timeout=10):
    """Leave the conversation idle until Redis expires its session."""
    r = chat.client.application.extensions["redis"]
    deadline = time.monotonic() + timeout
    while r.exists(keys.conversation_session(conversation_id)):
        assert time.monotonic() < deadline, "the session did not end"
        time.sleep(0.05)


def press_catch_me_up(chat, conversation_id):
    """Press Catch me up, as the "Where were we?" banner posts it."""
    page = chat.client.get(f"/c/{conversation_id}").text
    assert "Where were we?" in page
    form = re.search(
        r'<form class="inline catch-up" method="post" action="([^"]+)">\s*'
        r'<input type="hidden" name="csrf_token" value="([^"]+)">',
        page,
    )
    response = chat.client.post(form[1], data={"csrf_token": form[2]})
    assert response.status_code == 302, response.text
    chat.wait_for_reply(conversation_id)  # the summary is written in the background


@dataclass(frozen=True)
class Person:
    """Someone using the app: each action opens its own browser on an app of its own (the
    counters are shared by every instance, so the admin's app sees them)."""

    make_app: Callable
    request: pytest.FixtureRequest

    def chat(self, **settings) -> Chat:
        return Chat(self.make_app(**settings).test_client())

    def chat_with_claude(self) -> tuple[Chat, FakeAnthropic]:
        """A browser on an app whose model is Claude, through the fake Messages API."""
        app = self.request.getfixturevalue("make_claude_app")()
        return Chat(app.test_client()), self.request.getfixturevalue("fake_anthropic")


@pytest.fixture
def person(make_app, request):
    return Person(make_app, request)


def send_a_message(person):
    person.chat().start_conversation("Hello there")


def meet_a_busy_model(person):
    chat, fake_anthropic = person.chat_with_claude()
    fake_anthropic.enqueue(Status(529, retry_after_ms=1))
    conversation_id = chat.start_conversation("Are you there?")
    assert chat.wait_for_reply(conversation_id) == "failed"


def ask_claude(person):
    chat, _ = person.chat_with_claude()
    conversation_id = chat.start_conversation("How far is the moon?")
    assert chat.wait_for_reply(conversation_id) == "done"


def type_a_wrong_code(person):
    assert enter_code(person.chat().client, wrong_code()).status_code == 404


def ask_for_a_resume_code(person):
    chat = person.chat()
    issue_code(chat.client, chat.start_conversation("Keep this for later"))


def resume_on_another_device(person):
    app = person.make_app()
    laptop, phone = Chat(app.test_client()), app.test_client()
    code = issue_code(laptop.client, laptop.start_conversation("Carry on elsewhere"))
    assert enter_code(phone, code).status_code == 302


def catch_up_after_the_session_ended(person):
    chat = person.chat(SESSION_IDLE_SECONDS=1)
    conversation_id = chat.start_conversation("Plan my garden")
    wait_for_the_session_to_end(chat, conversation_id)
    press_catch_me_up(chat, conversation_id)


SWEPT_OFTEN = {
    "SESSION_IDLE_SECONDS": 1,
    "SWEEP_INTERVAL_SECONDS": 0.2,
    "RUN_HEARTBEAT_SECONDS": 0.1,
}
"""An app whose worker sweeps five times a second (its loop waits a heartbeat between
passes), and whose sessions end after a second of idling."""


def leave_a_conversation_idle(person):
    chat = person.chat(**SWEPT_OFTEN)
    conversation_id = chat.start_conversation("Back in a while")
    wait_for_the_session_to_end(chat, conversation_id)  # the sweep then sees it
    # The admin's app swept at its start-up and holds the sweep's lock for its own (default)
    # interval, as a process of one deployment would; this app sweeps once it is free.
    chat.client.application.extensions["redis"].delete(keys.SWEEP_LOCK)


def fork_from_a_message(person):
    """Press "Fork from here" on the first message, as the page's fork form posts it."""
    chat = person.chat()
    conversation_id = chat.start_conversation("First question")
    page = chat.client.get(f"/c/{conversation_id}").text
    form = re.search(
        r'<form id="fork" method="post" action="([^"]+)">'
        r'<input type="hidden" name="csrf_token" value="([^"]+)">',
        page,
    )
    first, *_ = re.findall(r'form="fork" name="through" value="(\d+)"', page)
    response = chat.client.post(form[1], data={"csrf_token": form[2], "through": first})
    assert response.status_code == 302, response.text
    assert chat.conversation_id_of(response) != conversation_id


@dataclass(frozen=True)
class Moves:
    """What moves a counter: an ``act`` of a person, and the series it moves."""

    act: Callable[[Person], None]
    labels: dict = field(default_factory=dict)
    by_the_sweep: bool = False
    """Counted by the worker's sweep, up to a sweep interval after ``act``."""
    by_amount: bool = False
    """Moved by an amount (tokens), not by one."""


ACTIONS = {
    "messages_appended": Moves(send_a_message, {"role": "user"}),
    "model_calls": Moves(send_a_message, {"outcome": "done"}),
    "model_errors": Moves(meet_a_busy_model, {"kind": "busy"}),
    "resume_failures": Moves(type_a_wrong_code, {"reason": resume_codes.UNKNOWN}),
    "resume_codes_issued": Moves(ask_for_a_resume_code),
    "resume_codes_redeemed": Moves(resume_on_another_device),
    "catch_ups": Moves(catch_up_after_the_session_ended, {"outcome": "model"}),
    "sessions_expired": Moves(leave_a_conversation_idle, by_the_sweep=True),
    "forks": Moves(fork_from_a_message),
    "model_tokens": Moves(
        ask_claude, {"model": "claude-sonnet-5-5", "kind": "output"}, by_amount=True
    ),
    "catch_up_tokens": Moves(catch_up_after_the_session_ended, {"kind": "history"}, by_amount=True),
}


def test_every_counter_has_an_action_that_moves_it():
    assert set(ACTIONS) == {counter.name for counter in metrics.COUNTERS}
    for counter in metrics.COUNTERS:
        labels = ACTIONS[counter.name].labels
        assert set(labels) == set(counter.labels), counter.name
        assert not counter.known or labels[counter.labels[0]] in counter.known, counter.name


@pytest.mark.parametrize("name", list(ACTIONS))
def test_every_counter_is_moved_by_something_a_person_does(name, person, admin_client):
    moves, sample = ACTIONS[name], f"{name}_total"
    before = count_of(scrape(admin_client), sample, **moves.labels)
    moves.act(person)
    deadline = time.monotonic() + (5 if moves.by_the_sweep else 0)
    while (after := count_of(scrape(admin_client), sample, **moves.labels)) == before:
        if time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    if moves.by_amount:
        assert after > before, f"{sample}{moves.labels}: {before} -> {after}"
    else:
        assert after == before + 1, f"{sample}{moves.labels}: {before} -> {after}"


# resume_failures counts failed resumes, not page views.


def resume_failures(text):
    """{reason: count} of a scrape's resume_failures_total."""
    return {
        dict(labels)["reason"]: count
        for (sample, labels), count in samples(text).items()
        if sample == "resume_failures_total"
    }


def test_opening_an_unknown_or_a_gone_conversation_counts_nothing(chat, admin_client, real_redis):
    gone = chat.start_conversation("Soon gone")
    for key in real_redis.scan_iter(match=keys.conversation_keys_pattern(gone)):
        real_redis.delete(key)  # its transcript's retention ran out
    before = samples(scrape(admin_client))
    for _ in range(3):
        for conversation_id in (gone, conversations.new_id(), "no-such-conversation"):
            assert chat.client.get(f"/c/{conversation_id}").status_code == 404
    assert samples(scrape(admin_client)) == before


def test_a_return_after_the_session_ended_counts_once_for_each_ended_session(
    make_app, chat_factory, admin_client
):
    chat = chat_factory(make_app(SESSION_IDLE_SECONDS=2))
    conversation_id = chat.start_conversation("Plan my garden")
    assert "Where were we?" not in chat.client.get(f"/c/{conversation_id}").text
    assert resume_failures(scrape(admin_client)) == {}  # an active session: no failure

    def come_back_three_times():
        for _ in range(3):
            assert "Where were we?" in chat.client.get(f"/c/{conversation_id}").text
        sent_anyway = chat.client.post(  # a form from before the session ended
            f"/c/{conversation_id}/messages",
            data={
                "csrf_token": csrf_of(chat.client, f"/c/{conversation_id}"),
                "text": "typed before it ended",
                "message_id": conversations.new_id(),
            },
        )
        assert sent_anyway.status_code == 409  # the page again, with the text kept

    wait_for_the_session_to_end(chat, conversation_id)
    come_back_three_times()
    assert resume_failures(scrape(admin_client)) == {metrics.SESSION_ENDED: 1}

    press_catch_me_up(chat, conversation_id)  # a new session...
    assert "Where were we?" not in chat.client.get(f"/c/{conversation_id}").text
    assert resume_failures(scrape(admin_client)) == {metrics.SESSION_ENDED: 1}
    wait_for_the_session_to_end(chat, conversation_id)  # ...that ended too
    come_back_three_times()
    assert resume_failures(scrape(admin_client)) == {metrics.SESSION_ENDED: 2}


def test_the_eleventh_wrong_code_in_a_minute_counts_as_rate_limited(app, admin_client):
    intruder = app.test_client()
    intruder.environ_base["REMOTE_ADDR"] = "10.9.9.9"
    for _ in range(10):
        assert enter_code(intruder, wrong_code()).status_code == 404
    assert resume_failures(scrape(admin_client)) == {resume_codes.UNKNOWN: 10}
    assert enter_code(intruder, wrong_code()).status_code == 429
    assert resume_failures(scrape(admin_client)) == {
        resume_codes.UNKNOWN: 10,
        resume_codes.RATE_LIMITED: 1,
    }
