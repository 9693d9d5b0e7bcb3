"""S4 under attack: 10,000 wrong resume codes from 20 client addresses, many at once. None
gets in; each address has at most 10 failures a minute and 100 a day accepted, then the
429 page; every failure is counted; the right code still works from a fresh address.

The 10,000 go through Flask's test client (REMOTE_ADDR per request): the limiter keeps its
windows in Redis, the same server every instance uses, so nothing is lost against a real
server; it costs a fraction of the time; and in-process, the limiter's clock can be moved
on (``rate_limits.clock``) instead of sleeping through twenty minutes and a day. Only that
clock is moved: the windows are measured with it and nothing else, and the requests, the
Redis scripts, the 429 page and the counters are all the real ones. A burst at a real
``resume-chat serve`` (two worker processes, the address from X-Forwarded-For behind one
trusted proxy) proves that the limit holds between processes too.
"""

import random
import re
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from html import unescape

import httpx2
import pytest

from tests.app_server import serving
from tests.test_metrics import samples
from webapp import lifecycle, metrics, rate_limits, resume_codes

CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
METRICS_TOKEN = "scrape-the-attack"
ADDRESSES = [f"203.0.113.{n}" for n in range(1, 21)]  # TEST-NET-3: never a real client
PER_MINUTE, PER_DAY = 10, 100
MINUTE, DAY = 60, 86400
ACCEPTED = {400, 404}  # a malformed or unknown code: a failure the limiter let through
SLOW_DOWN = "Too many tries from here in a short time."
REQUEST_TIMEOUT_SECONDS = 30


def wrong_code(rng: random.Random) -> str:
    """A code nobody was given: mostly well-formed and unknown, one in ten malformed."""
    if rng.random() < 0.1:
        return resume_codes.formatted(resume_codes.generate())[:-1]
    return resume_codes.formatted(resume_codes.generate())


class Visitor:
    """One client address with its own browser session: reads the form's CSRF token once,
    then posts codes from any thread (its cookie is sent as a header, not kept in a jar)."""

    def __init__(self, app, address: str) -> None:
        self.app, self.address = app, address
        browser = app.test_client()
        browser.environ_base["REMOTE_ADDR"] = address
        self.csrf_token = CSRF_FIELD.search(browser.get("/resume").text)[1]
        self.cookie = f"session={browser.get_cookie('session').value}"

    def enter(self, code: str):
        """Type ``code`` at /resume; the response."""
        return self.app.test_client(use_cookies=False).post(
            "/resume",
            data={"csrf_token": self.csrf_token, "code": code},
            headers={"Cookie": self.cookie},
            environ_base={"REMOTE_ADDR": self.address},
        )


