"""The app's one Redis client, built from REDIS_URL with retries and timeouts: a plain
client; with REDIS_CLUSTER a Redis Cluster client that finds every master from the one
node REDIS_URL names; or with REDIS_SENTINELS a client of the primary those sentinels
name, which asks them again when it loses the primary (a failover)."""

from collections.abc import Sequence

import redis
from flask import Flask, current_app
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.cluster import RedisCluster
from redis.connection import parse_url
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from webapp.storage.client import Client
from webapp.storage.resp import CommandPacker

# A request fails over to the 503 page within about 1.2 s when Redis is unreachable or
# hung: two attempts of at most 0.5 s each, with a short backoff between them. There is no
# periodic health-check PING: it would run its own retries inside each attempt. With
# sentinels, a new connection first asks them where the primary is, each within the same
# timeout: a hung sentinel adds to that once, since the one that answers is asked first
# from then on.
SOCKET_TIMEOUT_SECONDS = 0.5
RETRIES = 1
BACKOFF_CAP_SECONDS = 0.2


WATCH_BLOCK_MS = 5000
"""How long one blocking read of a run's events waits for news (the keep-alive period)."""


PAGE_CONNECTIONS = 100
"""Connections of the request client for pages and everything else but streams and
replies (redis-py's default pool size)."""


REPLICA_WAIT_MS = 250
"""How long a write that must reach a replica waits for one to confirm it (see
replicas_to_confirm): within SOCKET_TIMEOUT_SECONDS, so that the answer is read in time."""


def connect(
    url: str | None,
    socket_timeout: float = SOCKET_TIMEOUT_SECONDS,
    *,
    cluster: bool = False,
    sentinels: Sequence[tuple[str, int]] = (),
    sentinel_master: str = "",
    max_connections: int = PAGE_CONNECTIONS,
) -> redis.Redis | RedisCluster:
    """Build a client for ``url`` (with ``cluster``, for the cluster that node belongs to;
    with ``sentinels``, for the primary they monitor as ``sentinel_master``, ``url`` giving
    only its password and database) that retries briefly and never hangs, with at most
    ``max_connections`` open (to each node): past them a command fails at once rather than
    wait."""
    retry = Retry(ExponentialBackoff(cap=BACKOFF_CAP_SECONDS, base=0.05), RETRIES)
    timeouts = {
        "socket_connect_timeout": SOCKET_TIMEOUT_SECONDS,
        "socket_timeout": socket_timeout,
        "max_connections": max_connections,
    }
    if cluster:
        # The cluster client retries at its own level (refreshing its map of the slots
        # between attempts), so its node connections are given no retries of their own.
        return RedisCluster.from_url(url, decode_responses=True, retry=retry, **timeouts)
    # The cluster client accepts no packer of its own: its nodes keep redis-py's, and its
    # pipelines are its own too.
    connections = {
        "retry": retry,
        "retry_on_error": [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
        "command_packer": CommandPacker(),
    }
    if sentinels:
        return _primary_of(
            sentinels, sentinel_master, url, decode_responses=True, **connections, **timeouts
        )
    return Client.from_url(url, decode_responses=True, **connections, **timeouts)


def _primary_of(
    sentinels: Sequence[tuple[str, int]], name: str, url: str | None, **options
) -> redis.Redis:
    """A client of the primary that ``sentinels`` monitor as ``name``, with ``options`` and
    the password and database of ``url``. Each new connection asks the sentinels where the
    primary is; a connection that fails (the primary gone) or finds a replica (demoted) is
    dropped and retried, so after a failover it reaches the new primary."""
    credentials = parse_url(url) if url else {}
    # The sentinels are asked one after the other until one names a primary it deems up:
    # one that does not answer within the timeout is passed over at once, not retried.
    manager = Sentinel(
        sentinels,
        sentinel_kwargs={
            "socket_connect_timeout": SOCKET_TIMEOUT_SECONDS,
            "socket_timeout": SOCKET_TIMEOUT_SECONDS,
            "retry": Retry(NoBackoff(), 0),
        },
    )
    return manager.master_for(
        name,
        redis_class=Client,
        **{key: credentials[key] for key in ("username", "password", "db") if key in credentials},
        **options,
    )


def replicas_to_confirm(client: redis.Redis | RedisCluster) -> int:
    """How many replicas must confirm a user's message before the app acknowledges it: one
    for a primary that Sentinel watches, so that a failover, which promotes that replica,
    keeps the message; none for a plain server or a cluster, to which no WAIT is sent."""
    return 1 if isinstance(getattr(client, "connection_pool", None), SentinelConnectionPool) else 0


def init_app(app: Flask) -> None:
    """Attach the clients for the app's Redis (REDIS_URL, or REDIS_SENTINELS): one for
    requests, one for blocking reads. Each thread uses one connection of a client at a time:
    the first serves pages, replies being written and the streams' leases, the second one
    read per stream."""
    config = app.config
    where = {
        "cluster": bool(config["REDIS_CLUSTER"]),
        "sentinels": config["REDIS_SENTINELS"] or (),
        "sentinel_master": config["REDIS_SENTINEL_MASTER"],
    }
    streams = int(config["STREAMS_PER_PROCESS"])
    app.extensions["redis"] = connect(
        config["REDIS_URL"],
        max_connections=PAGE_CONNECTIONS + int(config["RUN_THREADS"]) + streams,
        **where,
    )
    app.extensions["redis_blocking"] = connect(
        config["REDIS_URL"],
        socket_timeout=WATCH_BLOCK_MS / 1000 + SOCKET_TIMEOUT_SECONDS,
        max_connections=streams,
        **where,
    )


def get_redis() -> redis.Redis:
    """The current app's Redis client."""
    return current_app.extensions["redis"]


def get_blocking_redis() -> redis.Redis:
    """The client for reads that wait up to WATCH_BLOCK_MS (watching a run)."""
    return current_app.extensions["redis_blocking"]
