"""Two instances of ``resume-chat serve`` (two workers each) share one Redis and keep nothing
of their own: a reply started on one is watched and stopped on the other, a login made on
one is valid on the other and ends everywhere when it ends on either, a resume code issued
on one is redeemed on the other, and both report the same metrics.

Each person is one HTTP client with one cookie jar, used against both instances, as a
browser behind a load balancer would be (cookies do not depend on the port).
"""

import contextlib
import re
import time
from html import unescape

import httpx2
import pytest

from tests.app_server import serving
from tests.fake_anthropic import FakeAnthropic
from tests.test_metrics import samples

CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
MESSAGE_ID_FIELD = re.compile(r'name="message_id" value="([^"]+)"')
METRICS_TOKEN = "scrape-both-instances"
PASSWORD = "correct horse battery"
WORDS = 60
LONG_REPLY = " ".join(f"word{n}" for n in range(WORDS))
TOKEN_DELAY_SECONDS = 0.1  # so the long reply takes about six seconds
REQUEST_TIMEOUT_SECONDS = 15
WAIT_SECONDS = 20


@pytest.fixture(scope="module")
def fake_model():
    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture(scope="module")
def instances(redis_server, fake_model, tmp_path_factory):
    """Instances A and B on the session's real Redis and the fake model, for this module."""
    settings = {
        "ANTHROPIC_API_KEY": "test-key",
        "ANTHROPIC_BASE_URL": fake_model.url,
        "FLASK_ANTHROPIC_MAX_RETRIES": "0",
        "FLASK_METRICS_TOKEN": METRICS_TOKEN,
    }
    root = tmp_path_factory.mktemp("instances")
    with contextlib.ExitStack() as stack:
        a, b = (
            stack.enter_context(serving(redis_server.url, root / name, workers=2, env=settings))
            for name in ("a", "b")
        )
        yield a, b


@pytest.fixture
def model(fake_model, real_redis):
    """The fake model, answering "Echo: ..." at once unless a test says otherwise; Redis is
    emptied after each test (real_redis)."""
    fake_model.reply_text, fake_model.token_delay = LONG_REPLY, 0.0
    yield fake_model
    fake_model.token_delay = 0.0


class Person:
    """One browser: one cookie jar, used against either instance."""

    def __init__(self) -> None:
        self.http = httpx2.Client(timeout=REQUEST_TIMEOUT_SECONDS)

    def get(self, instance, path: str, **options) -> httpx2.Response:
        return self.http.get(instance.url + path, **options)

    def post(self, instance, path: str, data: dict, **options) -> httpx2.Response:
        return self.http.post(instance.url + path, data=data, **options)

    def post_form(self, instance, page_path: str, action: str, **fields) -> httpx2.Response:
        """Post ``fields`` to ``action`` with the CSRF token of the page at ``page_path``."""
        page = self.get(instance, page_path).text
        return self.post(instance, action, {"csrf_token": CSRF_FIELD.search(page)[1], **fields})

    def start(self, instance, text: str) -> str:
        """Start a conversation; its id."""
        page = self.get(instance, "/").text
        response = self.post(
            instance,
            "/",
            {
                "csrf_token": CSRF_FIELD.search(page)[1],
                "message_id": MESSAGE_ID_FIELD.search(page)[1],
                "text": text,
            },
        )
        assert response.status_code == 302, response.text
        return response.headers["location"].split("#")[0].rsplit("/", 1)[-1]

    def page(self, instance, conversation_id: str) -> str:
        response = self.get(instance, f"/c/{conversation_id}")
        assert response.status_code == 200, response.text
        return unescape(response.text)

    def username(self, instance) -> str | None:
        """Who the instance's start page says is logged in."""
        found = re.search(r'<span class="who">([^<]+)</span>', self.get(instance, "/").text)
        return found[1] if found else None


@pytest.fixture
def people():
    made = []

    def person() -> Person:
        made.append(Person())
        return made[-1]

    yield person
    for each in made:
        each.http.close()


def wait_until_written(person: Person, instance, conversation_id: str) -> str:
    """The conversation's page once no reply is being written."""
    deadline = time.monotonic() + WAIT_SECONDS
    while 'class="writing"' in (page := person.page(instance, conversation_id)):
        assert time.monotonic() < deadline, f"the reply is still being written: {page[-2000:]}"
        time.sleep(0.05)
    return page


def scrape(instance) -> dict:
    response = httpx2.get(
        instance.url + "/metrics",
        headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
        timeout=REQUEST_TIMEOUT_SECONDS,
    )
    assert response.status_code == 200, response.text
    return {
        key: value for key, value in samples(response.text).items() if key[0].endswith("_total")
    }