class LimiterClock:
    """The limiter's clock, moved on by the test instead of sleeping."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def is_the_slow_down_page(response) -> bool:
    return (
        response.status_code == 429
        and response.headers.get("Retry-After") == "60"
        and "<h1>Slow down</h1>" in response.text
        and SLOW_DOWN in unescape(response.text)
    )


def scrape(app) -> str:
    response = app.test_client().get(
        "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    )
    assert response.status_code == 200, response.text
    return response.text


def failures_in(metrics_text: str) -> Counter:
    """resume_failures_total by reason, from a scrape of /metrics."""
    return Counter(
        {
            dict(labels)["reason"]: int(value)
            for (name, labels), value in samples(metrics_text).items()
            if name == "resume_failures_total"
        }
    )


def failures_counted(app) -> Counter:
    return failures_in(scrape(app))


def issue_code(chat, conversation_id: str) -> str:
    page = chat.client.get(f"/c/{conversation_id}").text
    response = chat.client.post(
        f"/c/{conversation_id}/park",
        data={"csrf_token": CSRF_FIELD.search(page)[1]},
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 200, response.text
    return response.json["code"]


@pytest.fixture
def limiter_clock(monkeypatch):
    clock = LimiterClock(rate_limits.clock())
    monkeypatch.setattr(rate_limits, "clock", clock)
    return clock


def test_ten_thousand_wrong_codes_from_twenty_addresses(
    make_app, chat_factory, real_redis, limiter_clock
):
    app = make_app(METRICS_TOKEN=METRICS_TOKEN)
    owner = chat_factory(app)
    conversation_id = owner.start_conversation("The needle in the haystack")
    code = issue_code(owner, conversation_id)
    visitors = {address: Visitor(app, address) for address in ADDRESSES}
    rng = random.Random(20_000)
    # Each address: 12 entries in each of ten minutes (the day's 100 are used up), then 37
    # in each of ten more minutes (all refused for the day), then 10 on the next day.
    # 500 entries per address, 10,000 in all. Within a minute, every address's entries are
    # sent together by 8 threads, in a shuffled order.
    schedule = [(0, 12)] * 10 + [(0, 37)] * 10 + [(DAY, 10)]
    seen = Counter()  # (address, day, minute, status) -> responses

    def send(address: str, day: int, minute: int) -> tuple:
        response = visitors[address].enter(wrong_code(rng))
        if response.status_code == 429:
            assert is_the_slow_down_page(response), response.text[:500]
        else:
            assert response.status_code in ACCEPTED, (address, response.status_code)
        return address, day, minute, response.status_code

    minute = 0
    with ThreadPoolExecutor(max_workers=8) as pool:
        for pause, entries_per_address in schedule:
            limiter_clock.advance(pause)
            day = 1 if pause else 0
            batch = [address for address in ADDRESSES for _ in range(entries_per_address)]
            rng.shuffle(batch)
            futures = [pool.submit(send, address, day, minute) for address in batch]
            seen.update(future.result() for future in futures)
            limiter_clock.advance(MINUTE)
            minute += 1

    assert sum(seen.values()) == 10_000
    accepted_per_minute = Counter()
    accepted_per_day = Counter()
    refused_per_address = Counter()
    for (address, day, at_minute, status), count in seen.items():
        if status in ACCEPTED:
            accepted_per_minute[address, at_minute] += count
            accepted_per_day[address, day] += count
        else:
            refused_per_address[address] += count
    assert max(accepted_per_minute.values()) == PER_MINUTE
    # The day's 100 in the first ten minutes, then nothing until the next day's first 10.
    for address in ADDRESSES:
        minutes = [accepted_per_minute[address, m] for m in range(len(schedule))]
        assert minutes == [PER_MINUTE] * 10 + [0] * 10 + [PER_MINUTE], address
        assert (accepted_per_day[address, 0], accepted_per_day[address, 1]) == (PER_DAY, 10)
        assert refused_per_address[address] == 500 - PER_DAY - 10
    statuses = Counter()
    for (_, _, _, status), count in seen.items():
        statuses[status] += count
    assert statuses[429] == 20 * 390

    counted = failures_counted(app)
    assert counted == Counter(
        {"unknown": statuses[404], "malformed": statuses[400], "rate_limited": statuses[429]}
    )
    hourly = metrics.resume_failures_by_hour(real_redis)
    assert sum(hour.count for hour in hourly) == 10_000
    assert metrics.read_counters(real_redis).get("resume_codes_redeemed", 0) == 0
    assert lifecycle.read_session(real_redis, conversation_id).parked  # the code is intact

    fresh = Visitor(app, "198.51.100.1")
    landed = fresh.enter(code)
    assert landed.status_code == 302, landed.text[:500]
    assert landed.location == f"/c/{conversation_id}#latest"
    assert metrics.read_counters(real_redis)["resume_codes_redeemed"] == 1
    assert failures_counted(app) == counted  # a success is not a failure


def test_entries_arriving_together_get_no_more_than_ten_through(make_app, real_redis):
    app = make_app(METRICS_TOKEN=METRICS_TOKEN)
    visitor = Visitor(app, "203.0.113.99")
    together = 60
    ready = threading.Barrier(together)
    rng = random.Random(60)
    codes = [wrong_code(rng) for _ in range(together)]

    def enter(code: str) -> int:
        ready.wait(timeout=REQUEST_TIMEOUT_SECONDS)
        return visitor.enter(code).status_code

    with ThreadPoolExecutor(max_workers=together) as pool:
        statuses = Counter(pool.map(enter, codes))
    assert statuses[429] == together - PER_MINUTE, statuses
    assert statuses[400] + statuses[404] == PER_MINUTE, statuses
    assert failures_counted(app) == Counter(
        {
            "unknown": statuses[404],
            "malformed": statuses[400],
            "rate_limited": together - PER_MINUTE,
        }
    )


def test_a_burst_at_two_server_processes_gets_no_more_than_ten_through(
    redis_server, real_redis, tmp_path
):
    """60 wrong codes at once from one address (behind a trusted proxy) at two gunicorn
    workers with 8 threads each: exactly 10 are looked at, 50 get the 429 page."""
    together = 60
    attacker = "198.51.100.66"
    settings = {"FLASK_TRUSTED_PROXIES": "1", "FLASK_METRICS_TOKEN": METRICS_TOKEN}
    with serving(redis_server.url, tmp_path / "app", workers=2, threads=8, env=settings) as app:
        with httpx2.Client(base_url=app.url, timeout=REQUEST_TIMEOUT_SECONDS) as browser:
            csrf_token = CSRF_FIELD.search(browser.get("/resume").text)[1]
            cookie = f"session={browser.cookies['session']}"
        ready = threading.Barrier(together)
        rng = random.Random(66)
        codes = [wrong_code(rng) for _ in range(together)]

        def enter(code: str) -> httpx2.Response:
            with httpx2.Client(base_url=app.url, timeout=REQUEST_TIMEOUT_SECONDS) as client:
                ready.wait(timeout=REQUEST_TIMEOUT_SECONDS)
                return client.post(
                    "/resume",
                    data={"csrf_token": csrf_token, "code": code},
                    headers={"Cookie": cookie, "X-Forwarded-For": attacker},
                )

        with ThreadPoolExecutor(max_workers=together) as pool:
            responses = list(pool.map(enter, codes))
        statuses = Counter(response.status_code for response in responses)
        assert statuses[429] == together - PER_MINUTE, statuses
        assert statuses[400] + statuses[404] == PER_MINUTE, statuses
        assert all(is_the_slow_down_page(r) for r in responses if r.status_code == 429)

        with httpx2.Client(base_url=app.url, timeout=REQUEST_TIMEOUT_SECONDS) as scraper:
            text = scraper.get(
                "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
            ).text
        assert failures_in(text) == Counter(
            {"unknown": statuses[404], "malformed": statuses[400], "rate_limited": 50}
        )


def test_a_slot_is_given_back_only_to_the_window_it_was_taken_in(real_redis, limiter_clock):
    """A right code gives its slot back; if the window has begun again meanwhile, the slot
    went with the old window, and giving it back must not free one in the new."""
    client = "203.0.113.77"

    def reserve():
        return rate_limits.reserve_slot(
            real_redis, (rate_limits.per_minute(2),), "resume.redeem", client
        )

    first, second = reserve(), reserve()
    assert first and second and reserve() is None  # the window is full
    rate_limits.give_back_slot(real_redis, first)
    assert reserve() is not None  # given back within its window: free again

    limiter_clock.advance(MINUTE)
    assert reserve() and reserve() and reserve() is None  # a new window, full
    rate_limits.give_back_slot(real_redis, second)  # taken in the old window
    assert reserve() is None
