"""/metrics: counters kept in Redis (shared by every process), rendered in the Prometheus
text format, and who may read them."""

import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fake_anthropic import Status, StreamError
from webapp import accounts, metrics
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
    metrics.count_resume_code_redeemed(real_redis)
    metrics.count_catch_up(real_redis, "model")
    metrics.count_catch_up(real_redis, "extractive")
    metrics.count_catch_up(real_redis, "extractive")
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
    real_redis.delete(keys.conversation_session(expired))
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


def test_counting_never_fails_what_it_counts():
    unreachable = connect("redis://127.0.0.1:1/0")
    metrics.count_model_call(unreachable, "done")  # logged and lost, not raised


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