def test_a_reply_started_on_a_is_watched_and_stopped_on_b(instances, model, people):
    a, b = instances
    model.token_delay = TOKEN_DELAY_SECONDS
    ann = people()
    calls_before = len(model.message_requests)
    conversation_id = ann.start(a, "Count slowly, please")

    page_on_b = ann.get(b, f"/c/{conversation_id}").text
    events_url = re.search(r'data-events="([^"]+)"', page_on_b)
    stop_url = re.search(r'action="([^"]+/stop)"', page_on_b)
    assert events_url and stop_url, f"B does not show the reply being written: {page_on_b}"
    seen, end, stopped = [], None, None
    stop_form = {"csrf_token": CSRF_FIELD.search(page_on_b)[1]}
    deadline = time.monotonic() + WAIT_SECONDS
    with ann.http.sse(b.url + events_url[1]) as events:
        for event in events:
            assert time.monotonic() < deadline, f"no end after {seen}"
            if event.event == "end":
                end = event.json()
                break
            if event.data and event.event in ("", "message"):  # not a phase ("thinking")
                seen.append(event.json()["text"])
            if len(seen) >= 3 and stopped is None:  # watched live through B: Stop, through B
                stopped = ann.post(b, stop_url[1], stop_form)
                assert stopped.status_code == 302, stopped.text
    assert end is not None and end["status"] == "stopped", (end, seen)
    watched = "".join(seen)
    assert watched.startswith("word0 word1 word2")

    page_on_a = wait_until_written(ann, a, conversation_id)
    assert "You stopped this reply." in page_on_a
    reply = re.findall(r'<article class="message assistant.*?</article>', page_on_a, re.S)[-1]
    assert watched.strip() in reply  # the partial text, kept
    assert f"word{WORDS - 1}" not in reply  # and not the whole reply
    assert len(model.message_requests) == calls_before + 1  # one reply, written once


def test_a_login_made_on_a_is_valid_on_b_and_ends_on_both(instances, model, people):
    a, b = instances
    ada = people()
    registered = ada.post_form(
        a, "/register", "/register", username="ada", password=PASSWORD, next="/"
    )
    assert registered.status_code == 302, registered.text
    assert (ada.username(a), ada.username(b)) == ("ada", "ada")
    cookies_while_logged_in = dict(ada.http.cookies)

    logged_out = ada.post_form(b, "/", "/logout")
    assert logged_out.status_code == 302, logged_out.text
    assert (ada.username(a), ada.username(b)) == (None, None)
    # The old cookie, replayed on A, is refused there: the login ended in Redis, not only
    # in this browser.
    replay = people()
    replay.http.cookies.update(cookies_while_logged_in)
    assert replay.username(a) is None
    assert replay.username(b) is None


def test_a_code_issued_on_a_is_redeemed_on_b_then_used_on_a(instances, model, people):
    a, b = instances
    model.reply_text = "A short reply."
    bea = people()
    conversation_id = bea.start(a, "Plan a picnic")
    wait_until_written(bea, a, conversation_id)
    page = bea.get(a, f"/c/{conversation_id}").text
    issued = bea.post(
        a,
        f"/c/{conversation_id}/park",
        {"csrf_token": CSRF_FIELD.search(page)[1]},
        headers={"Accept": "application/json"},
    )
    assert issued.status_code == 200, issued.text
    code = issued.json()["code"]

    phone = people()
    redeemed = phone.post_form(b, "/resume", "/resume", code=code)
    assert redeemed.status_code == 302, redeemed.text
    assert redeemed.headers["location"] == f"/c/{conversation_id}#latest"
    assert "Plan a picnic" in phone.page(b, conversation_id)
    assert "Plan a picnic" in phone.page(a, conversation_id)  # the phone's, on either

    again = people().post_form(a, "/resume", "/resume", code=code)
    assert again.status_code == 404
    assert "That code has already been used" in unescape(again.text)


def test_both_instances_report_the_same_metrics(instances, model, people):
    a, b = instances
    model.reply_text = "A short reply."
    for instance in (a, b):
        person = people()
        conversation_id = person.start(instance, "Hello")
        wait_until_written(person, instance, conversation_id)
        wrong = person.post_form(instance, "/resume", "/resume", code="0000-0000-0000-0000")
        assert wrong.status_code == 404

    on_a, on_b = scrape(a), scrape(b)
    assert on_a == on_b
    assert on_a[("model_calls_total", (("outcome", "done"),))] == 2
    assert on_a[("messages_appended_total", (("role", "user"),))] == 2
    assert on_a[("messages_appended_total", (("role", "assistant"),))] == 2
    assert on_a[("resume_failures_total", (("reason", "unknown"),))] == 2
