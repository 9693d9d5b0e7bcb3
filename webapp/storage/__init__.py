"""The app's one Redis client, built from REDIS_URL with retries and timeouts: a plain
client, or with REDIS_CLUSTER a Redis Cluster client that finds every master from the one
node REDIS_URL names."""

import redis
from flask import Flask, current_app
from redis.backoff import ExponentialBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

# A request fails over to the 503 page within about 1.2 s when Redis is unreachable or
# hung: two attempts of at most 0.5 s each, with a short backoff between them. There is no
# periodic health-check PING: it would run its own retries inside each attempt.
SOCKET_TIMEOUT_SECONDS = 0.5
RETRIES = 1
BACKOFF_CAP_SECONDS = 0.2


WATCH_BLOCK_MS = 5000
"""How long one blocking read of a run's events waits for news (the keep-alive period)."""


PAGE_CONNECTIONS = 100
"""Connections of the request client for pages and everything else but streams and
replies (redis-py's default pool size)."""


def connect(
    url: str,
    socket_timeout: float = SOCKET_TIMEOUT_SECONDS,
    *,
    cluster: bool = False,
    max_connections: int = PAGE_CONNECTIONS,
) -> redis.Redis | RedisCluster:
    """Build a client for ``url`` (with ``cluster``, for the cluster that node belongs to)
    that retries briefly and never hangs, with at most ``max_connections`` open (to each
    node): past them a command fails at once rather than wait."""
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
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        retry=retry,
        retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
        **timeouts,
    )


def init_app(app: Flask) -> None:
    """Attach the clients for the app's REDIS_URL: one for requests, one for blocking reads.
    Each thread uses one connection of a client at a time: the first serves pages, replies
    being written and the streams' leases, the second one read per stream."""
    url, cluster = app.config["REDIS_URL"], bool(app.config["REDIS_CLUSTER"])
    streams = int(app.config["STREAMS_PER_PROCESS"])
    app.extensions["redis"] = connect(
        url,
        cluster=cluster,
        max_connections=PAGE_CONNECTIONS + int(app.config["RUN_THREADS"]) + streams,
    )
    app.extensions["redis_blocking"] = connect(
        url,
        socket_timeout=WATCH_BLOCK_MS / 1000 + SOCKET_TIMEOUT_SECONDS,
        cluster=cluster,
        max_connections=streams,
    )


def get_redis() -> redis.Redis:
    """The current app's Redis client."""
    return current_app.extensions["redis"]


def get_blocking_redis() -> redis.Redis:
    """The client for reads that wait up to WATCH_BLOCK_MS (watching a run)."""
    return current_app.extensions["redis_blocking"]
