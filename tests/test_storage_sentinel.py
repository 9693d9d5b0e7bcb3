"""The app on a primary that Redis Sentinel watches: the clients REDIS_SENTINELS builds, and
a user's message acknowledged only once its replica has it too (the failover itself is
tests/chaos/test_sentinel_failover.py)."""

import time
from html import unescape

import fakeredis
import pytest
from redis.sentinel import SentinelConnectionPool

from tests.conftest import Chat
from tests.limits import OUT_OF_REACH
from tests.sentinel_server import MASTER_NAME, LocalSentinel
from webapp import conversations, create_app, storage
from webapp.conversations import Message
from webapp.storage import keys
from webapp.storage.client import Client
from webapp.storage.scripts import NotReplicated

SENTINELS = [("10.0.0.1", 26379), ("10.0.0.2", 26379), ("10.0.0.3", 26380)]


def test_connect_builds_a_client_of_the_primary_the_sentinels_name():
    client = storage.connect(
        "redis://:secret@ignored:6379/3",
        sentinels=SENTINELS,
        sentinel_master="orders",
        max_connections=7,
    )
    assert isinstance(client, Client)
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool) and pool.is_master
    assert pool.service_name == "orders"
    assert pool.max_connections == 7
    kwargs = pool.connection_kwargs
    # The password and database come from REDIS_URL; the address, from the sentinels.
    assert (kwargs["password"], kwargs["db"]) == ("secret", 3)
    assert "host" not in kwargs
    assert kwargs["decode_responses"] is True
    assert (
        kwargs["socket_connect_timeout"]
        == kwargs["socket_timeout"]
        == storage.SOCKET_TIMEOUT_SECONDS
    )
    assert kwargs["retry"].get_retries() == storage.RETRIES
    # Each sentinel is asked once, briefly: one that does not answer is passed over.
    asked = [
        sentinel.connection_pool.connection_kwargs for sentinel in pool.sentinel_manager.sentinels
    ]
    assert [(options["host"], options["port"]) for options in asked] == SENTINELS
    for options in asked:
        assert (
            options["socket_timeout"]
            == options["socket_connect_timeout"]
            == storage.SOCKET_TIMEOUT_SECONDS
        )
        assert options["retry"].get_retries() == 0


def test_without_redis_url_the_primary_is_database_0_without_a_password():
    client = storage.connect(None, sentinels=SENTINELS, sentinel_master="mymaster")
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs.get("password") is None
    assert kwargs.get("db", 0) == 0


def test_only_a_sentinel_watched_primary_waits_for_a_replica(real_redis):
    watched = storage.connect(None, sentinels=SENTINELS, sentinel_master="mymaster")
    assert storage.replicas_to_confirm(watched) == 1
    assert storage.replicas_to_confirm(real_redis) == 0
    assert storage.replicas_to_confirm(fakeredis.FakeRedis(decode_responses=True)) == 0


@pytest.fixture(scope="module")
def sentinel_group(tmp_path_factory):
    """A primary and its replica watched by three sentinels, for this module's tests."""
    group = LocalSentinel(tmp_path_factory.mktemp("sentinel")).start()
    yield group
    group.stop()


@pytest.fixture
def sentinel_app(sentinel_group, tmp_path):
    """The app on the sentinels' primary, through REDIS_SENTINELS."""
    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "test-secret",
            "REDIS_SENTINELS": sentinel_group.setting,
            "REDIS_SENTINEL_MASTER": MASTER_NAME,
            "OFFLINE_CHUNK_DELAY_SECONDS": 0,
            **OUT_OF_REACH,
        }
    )
    app.instance_path = str(tmp_path)
    yield app
    app.extensions["run_worker"].shutdown()
    app.extensions["redis"].flushdb()


def test_a_message_is_acknowledged_once_its_replica_has_it(sentinel_group, sentinel_app):
    r = sentinel_app.extensions["redis"]
    assert storage.replicas_to_confirm(r) == 1
    replica = sentinel_group.node_client(1 - sentinel_group.primary())
    chat = Chat(sentinel_app.test_client())
    conversation_id = chat.start_conversation("Kept twice")
    assert chat.send(conversation_id, "And again").status_code == 302
    # Read from the replica at once, without waiting: the send was answered after it had it.
    # (The reply may be there already too: it is written after the message, meanwhile.)
    stored = replica.lrange(keys.conversation_messages(conversation_id), 0, -1)
    assert [Message.from_json(raw).content for raw in stored][2] == "And again"


def test_a_primary_that_lost_its_scripts_still_waits_for_the_replica(
    sentinel_group, sentinel_app, lifetimes
):
    r = sentinel_app.extensions["redis"]
    replica = sentinel_group.node_client(1 - sentinel_group.primary())
    conversation_id = conversations.create_conversation(r, "guest:x", lifetimes)
    r.script_flush()  # as a replica just promoted has none
    message = Message(conversations.new_id(), "user", "After a failover", time.time())
    assert conversations.append_message_and_touch(r, conversation_id, "guest:x", message, lifetimes)
    assert replica.lrange(keys.conversation_messages(conversation_id), 0, -1) == [message.to_json()]


def test_a_message_no_replica_confirms_is_refused_with_the_503_page(
    sentinel_group, sentinel_app, lifetimes
):
    r = sentinel_app.extensions["redis"]
    replica_number = 1 - sentinel_group.primary()
    chat = Chat(sentinel_app.test_client())
    form = chat.form_fields("/")
    conversation_id = conversations.create_conversation(r, "guest:x", lifetimes)
    message = Message(conversations.new_id(), "user", "Nor me", time.time())
    with sentinel_group.paused(replica_number):
        began = time.monotonic()
        response = chat.client.post("/", data={**form, "text": "Nobody confirmed me"})
        took = time.monotonic() - began
        with pytest.raises(NotReplicated):
            conversations.append_message_and_touch(
                r, conversation_id, "guest:x", message, lifetimes
            )
    assert response.status_code == 503
    assert "We'll be right back" in unescape(response.text)
    assert took < 2  # R3: the friendly 503 within two seconds
    # The primary has the message refused; sent again, it is stored once, and confirmed.
    assert not conversations.append_message_and_touch(
        r, conversation_id, "guest:x", message, lifetimes
    )
    replica = sentinel_group.node_client(replica_number)
    assert replica.lrange(keys.conversation_messages(conversation_id), 0, -1) == [message.to_json()]
