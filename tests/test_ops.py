"""Liveness, readiness, and what users see while Redis is unreachable."""

import socket
import threading
from html import unescape

import pytest

from webapp import create_app, storage
from webapp.storage.embedded import EmbeddedRedis


def test_healthz_answers_without_redis(client):
    assert client.get("/healthz").json == {"status": "ok"}


def test_readyz_answers_when_redis_answers(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json == {"status": "ok", "redis": "ok"}


@pytest.fixture
def own_redis(tmp_path):
    """A server of this test's own, which the test may stop and start again."""
    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def app_on(url):
    return create_app({"TESTING": True, "SECRET_KEY": "test", "REDIS_URL": url})


def test_redis_down_gives_friendly_503_then_recovers_by_itself(own_redis, chat_factory):
    chat = chat_factory(app_on(own_redis.url))
    conversation_id = chat.start_conversation("Remember me")
    own_redis.stop()

    for path in ("/", f"/c/{conversation_id}"):
        response = chat.client.get(path)
        assert response.status_code == 503
        assert "We'll be right back" in unescape(response.text)
        assert response.headers["Retry-After"] == "5"
    assert chat.client.get("/readyz").status_code == 503
    assert chat.client.get("/healthz").status_code == 200

    own_redis.start()  # same port, same data folder
    assert chat.client.get("/readyz").status_code == 200
    page = chat.client.get(f"/c/{conversation_id}")
    assert page.status_code == 200
    assert "Remember me" in page.text


@pytest.fixture
def silent_server():
    """A TCP port that accepts connections but never answers, like a hung Redis."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


def test_a_hung_redis_gives_503_instead_of_hanging(silent_server):
    client = app_on(silent_server).test_client()
    response = client.get("/")
    assert response.status_code == 503
    assert client.get("/readyz").status_code == 503


def test_client_settings_bound_an_outage_answer_under_two_seconds():
    """Worst case per request: every attempt times out, with the longest backoff between."""
    client = storage.connect("redis://127.0.0.1:1/0")
    kwargs = client.connection_pool.connection_kwargs
    assert (
        kwargs["socket_connect_timeout"]
        == kwargs["socket_timeout"]
        == storage.SOCKET_TIMEOUT_SECONDS
    )
    assert kwargs["retry"].get_retries() == storage.RETRIES
    assert not kwargs.get("health_check_interval")
    attempts = storage.RETRIES + 1
    worst = (
        attempts * storage.SOCKET_TIMEOUT_SECONDS + storage.RETRIES * storage.BACKOFF_CAP_SECONDS
    )
    assert worst < 2.0


def test_a_missing_page_is_not_called_a_missing_conversation(client):
    for path in ("/static/missing.css", "/no-such-page"):
        response = client.get(path)
        assert response.status_code == 404
        assert "I couldn't find that page" in unescape(response.text)
        assert "conversation" not in response.text
    assert "I couldn't find that conversation" in unescape(client.get("/c/no-such-id").text)
