"""The app on a primary that Redis Sentinel watches: the clients REDIS_SENTINELS builds."""

from redis.sentinel import SentinelConnectionPool

from webapp import storage

SENTINELS = [("10.0.0.1", 26379), ("10.0.0.2", 26379), ("10.0.0.3", 26380)]


def test_connect_builds_a_client_of_the_primary_the_sentinels_name():
    client = storage.connect(
        "redis://:secret@ignored:6379/3",
        sentinels=SENTINELS,
        sentinel_master="orders",
        max_connections=7,
    )
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
