"""The app's one Redis client, built from REDIS_URL with retries and timeouts."""

import redis
from flask import Flask, current_app
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

# A request fails over to the 503 page within about 1.2 s when Redis is unreachable or
# hung: two attempts of at most 0.5 s each, with a short backoff between them. There is no
# periodic health-check PING: it would run its own retries inside each attempt.
SOCKET_TIMEOUT_SECONDS = 0.5
RETRIES = 1
BACKOFF_CAP_SECONDS = 0.2


WATCH_BLOCK_MS = 5000
"""How long one blocking read of a run's events waits for news (the keep-alive period)."""


def connect(url: str, socket_timeout: float = SOCKET_TIMEOUT_SECONDS) -> redis.Redis:
    """Build a client for ``url`` that retries briefly and never hangs."""
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=SOCKET_TIMEOUT_SECONDS,
        socket_timeout=socket_timeout,
        retry=Retry(ExponentialBackoff(cap=BACKOFF_CAP_SECONDS, base=0.05), RETRIES),
        retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
    )


def init_app(app: Flask) -> None:
    """Attach the clients for the app's REDIS_URL: one for requests, one for blocking reads."""
    app.extensions["redis"] = connect(app.config["REDIS_URL"])
    app.extensions["redis_blocking"] = connect(
        app.config["REDIS_URL"], socket_timeout=WATCH_BLOCK_MS / 1000 + SOCKET_TIMEOUT_SECONDS
    )


def get_redis() -> redis.Redis:
    """The current app's Redis client."""
    return current_app.extensions["redis"]


def get_blocking_redis() -> redis.Redis:
    """The client for reads that wait up to WATCH_BLOCK_MS (watching a run)."""
    return current_app.extensions["redis_blocking"]
