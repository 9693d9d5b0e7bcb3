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


def connect(url: str) -> redis.Redis:
    """Build a client for ``url`` that retries briefly and never hangs."""
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=SOCKET_TIMEOUT_SECONDS,
        socket_timeout=SOCKET_TIMEOUT_SECONDS,
        retry=Retry(ExponentialBackoff(cap=BACKOFF_CAP_SECONDS, base=0.05), RETRIES),
        retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
    )


def init_app(app: Flask) -> None:
    """Attach the client for the app's REDIS_URL."""
    app.extensions["redis"] = connect(app.config["REDIS_URL"])


def get_redis() -> redis.Redis:
    """The current app's Redis client."""
    return current_app.extensions["redis"]
